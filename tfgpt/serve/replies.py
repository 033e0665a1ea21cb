"""OpenAI's reply shapes: completions, chat completions, their stream chunks, usage, errors, the model list.

Example:
    >>> meta = Meta("cmpl-1", 1700000000, "tiny")
    >>> completion_reply(meta, [Choice(" hi", "length")], usage(3, 2))["choices"]
    [{'index': 0, 'text': ' hi', 'logprobs': None, 'finish_reason': 'length'}]
    >>> error_body("'n' must be 1", 400, param="n")
    {'error': {'message': "'n' must be 1", 'type': 'invalid_request_error', 'param': 'n', 'code': None}}
"""

from __future__ import annotations

import time
import uuid
from typing import Any, NamedTuple


class Meta(NamedTuple):
    """What every reply and chunk of one request carries: its ``id``, ``created`` (Unix seconds) and ``model``."""

    id: str
    created: int
    model: str


class Choice(NamedTuple):
    """One finished choice: its text, why it ended (``length``, ``stop``, ``content_filter``) and, with
    ``--moderation``, the moderation results (``{"prompt": ..., "completion": ...}``)."""

    text: str
    finish_reason: str
    moderation: dict[str, Any] | None = None


def new_meta(prefix: str, model: str) -> Meta:
    """A fresh :class:`Meta`: ``prefix-<24 hex digits>`` (``cmpl``, ``chatcmpl``), now, ``model``."""
    return Meta(f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time()), model)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _with_moderation(body: dict[str, Any], moderation: dict[str, Any] | None) -> dict[str, Any]:
    return body if moderation is None else {**body, "moderation": moderation}


def completion_reply(meta: Meta, choices: list[Choice], use: dict[str, int]) -> dict[str, Any]:
    """The ``text_completion`` reply of ``/v1/completions``."""
    return {"id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
            "choices": [_with_moderation({"index": i, "text": c.text, "logprobs": None,
                                          "finish_reason": c.finish_reason}, c.moderation)
                        for i, c in enumerate(choices)],
            "usage": use}


def chat_reply(meta: Meta, choices: list[Choice], use: dict[str, int]) -> dict[str, Any]:
    """The ``chat.completion`` reply of ``/v1/chat/completions``.

    Example:
        >>> chat_reply(Meta("chatcmpl-1", 0, "tiny"), [Choice("Hi.", "stop")], usage(4, 3))["choices"][0]["message"]
        {'role': 'assistant', 'content': 'Hi.'}
    """
    return {"id": meta.id, "object": "chat.completion", "created": meta.created, "model": meta.model,
            "choices": [_with_moderation({"index": i, "message": {"role": "assistant", "content": c.text},
                                          "logprobs": None, "finish_reason": c.finish_reason}, c.moderation)
                        for i, c in enumerate(choices)],
            "usage": use}


class Chunks:
    """The stream chunks of one request: ``text_completion`` (``chat=False``) or ``chat.completion.chunk``.

    With ``include_usage`` every chunk has ``"usage": null`` and :meth:`usage` gives the last one,
    whose ``choices`` are empty, as OpenAI sends it.

    Example:
        >>> chunks = Chunks(Meta("chatcmpl-1", 0, "tiny"), chat=True, include_usage=False)
        >>> [c["choices"][0]["delta"] for c in chunks.head()], chunks.chunk("Hi", None)["choices"][0]["delta"]
        ([{'role': 'assistant', 'content': ''}], {'content': 'Hi'})
        >>> chunks.chunk("", "stop")["choices"][0]
        {'index': 0, 'delta': {}, 'logprobs': None, 'finish_reason': 'stop'}
    """

    def __init__(self, meta: Meta, chat: bool, include_usage: bool) -> None:
        self.meta, self.chat, self.include_usage = meta, chat, include_usage

    def _wrap(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"id": self.meta.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.meta.created, "model": self.meta.model, "choices": choices}
        return {**body, "usage": None} if self.include_usage else body

    def head(self) -> list[dict[str, Any]]:
        """The chunks before any text: a chat stream's first names the role."""
        if not self.chat:
            return []
        return [self._wrap([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}])]

    def chunk(self, text: str, finish_reason: str | None, moderation: dict[str, Any] | None = None) -> dict[str, Any]:
        """A chunk with new ``text``, or the last one (``finish_reason`` set; with moderation results)."""
        if self.chat:
            choice = {"index": 0, "delta": {"content": text} if text else {}, "logprobs": None,
                      "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return self._wrap([_with_moderation(choice, moderation)])

    def usage(self, use: dict[str, int]) -> dict[str, Any]:
        """The usage chunk, sent after the last choice chunk when ``include_usage`` asked for it."""
        return {**self._wrap([]), "usage": use}


#: The routes of the OpenAI-compatible API (their errors take OpenAI's shape; TF Serving's keep theirs).
OPENAI_ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/models")


def is_openai_route(path: str) -> bool:
    """Whether ``path`` is one of :data:`OPENAI_ROUTES` (a trailing slash allowed).

    Example:
        >>> is_openai_route("/v1/models"), is_openai_route("/v1/models/tiny:predict")
        (True, False)
    """
    return path.rstrip("/") in OPENAI_ROUTES


#: OpenAI's error ``type`` by HTTP status.
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
               413: "invalid_request_error", 429: "rate_limit_error"}


def error_body(message: str, status: int, param: str | None = None, code: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """OpenAI's error body ``{"error": {"message", "type", "param", "code"}}`` (``extra`` keys added)."""
    kind = "server_error" if status >= 500 else ERROR_TYPES.get(status, "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code, **extra}}


def model_list(name: str, created: int) -> dict[str, Any]:
    """``GET /v1/models``: the one served model in OpenAI's list shape.

    Example:
        >>> model_list("tiny", 0)
        {'object': 'list', 'data': [{'id': 'tiny', 'object': 'model', 'created': 0, 'owned_by': 'tfgpt'}]}
    """
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "tfgpt"}]}
