"""JSON in and out of the server: read a body within its size and nesting limits; model outputs as JSON.

Example:
    >>> json_depth({"instances": [[1, 2]]})
    3
    >>> jsonable(np.array([b"ROMEO:", b"hi"], dtype=object))
    ['ROMEO:', 'hi']
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from tfgpt.serve.errors import BadRequest

#: Deepest JSON nesting a request may have (TF Serving bodies need 4: object, list, object, 2-D list).
MAX_JSON_DEPTH = 32
#: Seconds a client has to send a request's body once its headers are in (1 MiB in 10 s: 100 KiB/s).
BODY_TIMEOUT_S = 10.0
#: Most prompts (rows of a batch) one request may hold: one request cannot occupy the model for minutes.
MAX_BATCH = 512


async def read_json(request: Any, max_body_bytes: int) -> Any:
    """The parsed JSON body of a Starlette ``request``: 413 past ``max_body_bytes``, 400 if malformed or too deep.

    The size is checked on the declared ``content-length`` first, then while the body streams in, so a
    client that lies about it still cannot make the server buffer more than the limit; a body that takes
    over :data:`BODY_TIMEOUT_S` to arrive (a slow-loris client) is a 408.
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body_bytes:
        raise BadRequest(f"request body is larger than {max_body_bytes} bytes", status=413)
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            raw = await _read_body(request, max_body_bytes)
    except TimeoutError:
        raise BadRequest(f"request body not received within {BODY_TIMEOUT_S:g} s", status=408) from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON: {e}") from None
    except RecursionError:
        raise BadRequest(f"JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    if json_depth(body) > MAX_JSON_DEPTH:
        raise BadRequest(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return body


async def _read_body(request: Any, max_body_bytes: int) -> bytes:
    """The body as it streams in; 413 as soon as it passes ``max_body_bytes``."""
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > max_body_bytes:
            raise BadRequest(f"request body is larger than {max_body_bytes} bytes", status=413)
    return b"".join(chunks)


def json_depth(value: Any) -> int:
    """How deeply lists/objects nest in a parsed JSON value (iterative: no recursion limit).

    Example:
        >>> json_depth(5), json_depth([]), json_depth({"a": [[1]]})
        (0, 0, 3)
    """
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
        elif isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
    return deepest


def nested_map(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` on every leaf of nested lists, keeping their shape.

    Example:
        >>> nested_map([[1, 2], [3]], lambda x: x * 10)
        [[10, 20], [30]]
    """
    return [nested_map(v, fn) for v in value] if isinstance(value, list) else fn(value)


def jsonable(value: Any) -> Any:
    """A model output (numpy array or scalar) as JSON-ready Python values; bytes decode as UTF-8.

    Example:
        >>> jsonable(np.array([[1, -1]], np.int32)), jsonable(np.float32(0.5)), jsonable([b"a", b"b"])
        ([[1, -1]], 0.5, ['a', 'b'])
    """
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    return nested_map(value, lambda x: x.decode("utf-8", errors="replace") if isinstance(x, bytes) else x)
