"""tfgpt.serve.streaming: chunked completions as deltas and OpenAI SSE chunks, against a scripted predict."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from tfgpt.serve.errors import BadRequest
from tfgpt.serve.replies import Chunks, Meta, usage
from tfgpt.serve.streaming import STREAM_CHUNK, Delta, deltas, open_stream, sse_events, stream_step


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


def collect(events: Any) -> list[Any]:
    async def run() -> list[Any]:
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


def test_deltas_chunk_by_chunk_until_total():
    predict = ScriptedPredict([out(" wo", 8), out("rld", 4)])
    inputs = {"prompts": ["ROMEO:"], "seed": 1}
    assert collect(deltas(predict, inputs, 20, out("he", 8))) == [
        Delta("he"), Delta(" wo"), Delta("rld"), Delta("", "length")]
    assert predict.calls == [{"prompts": ["ROMEO:he"], "seed": 9, "max_new_tokens": 8},
                             {"prompts": ["ROMEO:he wo"], "seed": 17, "max_new_tokens": 4}]


def test_a_short_chunk_is_end_of_text_and_empty_pieces_send_nothing():
    predict = ScriptedPredict([out("", 3)])
    assert collect(deltas(predict, {"prompts": ["a"]}, 30, out("xy", 8))) == [Delta("xy"), Delta("", "stop")]
    assert len(predict.calls) == 1


def test_a_stop_string_across_chunks_ends_the_stream_before_it():
    """ "\nYo" is held back until the next chunk shows it is the stop string: nothing past it is sent."""
    predict = ScriptedPredict([out("u: more", 8), out("never", 8)])
    got = collect(deltas(predict, {"prompts": ["a"]}, 24, out("Hi.\nYo", 8), stops=["\nYou:"]))
    assert got == [Delta("Hi."), Delta("", "stop")] and len(predict.calls) == 1
    held = ScriptedPredict([out("ur turn", 8)])  # "\nYo" was not the stop string after all: sent with the next piece
    got = collect(deltas(held, {"prompts": ["a"]}, 16, out("Hi.\nYo", 8), stops=["\nYou:"]))
    assert got == [Delta("Hi."), Delta("\nYour turn"), Delta("", "length")]


def test_held_back_text_is_sent_when_the_text_ends():
    got = collect(deltas(ScriptedPredict([]), {"prompts": ["a"]}, 8, out("Hi.\nYo", 5), stops=["\nYou:"]))
    assert got == [Delta("Hi.\nYo"), Delta("", "stop")]


async def _replay(items: list) -> Any:
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


def test_sse_events_are_openai_chunks_then_usage_then_done():
    chunks = Chunks(Meta("cmpl-1", 5, "tiny"), chat=False, include_usage=True)
    events = collect(sse_events(_replay([Delta("ab"), Delta("", "length")]), chunks, lambda text: usage(1, len(text))))
    assert events[-1] == "data: [DONE]\n\n"
    bodies = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    head = {"id": "cmpl-1", "object": "text_completion", "created": 5, "model": "tiny"}
    assert bodies == [
        {**head, "choices": [{"index": 0, "text": "ab", "logprobs": None, "finish_reason": None}], "usage": None},
        {**head, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}], "usage": None},
        {**head, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}]


def test_a_chat_stream_names_the_role_first():
    chunks = Chunks(Meta("chatcmpl-1", 5, "tiny"), chat=True, include_usage=False)
    events = collect(sse_events(_replay([Delta("Hi"), Delta("", "stop")]), chunks))
    choices = [json.loads(e.removeprefix("data: "))["choices"][0] for e in events[:-1]]
    assert [(c["delta"], c["finish_reason"]) for c in choices] == [
        ({"role": "assistant", "content": ""}, None), ({"content": "Hi"}, None), ({}, "stop")]
    assert all(json.loads(e.removeprefix("data: "))["object"] == "chat.completion.chunk" for e in events[:-1])


@pytest.mark.parametrize(("error", "body"), [
    (BadRequest("a prompt holds characters that are not in the vocabulary"),
     {"message": "a prompt holds characters that are not in the vocabulary", "type": "invalid_request_error",
      "param": None, "code": None}),
    (RuntimeError("boom"), {"message": "internal error: RuntimeError: boom", "type": "server_error", "param": None,
                            "code": None}),
])
def test_a_late_failure_is_an_openai_error_event_then_done(error, body):
    chunks = Chunks(Meta("cmpl-1", 5, "tiny"), chat=False, include_usage=False)
    events = collect(sse_events(_replay([Delta("ab"), error]), chunks))
    assert json.loads(events[0].removeprefix("data: "))["choices"][0]["text"] == "ab"
    assert events[1:] == [f"data: {json.dumps({'error': body})}\n\n", "data: [DONE]\n\n"]


class FeedsModel:
    """Stands in for ExportedModel: ``feeds`` checks nothing and fills in ``max_new_tokens``."""

    def __init__(self, max_new_tokens: int) -> None:
        self.max_new_tokens = max_new_tokens

    def feeds(self, signature: str, inputs: dict[str, Any]) -> dict[str, Any]:
        assert signature == "serving_default"
        if "bad" in inputs:
            raise BadRequest("input 'seed' is out of the int32 range")
        return {"max_new_tokens": np.int32(inputs.get("max_new_tokens", self.max_new_tokens))}


def test_open_stream_runs_the_first_chunk_before_the_deltas_start():
    predict = ScriptedPredict([out("abc", 8), out("d", 1)])
    stream = asyncio.run(open_stream(FeedsModel(31), predict, {"prompts": ["a"]}))
    assert predict.calls == [{"prompts": ["a"], "max_new_tokens": 8}]  # before any delta is read
    assert collect(stream) == [Delta("abc"), Delta("d"), Delta("", "stop")]
    assert predict.calls[1] == {"prompts": ["aabc"], "max_new_tokens": 8}


def test_open_stream_raises_bad_requests_before_any_delta():
    predict = ScriptedPredict([BadRequest("a prompt encodes to no tokens: give at least one character")])
    with pytest.raises(BadRequest, match="encodes to no tokens"):
        asyncio.run(open_stream(FeedsModel(8), predict, {"prompts": [""]}))
    with pytest.raises(BadRequest, match="out of the int32 range"):
        asyncio.run(open_stream(FeedsModel(8), ScriptedPredict([]), {"prompts": ["a"], "bad": 1}))


def test_zero_tokens_is_just_the_finish():
    predict = ScriptedPredict([out("", 0)])
    stream = asyncio.run(open_stream(FeedsModel(0), predict, {"prompts": ["a"], "max_new_tokens": 0}))
    assert collect(stream) == [Delta("", "length")] and predict.calls == [{"prompts": ["a"], "max_new_tokens": 0}]
