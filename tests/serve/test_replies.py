"""tfgpt.serve.replies: OpenAI's reply, chunk, error and model-list shapes."""

from __future__ import annotations

import re
import time

from tfgpt.serve.replies import (
    Choice,
    Chunks,
    Meta,
    chat_reply,
    completion_reply,
    error_body,
    is_openai_route,
    model_list,
    new_meta,
    usage,
)

META = Meta("cmpl-abc", 1700000000, "tiny")


def test_new_meta_ids_and_time():
    before = int(time.time())
    meta = new_meta("chatcmpl", "tiny")
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{24}", meta.id) and before <= meta.created <= int(time.time())
    assert new_meta("cmpl", "tiny").id != new_meta("cmpl", "tiny").id


def test_completion_and_chat_replies():
    choices = [Choice(" hi", "length"), Choice("", "content_filter", {"prompt": {"flagged": False}})]
    head = {"id": "cmpl-abc", "created": 1700000000, "model": "tiny"}
    use = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert usage(3, 2) == use
    assert completion_reply(META, choices, use) == {**head, "object": "text_completion", "usage": use, "choices": [
        {"index": 0, "text": " hi", "logprobs": None, "finish_reason": "length"},
        {"index": 1, "text": "", "logprobs": None, "finish_reason": "content_filter",
         "moderation": {"prompt": {"flagged": False}}}]}
    assert chat_reply(META, choices[:1], use) == {**head, "object": "chat.completion", "usage": use, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": " hi"}, "logprobs": None, "finish_reason": "length"}]}


def test_completion_chunks_and_the_usage_chunk():
    chunks = Chunks(META, chat=False, include_usage=True)
    assert chunks.head() == []
    assert chunks.chunk("ab", None) == {"id": "cmpl-abc", "object": "text_completion", "created": 1700000000,
                                        "model": "tiny", "usage": None,
                                        "choices": [{"index": 0, "text": "ab", "logprobs": None,
                                                     "finish_reason": None}]}
    last = chunks.usage(usage(1, 2))
    assert last["choices"] == [] and last["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert "usage" not in Chunks(META, chat=False, include_usage=False).chunk("ab", None)


def test_chat_chunks_carry_deltas():
    chunks = Chunks(META, chat=True, include_usage=False)
    assert [c["object"] for c in chunks.head()] == ["chat.completion.chunk"]
    assert chunks.chunk("", "stop", {"completion": {"flagged": True}})["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop",
         "moderation": {"completion": {"flagged": True}}}]


def test_error_bodies_and_routes():
    assert error_body("no", 404, "model", "model_not_found") == {
        "error": {"message": "no", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
    assert error_body("boom", 500)["error"]["type"] == "server_error"
    assert error_body("x", 403)["error"]["type"] == "permission_error"
    assert error_body("x", 400, moderation=[1])["error"]["moderation"] == [1]
    assert [is_openai_route(p) for p in ("/v1/completions", "/v1/chat/completions/", "/v1/models", "/v1/models/tiny",
                                         "/healthz")] == [True, True, True, False, False]
    assert model_list("tiny", 5) == {"object": "list", "data": [{"id": "tiny", "object": "model", "created": 5,
                                                                 "owned_by": "tfgpt"}]}
