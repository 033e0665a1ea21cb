"""Streamed ``/v1/completions``: server-sent events, decoded in chunks of :data:`STREAM_CHUNK` tokens.

Each chunk is a new ``serving_default`` call on the prompt + text so far, with the seed moved on by
the tokens produced (wrapped into int32 by :func:`tfgpt.seeds.seed32`). Sampled streams are thus
reproducible for a seed but differ from the non-streamed completion, and so can greedy ones when
the prompt + completion outgrow ``block_size`` (each chunk crops the context on its own).

The events are ``data: {"text": ...}`` per decoded piece, then ``data: [DONE]``; a failure after the
200 status was sent ends the stream with ``data: {"error": ...}`` before ``[DONE]``.

Example:
    >>> stream_step({"prompts": ["ROMEO:"], "seed": 2**31 - 1}, " hi", produced=8, n=8)
    {'prompts': ['ROMEO: hi'], 'seed': -2147483641, 'max_new_tokens': 8}
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from tfgpt.seeds import seed32
from tfgpt.serve.errors import BadRequest
from tfgpt.serve.jsonio import jsonable

if TYPE_CHECKING:
    from tfgpt.serve.model import ExportedModel

#: New tokens per SavedModel call when streaming /v1/completions.
STREAM_CHUNK = 8

#: ``serving_default`` on a dict of JSON inputs, run off the event loop.
Predict = Callable[[dict[str, Any]], Awaitable[dict[str, np.ndarray]]]


def stream_step(inputs: dict[str, Any], text: str, produced: int, n: int) -> dict[str, Any]:
    """The inputs of the chunk after ``produced`` tokens (``text`` so far): ``n`` more, a seed of its own."""
    step = {**inputs, "prompts": [inputs["prompts"][0] + text], "max_new_tokens": n}
    if "seed" in inputs:
        step["seed"] = int(seed32(int(inputs["seed"]) + produced))
    return step


async def open_stream(model: ExportedModel, predict: Predict, inputs: dict[str, Any]) -> AsyncIterator[str]:
    """The event stream for one prompt in ``inputs``; checks them and runs the first chunk before returning,
    so that a bad request (or a prompt the in-graph tokenizer rejects) still gets a 400, not a 200."""
    total = int(model.feeds("serving_default", inputs)["max_new_tokens"])
    first = await predict(stream_step(inputs, "", 0, min(STREAM_CHUNK, total)))
    return sse_events(predict, inputs, total, first)


async def sse_events(predict: Predict, inputs: dict[str, Any], total: int,
                     out: dict[str, np.ndarray]) -> AsyncIterator[str]:
    """The events of a stream of ``total`` tokens whose first chunk gave ``out``; each later chunk is a
    ``predict`` call. Ends early when a chunk stops short (the model ended the text)."""
    text, produced = "", 0
    try:
        while True:
            n = min(STREAM_CHUNK, total - produced)
            piece = jsonable(out["completions"])[0]
            got = int(out["num_tokens"][0])
            if piece:
                yield f"data: {json.dumps({'text': piece})}\n\n"
            text += piece
            produced += n
            if got < n or produced >= total:
                break
            out = await predict(stream_step(inputs, text, produced, min(STREAM_CHUNK, total - produced)))
    except Exception as e:  # noqa: BLE001 - the status is sent: report in the stream, then end it cleanly
        message = str(e) if isinstance(e, BadRequest) else f"internal error: {type(e).__name__}: {e}"
        yield f"data: {json.dumps({'error': message})}\n\n"
    yield "data: [DONE]\n\n"
