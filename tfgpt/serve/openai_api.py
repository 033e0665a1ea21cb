"""The OpenAI-compatible routes of ``tfgpt serve``: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``.

What vLLM, TGI and llama.cpp's server offer, so that the ``openai`` client, LangChain and LlamaIndex
can talk to an export. A request is checked (:mod:`tfgpt.serve.completions`), run through the
export's ``serving_default`` (the chat route first builds its prompt with the run's template,
:mod:`tfgpt.serve.chat_prompt`), cut at its stop strings (:mod:`tfgpt.stops`) and answered
in OpenAI's shapes (:mod:`tfgpt.serve.replies`), or streamed (:mod:`tfgpt.serve.streaming`).

``finish_reason`` is ``stop`` when a stop string (the template's turn boundary included) or
end-of-text ended the text, ``length`` when ``max_tokens`` did, ``content_filter`` when moderation
withheld it. ``usage`` counts tokens with the export's own tokenizer: the prompt as sent (before
any cropping to ``block_size``) and the completion as returned (after a stop string is cut off).

The route handlers reach the server's state as ``request.app.state.tfgpt`` (``tfgpt.serve.app.Server``).

Example:
    >>> from openai import OpenAI  # doctest: +SKIP
    >>> client = OpenAI(base_url="http://127.0.0.1:8501/v1", api_key="none")  # doctest: +SKIP
    >>> client.completions.create(model="tfgpt", prompt="ROMEO:", max_tokens=16).choices[0].text  # doctest: +SKIP
    ' ...'
"""

from __future__ import annotations

from typing import Any

from fastapi import Request  # module level: FastAPI resolves the string annotations against it
from fastapi.responses import JSONResponse, StreamingResponse

from tfgpt.serve.chat_prompt import chat_prompt
from tfgpt.serve.completions import CompletionRequest, FieldError, parse_chat_body, parse_completion_body
from tfgpt.serve.jsonio import jsonable, read_json
from tfgpt.serve.replies import Choice, Chunks, chat_reply, completion_reply, model_list, new_meta, usage
from tfgpt.serve.streaming import open_stream, sse_events
from tfgpt.stops import cut_at_stop


def _server(request: Request) -> Any:
    return request.app.state.tfgpt


def check_model(server: Any, req: CompletionRequest) -> None:
    """404 in OpenAI's shape (``code`` ``model_not_found``) if the request names a model not served here."""
    if req.model is not None and req.model != server.model.name:
        raise FieldError(f"The model `{req.model}` does not exist: this server serves `{server.model.name}`",
                         "model", status=404, code="model_not_found")


def count(tokenizer: Any, text: str) -> int:
    """How many tokens the export's tokenizer makes of ``text``."""
    return len(tokenizer.encode(text)) if text else 0


def finished(text: str, num_tokens: int, limit: int, stops: list[str]) -> Choice:
    """A non-streamed completion cut at its first stop string, and why it ended.

    Example:
        >>> finished(" hi\\nYou: x", 9, 9, ["\\nYou:"])
        Choice(text=' hi', finish_reason='stop', moderation=None)
        >>> finished(" hi", 3, 9, []).finish_reason, finished(" hi", 3, 3, []).finish_reason  # end-of-text, max_tokens
        ('stop', 'length')
    """
    text, stopped = cut_at_stop(text, stops)
    return Choice(text, "stop" if stopped or num_tokens < limit else "length")


async def run_choices(server: Any, req: CompletionRequest, prompts: list[str], screen: list[str],
                      names: list[str], param: str) -> list[Choice]:
    """One finished :class:`Choice` per prompt: moderation's check of the ``screen`` texts (called ``names``,
    from request field ``param``), the model, stop strings, moderation of the completions."""
    mod = server.moderator
    screened = await mod.screen_prompts(screen, names, param) if mod is not None else None
    inputs = {"prompts": prompts, **req.sampling}
    limit = int(server.model.feeds("serving_default", inputs)["max_new_tokens"])
    out = await server.predict("serving_default", inputs)
    choices = [finished(text, int(n), limit, req.stops)
               for text, n in zip(jsonable(out["completions"]), out["num_tokens"], strict=True)]
    return choices if mod is None else await mod.screen_choices(choices, screened)


async def stream_reply(server: Any, req: CompletionRequest, prompt: str, chunks: Chunks, screened_text: str,
                       param: str, name: str) -> StreamingResponse:
    """The event stream of one prompt (moderated, if on); the prompt check and the first chunk run before the 200."""
    mod = server.moderator
    screened = (await mod.screen_prompts([screened_text], [name], param))[0] if mod is not None else None
    deltas = await open_stream(server.model, lambda inputs: server.predict("serving_default", inputs),
                               {"prompts": [prompt], **req.sampling}, req.stops)
    if mod is not None:
        deltas = mod.screen(deltas, screened)
    tok = server.model.python_tokenizer
    use = (lambda text: usage(count(tok, prompt), count(tok, text))) if req.include_usage else None
    return StreamingResponse(sse_events(deltas, chunks, use), media_type="text/event-stream")


async def completions(request: Request) -> Any:
    """``POST /v1/completions``: OpenAI's ``text_completion`` reply, or its stream."""
    server = _server(request)
    req = parse_completion_body(await read_json(request, server.max_body_bytes), server.model.max_new_tokens_cap)
    check_model(server, req)
    meta = new_meta("cmpl", server.model.name)
    if req.stream:
        chunks = Chunks(meta, chat=False, include_usage=req.include_usage)
        return await stream_reply(server, req, req.prompts[0], chunks, req.prompts[0], "prompt", "prompt 0")
    names = [f"prompt {i}" for i in range(len(req.prompts))]
    choices = await run_choices(server, req, req.prompts, req.prompts, names, "prompt")
    tok = server.model.python_tokenizer
    use = usage(sum(count(tok, p) for p in req.prompts), sum(count(tok, c.text) for c in choices))
    return JSONResponse(completion_reply(meta, choices, use))


async def chat_completions(request: Request) -> Any:
    """``POST /v1/chat/completions``: the messages under the run's template; ``chat.completion`` or its stream."""
    server = _server(request)
    req = parse_chat_body(await read_json(request, server.max_body_bytes), server.model.max_new_tokens_cap)
    check_model(server, req)
    model = server.model
    prompt, template_stops = chat_prompt(req.messages, server.template, model.python_tokenizer, model.block_size)
    req = req._replace(stops=req.stops + template_stops)
    meta = new_meta("chatcmpl", model.name)
    name = f"messages[{len(req.messages) - 1}]"
    if req.stream:
        chunks = Chunks(meta, chat=True, include_usage=req.include_usage)
        return await stream_reply(server, req, prompt, chunks, req.messages[-1][1], "messages", name)
    choices = await run_choices(server, req, [prompt], [req.messages[-1][1]], [name], "messages")
    tok = model.python_tokenizer
    return JSONResponse(chat_reply(meta, choices, usage(count(tok, prompt), count(tok, choices[0].text))))


async def list_models(request: Request) -> dict[str, Any]:
    """``GET /v1/models``: the served model, ``created`` when it was exported."""
    server = _server(request)
    return model_list(server.model.name, server.created)
