"""Streamed completions: text decoded in chunks of :data:`STREAM_CHUNK` tokens, sent as server-sent events.

Each chunk is a new ``serving_default`` call on the prompt + text so far, with the seed moved on by
the tokens produced (wrapped into int32 by :func:`tfgpt.seeds.seed32`). Sampled streams are thus
reproducible for a seed but differ from the non-streamed completion; greedy ones agree with it
while the prompt + completion fit in ``block_size`` (past it each chunk crops the context on its
own). Stop strings are applied as the text grows (:class:`~tfgpt.stops.StopScanner`): no
text past one is sent.

:func:`open_stream` gives :class:`Delta` s (new text; the last one has the ``finish_reason``);
:func:`sse_events` writes them as ``data: {chunk}`` events in OpenAI's shapes
(:class:`~tfgpt.serve.replies.Chunks`), then ``data: [DONE]``. A failure after the 200 status was
sent ends the stream with ``data: {"error": {"message", ...}}`` before ``[DONE]`` (the ``openai``
client raises it as an ``APIError``).

Example:
    >>> stream_step({"prompts": ["ROMEO:"], "seed": 2**31 - 1}, " hi", produced=8, n=8)
    {'prompts': ['ROMEO: hi'], 'seed': -2147483641, 'max_new_tokens': 8}
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from tfgpt.seeds import seed32
from tfgpt.serve.errors import BadRequest
from tfgpt.serve.jsonio import jsonable
from tfgpt.serve.replies import Chunks, error_body
from tfgpt.stops import StopScanner

if TYPE_CHECKING:
    from tfgpt.serve.model import ExportedModel

#: New tokens per SavedModel call when streaming.
STREAM_CHUNK = 8

#: ``serving_default`` on a dict of JSON inputs, run off the event loop.
Predict = Callable[[dict[str, Any]], Awaitable[dict[str, np.ndarray]]]


class Delta(NamedTuple):
    """A piece of a streamed completion; the last one has a ``finish_reason`` (``length``, ``stop``,
    ``content_filter``) and, with ``--moderation``, the moderation results."""

    text: str
    finish_reason: str | None = None
    moderation: dict[str, Any] | None = None


def stream_step(inputs: dict[str, Any], text: str, produced: int, n: int) -> dict[str, Any]:
    """The inputs of the chunk after ``produced`` tokens (``text`` so far): ``n`` more, a seed of its own."""
    step = {**inputs, "prompts": [inputs["prompts"][0] + text], "max_new_tokens": n}
    if "seed" in inputs:
        step["seed"] = int(seed32(int(inputs["seed"]) + produced))
    return step


async def open_stream(model: ExportedModel, predict: Predict, inputs: dict[str, Any],
                      stops: Sequence[str] = ()) -> AsyncIterator[Delta]:
    """The deltas of one prompt's completion; checks ``inputs`` and runs the first chunk before returning,
    so that a bad request (or a prompt the in-graph tokenizer rejects) still gets a 400, not a 200."""
    total = int(model.feeds("serving_default", inputs)["max_new_tokens"])
    first = await predict(stream_step(inputs, "", 0, min(STREAM_CHUNK, total)))
    return deltas(predict, inputs, total, first, stops)


async def deltas(predict: Predict, inputs: dict[str, Any], total: int, out: dict[str, np.ndarray],
                 stops: Sequence[str] = ()) -> AsyncIterator[Delta]:
    """The deltas of a completion of ``total`` tokens whose first chunk gave ``out``; each later chunk
    is a ``predict`` call. Ends early at a stop string (``stop``) or when a chunk stops short: the
    model wrote end-of-text (``stop``); else after ``total`` tokens (``length``)."""
    scan, text, produced = StopScanner(stops), "", 0
    while True:
        n = min(STREAM_CHUNK, total - produced)
        piece = jsonable(out["completions"])[0]
        ended = int(out["num_tokens"][0]) < n
        text, produced = text + piece, produced + n
        send = scan.feed(piece)
        if not scan.stopped and (ended or produced >= total):
            send += scan.flush()
        if send:
            yield Delta(send)
        if scan.stopped or ended or produced >= total:
            yield Delta("", "stop" if scan.stopped or ended else "length")
            return
        out = await predict(stream_step(inputs, text, produced, min(STREAM_CHUNK, total - produced)))


def event(data: Any) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def sse_events(stream: AsyncIterator[Delta], chunks: Chunks,
                     usage: Callable[[str], dict[str, int]] | None = None) -> AsyncIterator[str]:
    """``stream`` as OpenAI stream events, then (with ``usage``: the counts of the whole text) the usage
    chunk, then ``data: [DONE]``."""
    text = ""
    try:
        for head in chunks.head():
            yield event(head)
        async for d in stream:
            text += d.text
            yield event(chunks.chunk(d.text, d.finish_reason, d.moderation))
        if usage is not None:
            yield event(chunks.usage(usage(text)))
    except Exception as e:  # noqa: BLE001 - the status is sent: report in the stream, then end it cleanly
        if isinstance(e, BadRequest):
            yield event(error_body(str(e), e.status, getattr(e, "param", None), getattr(e, "code", None)))
        else:
            yield event(error_body(f"internal error: {type(e).__name__}: {e}", 500))
    finally:
        await stream.aclose()
    yield "data: [DONE]\n\n"
