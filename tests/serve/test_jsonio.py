"""tfgpt.serve.jsonio: request bodies within size and nesting limits; model outputs as JSON values."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from tfgpt.serve.errors import BadRequest
from tfgpt.serve.jsonio import MAX_JSON_DEPTH, json_depth, jsonable, nested_map, read_json


class FakeRequest:
    """What read_json uses of a Starlette request: ``headers`` and an async byte ``stream()``."""

    def __init__(self, chunks: list[bytes], content_length: str | None = None) -> None:
        self.chunks = chunks
        self.headers = {} if content_length is None else {"content-length": content_length}
        self.read = 0

    async def stream(self) -> AsyncIterator[bytes]:
        for c in self.chunks:
            self.read += 1
            yield c


def read(request: FakeRequest, limit: int = 64) -> object:
    return asyncio.run(read_json(request, limit))


def test_reads_a_body_sent_in_chunks():
    assert read(FakeRequest([b'{"prompt": ', b'"ROMEO:"}'])) == {"prompt": "ROMEO:"}


def test_a_declared_length_over_the_limit_is_413_before_reading():
    request = FakeRequest([b"{}"], content_length="65")
    with pytest.raises(BadRequest) as e:
        read(request)
    assert (e.value.status, str(e.value), request.read) == (413, "request body is larger than 64 bytes", 0)


def test_a_body_that_outgrows_its_declared_length_is_413_while_streaming():
    request = FakeRequest([b"[" + b"1," * 20, b"1," * 20, b"1]", b"never read"], content_length="3")
    with pytest.raises(BadRequest) as e:
        read(request)
    assert (e.value.status, request.read) == (413, 2)


@pytest.mark.parametrize(("raw", "message"), [
    (b"{not json", "malformed JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    (b"\xff", "malformed JSON: "),
    (b"[" * 4000, f"JSON nested more than {MAX_JSON_DEPTH} levels deep"),  # json.loads: RecursionError
    (b"[" * 33 + b"1" + b"]" * 33, f"JSON nested more than {MAX_JSON_DEPTH} levels deep"),
])
def test_bad_json_is_400(raw, message):
    with pytest.raises(BadRequest) as e:
        read(FakeRequest([raw]), limit=10_000)
    assert e.value.status == 400 and str(e.value).startswith(message)


def test_nesting_at_the_limit_is_accepted():
    body = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert json_depth(read(FakeRequest([body]), limit=100)) == MAX_JSON_DEPTH - 1  # the innermost list is empty
    assert json_depth(read(FakeRequest([b"[" * 32 + b"1" + b"]" * 32]), limit=100)) == MAX_JSON_DEPTH


def test_json_depth_counts_lists_and_objects():
    assert [json_depth(v) for v in (1, "s", [], {}, [1], {"a": {"b": [1]}}, [[1], [[2]]])] == [0, 0, 0, 0, 1, 3, 3]


def test_jsonable_decodes_bytes_and_unwraps_numpy():
    assert jsonable(np.array([[b"a", b"\xc3\xa9"]], dtype=object)) == [["a", "é"]]
    assert jsonable(np.array([b"\xff"], dtype=object)) == ["\ufffd"]  # invalid UTF-8 is replaced, not an error
    value = jsonable(np.int32(7))
    assert value == 7 and type(value) is int
    assert jsonable([1.5, b"x"]) == [1.5, "x"]


def test_nested_map_keeps_the_shape():
    assert nested_map([[1], [2, 3], []], str) == [["1"], ["2", "3"], []]
    assert nested_map(4, lambda x: x + 1) == 5
