"""The OpenAI-style ``POST /v1/completions``: its body as ``serving_default`` inputs, and its reply.

The body is ``{"prompt": str | [str], "max_tokens": int, "temperature": float, "top_k": int,
"seed": int, "stream": bool}`` (``max_new_tokens`` is taken for ``max_tokens`` too). Types and ranges
are checked later, by the model's signature, so the messages match the predict endpoint's.

Example:
    >>> parse_completion_body({"prompt": "ROMEO:", "max_tokens": 8, "seed": 1})
    CompletionRequest(inputs={'prompts': ['ROMEO:'], 'max_new_tokens': 8, 'seed': 1}, single=True, stream=False)
"""

from __future__ import annotations

from typing import Any, NamedTuple

from tfgpt.serve.errors import BadRequest
from tfgpt.serve.jsonio import jsonable

FIELDS = frozenset({"prompt", "max_tokens", "max_new_tokens", "temperature", "top_k", "seed", "stream"})


class CompletionRequest(NamedTuple):
    """A parsed completions body: ``serving_default`` inputs, whether ``prompt`` was one string, and ``stream``."""

    inputs: dict[str, Any]
    single: bool
    stream: bool


def parse_completion_body(body: Any) -> CompletionRequest:
    """A completions body → :class:`CompletionRequest`; 400 for unknown fields, no prompt or a bad ``stream``.

    Example:
        >>> parse_completion_body({"prompt": ["a", "b"], "stream": False}).inputs
        {'prompts': ['a', 'b']}
        >>> parse_completion_body({"prompt": "a", "colour": 1})
        Traceback (most recent call last):
        ...
        tfgpt.serve.errors.BadRequest: unknown field(s) colour; allowed: max_new_tokens, max_tokens, prompt, ...
    """
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}")
    if "prompt" not in body:
        raise BadRequest("missing field 'prompt'")
    prompt = body["prompt"]
    single = isinstance(prompt, str)
    prompts = [prompt] if single else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequest("'prompt' must be a string or a non-empty list of strings")
    inputs: dict[str, Any] = {"prompts": prompts}
    n = body.get("max_tokens", body.get("max_new_tokens"))
    if n is not None:
        inputs["max_new_tokens"] = n
    for key in ("temperature", "top_k", "seed"):
        if key in body:
            inputs[key] = body[key]
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false")
    return CompletionRequest(inputs, single, stream)


def completion_reply(outputs: dict[str, Any], model_name: str) -> dict[str, Any]:
    """The non-streamed reply: ``{"model": NAME, "choices": [{"index", "text", "num_tokens"}, ...]}``.

    Example:
        >>> out = {"completions": np.array([b" hello"], dtype=object), "num_tokens": np.array([6], np.int32)}
        >>> completion_reply(out, "tiny")
        {'model': 'tiny', 'choices': [{'index': 0, 'text': ' hello', 'num_tokens': 6}]}
    """
    texts = jsonable(outputs["completions"])
    choices = [{"index": i, "text": t, "num_tokens": int(outputs["num_tokens"][i])} for i, t in enumerate(texts)]
    return {"model": model_name, "choices": choices}
