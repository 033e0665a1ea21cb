"""tfgpt.serve.streaming: chunked SSE completions, run against a scripted predict (no model needed)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from tfgpt.serve.errors import BadRequest
from tfgpt.serve.streaming import STREAM_CHUNK, open_stream, sse_events, stream_step


def out(text: str, num_tokens: int) -> dict[str, np.ndarray]:
    return {"completions": np.array([text.encode()], dtype=object), "num_tokens": np.array([num_tokens], np.int32)}


class ScriptedPredict:
    """An async ``predict`` that records its inputs and answers from a list (or raises what it holds)."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies, self.calls = list(replies), []

    async def __call__(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        self.calls.append(inputs)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def collect(events: Any) -> list[str]:
    async def run() -> list[str]:
        return [e async for e in events]

    return asyncio.run(run())


def test_chunk_size_is_eight():
    assert STREAM_CHUNK == 8


def test_stream_step_continues_the_prompt_and_moves_the_seed_on():
    inputs = {"prompts": ["ROMEO:"], "temperature": 0.5, "seed": 5}
    assert stream_step(inputs, " hi", produced=16, n=4) == {
        "prompts": ["ROMEO: hi"], "temperature": 0.5, "seed": 21, "max_new_tokens": 4}
    assert inputs == {"prompts": ["ROMEO:"], "temperature": 0.5, "seed": 5}  # not modified
    assert stream_step({"prompts": ["a"]}, "", 0, 8) == {"prompts": ["a"], "max_new_tokens": 8}  # no seed given


@pytest.mark.parametrize(("seed", "produced", "expected"), [
    (0, 0, 0), (5, 8, 13), (2**31 - 1, 0, 2**31 - 1), (2**31 - 1, 1, -(2**31)), (2**31 - 1, 8, -2147483641),
    (-(2**31), 0, -(2**31)), (-1, 8, 7), (-(2**31), 2**32 + 8, -(2**31) + 8),
])
def test_the_chunk_seed_wraps_into_int32(seed, produced, expected):
    step = stream_step({"prompts": ["a"], "seed": seed}, "", produced, 8)
    assert step["seed"] == expected and type(step["seed"]) is int  # a JSON int, as the signature check wants
    assert expected == (seed + produced + 2**31) % 2**32 - 2**31  # the server's former hand-written wrap


def test_events_chunk_by_chunk_until_total():
    predict = ScriptedPredict([out(" wo", 8), out("rld", 4)])
    inputs = {"prompts": ["ROMEO:"], "seed": 1}
    events = collect(sse_events(predict, inputs, 20, out("he", 8)))
    assert events == ['data: {"text": "he"}\n\n', 'data: {"text": " wo"}\n\n', 'data: {"text": "rld"}\n\n',
                      "data: [DONE]\n\n"]
    assert predict.calls == [{"prompts": ["ROMEO:he"], "seed": 9, "max_new_tokens": 8},
                             {"prompts": ["ROMEO:he wo"], "seed": 17, "max_new_tokens": 4}]


def test_a_short_chunk_ends_the_stream_and_empty_pieces_send_no_event():
    predict = ScriptedPredict([out("", 3)])
    events = collect(sse_events(predict, {"prompts": ["a"]}, 30, out("xy", 8)))
    assert events == ['data: {"text": "xy"}\n\n', "data: [DONE]\n\n"]
    assert len(predict.calls) == 1


@pytest.mark.parametrize(("error", "message"), [
    (BadRequest("a prompt holds characters that are not in the vocabulary"),
     "a prompt holds characters that are not in the vocabulary"),
    (RuntimeError("boom"), "internal error: RuntimeError: boom"),
])
def test_a_late_failure_is_an_error_event_then_done(error, message):
    events = collect(sse_events(ScriptedPredict([error]), {"prompts": ["a"]}, 16, out("ab", 8)))
    assert events == ['data: {"text": "ab"}\n\n', f"data: {json.dumps({'error': message})}\n\n", "data: [DONE]\n\n"]


class FeedsModel:
    """Stands in for ExportedModel: ``feeds`` checks nothing and fills in ``max_new_tokens``."""

    def __init__(self, max_new_tokens: int) -> None:
        self.max_new_tokens = max_new_tokens

    def feeds(self, signature: str, inputs: dict[str, Any]) -> dict[str, Any]:
        assert signature == "serving_default"
        if "bad" in inputs:
            raise BadRequest("input 'seed' is out of the int32 range")
        return {"max_new_tokens": np.int32(inputs.get("max_new_tokens", self.max_new_tokens))}


def test_open_stream_runs_the_first_chunk_before_the_events_start():
    predict = ScriptedPredict([out("abc", 8), out("d", 1)])
    events = asyncio.run(open_stream(FeedsModel(31), predict, {"prompts": ["a"]}))
    assert predict.calls == [{"prompts": ["a"], "max_new_tokens": 8}]  # before any event is read
    assert collect(events) == ['data: {"text": "abc"}\n\n', 'data: {"text": "d"}\n\n', "data: [DONE]\n\n"]
    assert predict.calls[1] == {"prompts": ["aabc"], "max_new_tokens": 8}


def test_open_stream_raises_bad_requests_before_any_event():
    predict = ScriptedPredict([BadRequest("a prompt encodes to no tokens: give at least one character")])
    with pytest.raises(BadRequest, match="encodes to no tokens"):
        asyncio.run(open_stream(FeedsModel(8), predict, {"prompts": [""]}))
    with pytest.raises(BadRequest, match="out of the int32 range"):
        asyncio.run(open_stream(FeedsModel(8), ScriptedPredict([]), {"prompts": ["a"], "bad": 1}))


def test_zero_tokens_is_just_done():
    predict = ScriptedPredict([out("", 0)])
    events = collect(asyncio.run(open_stream(FeedsModel(0), predict, {"prompts": ["a"], "max_new_tokens": 0})))
    assert events == ["data: [DONE]\n\n"] and predict.calls == [{"prompts": ["a"], "max_new_tokens": 0}]

