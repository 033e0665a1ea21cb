"""The bodies of OpenAI's ``POST /v1/completions`` and ``/v1/chat/completions``, checked as the server runs them.

Both take ``model`` (the served name; optional), ``max_tokens``, ``temperature``, ``top_k`` (an
extension, as in vLLM), ``seed``, ``stop`` (a string or up to 4), ``stream``,
``stream_options.include_usage`` and ``user`` (ignored). ``/v1/completions`` takes ``prompt`` (a
string or a list of at most ``MAX_BATCH`` strings; ``max_new_tokens`` is tfgpt's older name for
``max_tokens``, which wins if both are given; errors name the field as sent), the chat
route ``messages`` (``max_completion_tokens`` too). Fields whose OpenAI meaning the SavedModel
cannot give are taken only at their neutral value (``top_p`` 1, ``n`` 1, penalties 0, ...); any
other value, or any other field, is a 400 naming the field (:class:`FieldError`, whose ``param``
the OpenAI error body carries). ``null`` means "not given", as in OpenAI's API.

Example:
    >>> req = parse_completion_body({"model": "tiny", "prompt": "ROMEO:", "max_tokens": 8, "stop": "\\n"}, cap=31)
    >>> req.prompts, req.sampling, req.stops, req.stream
    (['ROMEO:'], {'max_new_tokens': 8}, ['\\n'], False)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from tfgpt.serve.errors import BadRequest
from tfgpt.serve.jsonio import MAX_BATCH

INT32 = (-(2**31), 2**31 - 1)
MAX_STOPS = 4

#: Fields taken only at their neutral value: field → (accepts?, what to say otherwise).
NEUTRAL = {
    "top_p": (lambda v: v == 1, "only 1 is served (no nucleus sampling in the SavedModel; use top_k)"),
    "n": (lambda v: v == 1, "only 1 is served (one choice per prompt)"),
    "best_of": (lambda v: v == 1, "only 1 is served"),
    "presence_penalty": (lambda v: v == 0, "only 0 is served (no penalties in the SavedModel)"),
    "frequency_penalty": (lambda v: v == 0, "only 0 is served (no penalties in the SavedModel)"),
    "logit_bias": (lambda v: v == {}, "only {} is served"),
    "echo": (lambda v: v is False, "only false is served"),
    "suffix": (lambda v: v == "", "is not served"),
    "logprobs": (lambda v: v is False, "is not served (no log-probabilities in the SavedModel's output)"),
    "top_logprobs": (lambda v: v == 0, "is not served"),
    "response_format": (lambda v: v == {"type": "text"}, 'only {"type": "text"} is served'),
    "tools": (lambda v: v == [], "is not served (no tool calls)"),
    "tool_choice": (lambda v: v == "none", "only \"none\" is served (no tool calls)"),
    "parallel_tool_calls": (lambda v: isinstance(v, bool), "must be true or false (no tool calls are made)"),
}
COMMON = frozenset({"model", "max_tokens", "temperature", "top_k", "seed", "stop", "stream", "stream_options",
                    "user", "top_p", "n", "presence_penalty", "frequency_penalty", "logit_bias"})
COMPLETION_FIELDS = COMMON | {"prompt", "max_new_tokens", "echo", "best_of", "suffix", "logprobs"}
CHAT_FIELDS = COMMON | {"messages", "max_completion_tokens", "logprobs", "top_logprobs", "response_format",
                        "tools", "tool_choice", "parallel_tool_calls"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class FieldError(BadRequest):
    """A 4xx about one request field: ``param`` names it (OpenAI's error ``param``), ``code`` as OpenAI's."""

    def __init__(self, message: str, param: str | None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message, status=status)
        self.param, self.code = param, code


class CompletionRequest(NamedTuple):
    """A checked body: ``prompts`` (completions) or ``messages`` (chat: ``(role, text)`` pairs), the
    ``serving_default`` sampling inputs, stop strings and stream settings."""

    model: str | None
    prompts: list[str]
    messages: list[tuple[str, str]]
    sampling: dict[str, Any]
    stops: list[str]
    stream: bool
    include_usage: bool


def parse_completion_body(body: Any, cap: int) -> CompletionRequest:
    """A ``/v1/completions`` body → :class:`CompletionRequest`; ``cap`` bounds ``max_tokens``.

    Example:
        >>> parse_completion_body({"prompt": ["a", "b"], "top_p": 1, "n": 1, "seed": 3}, cap=31).prompts
        ['a', 'b']
        >>> parse_completion_body({"prompt": "a", "top_p": 0.9}, cap=31)
        Traceback (most recent call last):
        ...
        tfgpt.serve.completions.FieldError: top_p 0.9: only 1 is served (no nucleus sampling in the SavedModel; ...)
    """
    body = _given(body, COMPLETION_FIELDS)
    if "prompt" not in body:
        raise FieldError("missing field 'prompt'", "prompt")
    prompt = body["prompt"]
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise FieldError("'prompt' must be a string or a non-empty list of strings", "prompt")
    if len(prompts) > MAX_BATCH:
        raise FieldError(f"'prompt' holds {len(prompts)} prompts: this server takes at most {MAX_BATCH} per request",
                         "prompt", status=413)
    max_name = "max_tokens"
    if "max_tokens" not in body and "max_new_tokens" in body:  # the alias: errors name the field as sent
        body["max_tokens"], max_name = body["max_new_tokens"], "max_new_tokens"
    req = _common(body, cap, max_name)
    if req.stream and len(prompts) > 1:
        raise FieldError("streaming takes a single prompt (a string or a list of one)", "prompt")
    return req._replace(prompts=prompts)


def parse_chat_body(body: Any, cap: int) -> CompletionRequest:
    """A ``/v1/chat/completions`` body → :class:`CompletionRequest` with ``messages`` as ``(role, text)``
    (``developer`` is ``system``; text content parts are joined); the last message must be the user's.

    Example:
        >>> parse_chat_body({"messages": [{"role": "system", "content": "Be brief."},
        ...                               {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]},
        ...                 cap=31).messages
        [('system', 'Be brief.'), ('user', 'Hi')]
    """
    body = _given(body, CHAT_FIELDS)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise FieldError("'messages' must be a non-empty list of {\"role\", \"content\"} objects", "messages")
    pairs = [_message(i, m) for i, m in enumerate(messages)]
    if pairs[-1][0] != "user":
        raise FieldError(f"messages[{len(pairs) - 1}]: the last message must have role 'user', "
                         f"got {messages[-1]['role']!r}", "messages")
    if "max_completion_tokens" in body:
        body["max_tokens"] = body["max_completion_tokens"]
    return _common(body, cap, "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
                   )._replace(messages=pairs)


def _given(body: Any, fields: frozenset[str]) -> dict[str, Any]:
    """The fields of ``body`` that are not null; a 400 for a non-object, an unknown or a non-neutral field."""
    if not isinstance(body, dict):
        raise FieldError("the request body must be a JSON object", None)
    unknown = sorted(set(body) - fields)
    if unknown:
        raise FieldError(f"unknown field(s) {', '.join(unknown)}; this server takes {', '.join(sorted(fields))}",
                         unknown[0])
    given = {k: v for k, v in body.items() if v is not None}
    for key, value in given.items():
        if key in NEUTRAL and not NEUTRAL[key][0](value):
            raise FieldError(f"{key} {value!r}: {NEUTRAL[key][1]}", key)
    return given


def _common(body: dict[str, Any], cap: int, max_name: str) -> CompletionRequest:
    """The fields both routes share, checked; ``max_name`` is what ``max_tokens`` is called in messages."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise FieldError("'model' must be a string", "model")
    sampling: dict[str, Any] = {}
    if "max_tokens" in body:
        sampling["max_new_tokens"] = _integer(body["max_tokens"], max_name, 0, cap)
    if "temperature" in body:
        sampling["temperature"] = _number(body["temperature"], "temperature")
    if "top_k" in body:
        sampling["top_k"] = _integer(body["top_k"], "top_k", 0, INT32[1])
    if "seed" in body:
        sampling["seed"] = _integer(body["seed"], "seed", *INT32)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise FieldError("'stream' must be true or false", "stream")
    return CompletionRequest(model, [], [], sampling, _stops(body.get("stop")), stream,
                             _include_usage(body.get("stream_options"), stream))


def _integer(value: Any, name: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise FieldError(f"'{name}' must be an integer, got {value!r}", name)
    if not lo <= value <= hi:
        if name in ("max_tokens", "max_completion_tokens", "max_new_tokens") and value > hi:
            raise FieldError(f"{name} {value} is above this server's cap ({hi})", name)
        raise FieldError(f"'{name}' must be in [{lo}, {hi}], got {value}", name)
    return value


def _number(value: Any, name: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise FieldError(f"'{name}' must be a number, got {value!r}", name)
    if not (0 <= value <= 3.4e38 and math.isfinite(value)):  # json.loads reads NaN, 1e400 (inf) and 10**400
        raise FieldError(f"'{name}' must be a finite number ≥ 0 (0 = greedy), got {value!r}", name)
    return float(value)


def _stops(stop: Any) -> list[str]:
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOPS:
        raise FieldError(f"'stop' must be a string or a list of at most {MAX_STOPS} strings", "stop")
    return [s for s in stops if s]


def _include_usage(options: Any, stream: bool) -> bool:
    if options is None:
        return False
    if not stream:
        raise FieldError("'stream_options' is only allowed with \"stream\": true", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"} or \
            not isinstance(options.get("include_usage", False), bool):
        raise FieldError("'stream_options' takes only {\"include_usage\": true | false}", "stream_options")
    return options.get("include_usage", False)


def _message(i: int, message: Any) -> tuple[str, str]:
    """``messages[i]`` as ``(role, text)``; a 400 naming it if it is not a text message of a known role."""
    where = f"messages[{i}]"
    if not isinstance(message, dict) or set(message) - {"role", "content", "name"}:
        raise FieldError(f"{where} must be an object with 'role' and 'content' (and optionally 'name')", "messages")
    role, content = message.get("role"), message.get("content")
    if not isinstance(role, str) or role not in ROLES:
        raise FieldError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}", "messages")
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and
                                         isinstance(p.get("text"), str) for p in content):
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise FieldError(f"{where}: content must be a string or a list of text parts", "messages")
    return ROLES[role], content
