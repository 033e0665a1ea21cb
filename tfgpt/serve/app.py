"""``tfgpt serve``: a FastAPI server over an export's SavedModel (for users without TF Serving).

Endpoints:

- ``GET /healthz`` → ``{"status": "ok", "model": NAME, "version": N}``
- TF Serving's REST API (:mod:`tfgpt.serve.rest`): ``GET /v1/models/{name}`` and
  ``/v1/models/{name}/metadata`` → model status / metadata JSON; ``POST /v1/models/{name}:predict``
  with ``{"instances": [...]}`` (row) or ``{"inputs": ...}`` (columnar), optional
  ``"signature_name"``, answers ``{"predictions": ...}`` / ``{"outputs": ...}``. Each also under
  ``/v1/models/{name}/versions/{version}`` (another version than the served one is a 404).
- The OpenAI-compatible API (:mod:`tfgpt.serve.openai_api`): ``POST /v1/completions`` and
  ``/v1/chat/completions`` in OpenAI's request and reply shapes (``"stream": true``: server-sent
  ``data:`` chunks ending ``data: [DONE]``), ``GET /v1/models`` (OpenAI's model list; the
  ``/v1/models/{name}`` paths stay TF Serving's). The chat route uses the run's template
  (:mod:`tfgpt.serve.chat_prompt`).

With ``moderation=RUN2`` a classifier screens every prompt and completion, labelling or blocking them
(:mod:`tfgpt.serve.moderation`).

Bad requests get a 4xx naming the field: ``{"error": {"message", "type", "param", "code"}}`` on the
OpenAI routes (so the ``openai`` client raises e.g. ``BadRequestError`` with the message),
``{"error": "..."}`` on TF Serving's (malformed or too deeply nested JSON, missing fields, wrong
types, ragged lists or shapes, numbers out of the input's dtype range, ``max_tokens`` above the
cap, bodies over ``max_body_bytes``; unknown paths and wrong methods too). The model runs off the
event loop, so it keeps serving while requests compute: completions through the batcher's thread
(:mod:`tfgpt.serve.batching`: concurrent requests share decode steps), other signatures in a worker
thread pool.

Example:
    >>> serve("export/shakespeare", host="127.0.0.1", port=8501)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import errno
import ipaddress
import os
import socket
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi import FastAPI, Request  # module level: FastAPI resolves the string annotations against them
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tfgpt.errors import ConfigError
from tfgpt.serve import openai_api
from tfgpt.serve.auth import BearerAuth, read_api_key
from tfgpt.serve.batching import DEFAULT_MAX_ROWS, DEFAULT_WINDOW_MS, Batcher
from tfgpt.serve.chat_prompt import export_template
from tfgpt.serve.errors import BadRequest, utf8_safe
from tfgpt.serve.jsonio import read_json
from tfgpt.serve.model import DEFAULT_MAX_NEW_TOKENS_CAP, ExportedModel
from tfgpt.serve.moderation import Flagged, Moderator, flagged_reply
from tfgpt.serve.replies import error_body, is_openai_route
from tfgpt.serve.rest import named_inputs, parse_predict_body, predict_reply

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_WORKERS = 2


class Server:
    """What the routes share (``app.state.tfgpt``): the model, the pool that runs it, the batcher that
    merges concurrent completions (None with ``batch_rows`` 1, or for an export without ``complete``),
    the body limit, the moderator, the chat template (``template``, read from ``template_source``) and
    the export's time."""

    def __init__(self, model: ExportedModel, workers: int, max_body_bytes: int,
                 moderator: Moderator | None = None, batch_rows: int = DEFAULT_MAX_ROWS,
                 batch_window_ms: float = DEFAULT_WINDOW_MS) -> None:
        self.model = model
        self.moderator = moderator
        self.max_body_bytes = max_body_bytes
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tfgpt-serve")
        batched = batch_rows > 1 and "complete" in model.specs
        self.batcher = Batcher(model, batch_rows, batch_window_ms / 1000) if batched else None
        self.template, self.template_source = export_template(model.info, model.export_dir)
        self.created = _created(model.info)
        if model.python_tokenizer is None:  # the OpenAI routes count usage and build chat prompts with it
            raise ConfigError(f"{model.export_dir}: its tokenizer/ cannot be loaded (export again with tfgpt export)")

    def describe(self) -> str:
        """One line for the server's log: the chat template and where it was read."""
        return f"chat template: {self.template or 'transcript'} ({self.template_source})"

    async def predict(self, signature: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """:meth:`ExportedModel.predict` off the event loop: ``serving_default`` through the batcher, the
        other signatures in the worker pool."""
        if self.batcher is not None and signature == "serving_default":
            return await self.batcher.predict(self.model.feeds(signature, inputs))
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.model.predict, signature, inputs)

    def check_name(self, name: str, version: str | None = None) -> None:
        """404 unless ``name`` (and ``version``, if given: from a ``/versions/N`` URL) is the served model's."""
        if name != self.model.name:
            raise BadRequest(f"model {name!r} is not served here (this server serves {self.model.name!r})",
                             status=404)
        if version is not None and version != str(self.model.version):
            raise BadRequest(f"model {name!r} has no version {version!r} here (this server serves version "
                             f"{self.model.version})", status=404)


def listening(name: str, version: int, host: str, port: int) -> str:
    """The start-up line saying what is served where (an IPv6 host in brackets, as in a URL).

    Example:
        >>> listening("tiny", 1, "::1", 8501).split(" (")[0]
        'tfgpt serve: serving tiny v1 on http://[::1]:8501'
    """
    where = f"[{host}]" if ":" in host else host
    return (f"tfgpt serve: serving {name} v{version} on http://{where}:{port} "
            "(TF Serving REST, OpenAI /v1/completions, /v1/chat/completions)")


def _server(request: Request) -> Server:
    return request.app.state.tfgpt


def _created(info: dict[str, Any]) -> int:
    """export.json's ``created`` as Unix seconds (0 if it has none)."""
    try:
        return int(_dt.datetime.fromisoformat(str(info["created"])).timestamp())
    except (KeyError, ValueError):
        return 0


async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
    """A 4xx: OpenAI's error shape on the OpenAI routes, TF Serving's ``{"error": "..."}`` on the others."""
    message, param = utf8_safe(str(exc)), getattr(exc, "param", None)
    if is_openai_route(request.url.path):
        body = error_body(message, exc.status, None if param is None else utf8_safe(param), getattr(exc, "code", None))
        return JSONResponse(body, status_code=exc.status)
    return JSONResponse({"error": message}, status_code=exc.status)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (405 on a wrong method, 404 on an unknown path): OpenAI's shape on its routes,
    TF Serving's ``{"error": "..."}`` elsewhere."""
    if is_openai_route(request.url.path):
        return JSONResponse(error_body(str(exc.detail), exc.status_code), status_code=exc.status_code,
                            headers=exc.headers)
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def healthz(request: Request) -> dict[str, Any]:
    model = _server(request).model
    return {"status": "ok", "model": model.name, "version": model.version}


async def model_status(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    server = _server(request)
    server.check_name(name, version)
    ok = {"error_code": "OK", "error_message": ""}
    return {"model_version_status": [{"version": str(server.model.version), "state": "AVAILABLE", "status": ok}]}


async def model_metadata(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    server = _server(request)
    server.check_name(name, version)
    return {"model_spec": {"name": server.model.name, "version": str(server.model.version)},
            "signatures": server.model.specs}


async def predict(name_verb: str, request: Request) -> JSONResponse:
    name, _, verb = name_verb.partition(":")
    return await _predict(request, name, None, verb)


async def versioned_predict(name: str, version_verb: str, request: Request) -> JSONResponse:
    version, _, verb = version_verb.partition(":")
    return await _predict(request, name, version, verb)


async def _predict(request: Request, name: str, version: str | None, verb: str) -> JSONResponse:
    """``POST /v1/models/NAME[/versions/N]:predict``."""
    server = _server(request)
    if verb != "predict":
        raise BadRequest(f"unsupported verb {verb!r}: only ':predict' is served", status=404)
    server.check_name(name, version)
    req = parse_predict_body(await read_json(request, server.max_body_bytes))
    inputs = named_inputs(req, server.model.specs)
    if server.moderator is not None:
        return JSONResponse(await server.moderator.predict(server.predict, server.model, req.signature, inputs,
                                                           req.row_format))
    out = await server.predict(req.signature, inputs)
    return JSONResponse(predict_reply(out, req.row_format))


def create_app(
    export_dir: str | os.PathLike,
    max_new_tokens_cap: int = DEFAULT_MAX_NEW_TOKENS_CAP,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    workers: int = DEFAULT_WORKERS,
    moderation: str | os.PathLike | None = None,
    moderation_action: str = "label",
    moderation_flags: Sequence[str] | None = None,
    api_key: str | None = None,
    batch_rows: int = DEFAULT_MAX_ROWS,
    batch_window_ms: float = DEFAULT_WINDOW_MS,
) -> FastAPI:
    """The FastAPI app serving ``export_dir`` (loads the SavedModel now, and the ``moderation`` classifier
    run or export first, if given: :class:`~tfgpt.serve.moderation.Moderator`). With ``api_key``, every
    route but ``/healthz`` needs ``Authorization: Bearer API_KEY`` (:mod:`tfgpt.serve.auth`). Concurrent
    completions share decode steps, up to ``batch_rows`` prompts per step, joining within
    ``batch_window_ms`` (:mod:`tfgpt.serve.batching`; ``batch_rows`` 1: one call per request).

    Example:
        >>> app = create_app("export/shakespeare", max_new_tokens_cap=128)  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8501)  # doctest: +SKIP
    """
    moderator = None if moderation is None else Moderator(moderation, moderation_action, moderation_flags, workers)
    model = ExportedModel(export_dir, max_new_tokens_cap=max_new_tokens_cap)
    app = FastAPI(title="tfgpt serve", version="1")
    app.state.tfgpt = Server(model, workers, max_body_bytes, moderator, batch_rows, batch_window_ms)
    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(Flagged, flagged_reply)
    app.add_exception_handler(HTTPException, http_error)
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/v1/models", openai_api.list_models, methods=["GET"])  # OpenAI's; before TF Serving's
    app.add_api_route("/v1/models/{name}", model_status, methods=["GET"])
    app.add_api_route("/v1/models/{name}/metadata", model_metadata, methods=["GET"])
    app.add_api_route("/v1/models/{name_verb}", predict, methods=["POST"])
    app.add_api_route("/v1/models/{name}/versions/{version}", model_status, methods=["GET"])
    app.add_api_route("/v1/models/{name}/versions/{version}/metadata", model_metadata, methods=["GET"])
    app.add_api_route("/v1/models/{name}/versions/{version_verb}", versioned_predict, methods=["POST"])
    app.add_api_route("/v1/completions", openai_api.completions, methods=["POST"])
    app.add_api_route("/v1/chat/completions", openai_api.chat_completions, methods=["POST"])
    if api_key is not None:
        app.add_middleware(BearerAuth, key=api_key)
    return app


def check_options(port: int, workers: int, max_new_tokens_cap: int, max_body_bytes: int, batch_rows: int = 1,
                  batch_window_ms: float = 0.0) -> None:
    """A one-line ConfigError naming the flag if a number :func:`serve` takes is out of its range.

    Example:
        >>> check_options(8501, workers=0, max_new_tokens_cap=256, max_body_bytes=1024)
        Traceback (most recent call last):
        ...
        tfgpt.errors.ConfigError: --workers 0: must be at least 1 (threads running the model)
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: must be in [0, 65535]")
    for flag, value, what in (("--workers", workers, "threads running the model"),
                              ("--max-new-tokens-cap", max_new_tokens_cap, "tokens a request may ask for"),
                              ("--max-body-bytes", max_body_bytes, "bytes of a request body"),
                              ("--batch-rows", batch_rows, "prompts per shared decode step")):
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1 ({what})")
    if not 0 <= batch_window_ms <= 1000:
        raise ConfigError(f"--batch-window-ms {batch_window_ms}: must be in [0, 1000] (how long a request "
                          "waits for others to batch with)")


def check_port_free(host: str, port: int) -> None:
    """A one-line ConfigError if ``host:port`` cannot be bound (in use, or not an address of this machine).

    Example:
        >>> check_port_free("127.0.0.1", 0)  # port 0: any free port, always bindable
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError as e:
            reason = "is in use (another server?)" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
            raise ConfigError(f"--host {host} --port {port}: {host}:{port} {reason}; choose another --port") from None


def warn_if_exposed(host: str, port: int, has_key: bool) -> None:
    """A ``tfgpt: warning:`` when ``host`` is not a loopback address: other machines can reach the server.

    Example:
        >>> warn_if_exposed("127.0.0.1", 8501, has_key=False)  # loopback: nothing to say
    """
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        loopback = False
    if not loopback:
        guard = "requests need the --api-key-file key" if has_key else "anyone who can reach it may use it " \
            "(--api-key-file FILE requires a key)"
        warnings.warn(f"serving on {host}:{port}, reachable from other machines: {guard}", stacklevel=2)


def serve(
    export_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8501,
    max_new_tokens_cap: int = DEFAULT_MAX_NEW_TOKENS_CAP,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    workers: int = DEFAULT_WORKERS,
    log_level: str = "info",
    moderation: str | os.PathLike | None = None,
    moderation_action: str = "label",
    moderation_flags: Sequence[str] | None = None,
    api_key_file: str | os.PathLike | None = None,
    batch_rows: int = DEFAULT_MAX_ROWS,
    batch_window_ms: float = DEFAULT_WINDOW_MS,
) -> None:
    """Serve ``export_dir`` with uvicorn until interrupted (what ``tfgpt serve`` runs).

    ``host`` defaults to loopback; any other address warns that the server is reachable from other
    machines (and, without ``api_key_file``, by anyone who can reach it).

    Example:
        >>> serve("export/shakespeare", port=8501)  # doctest: +SKIP
    """
    import uvicorn

    from tfgpt.serve.timeouts import TimedH11Protocol

    check_options(port, workers, max_new_tokens_cap, max_body_bytes, batch_rows, batch_window_ms)
    check_port_free(host, port)  # before the model load, which takes seconds
    api_key = None if api_key_file is None else read_api_key(api_key_file)
    warn_if_exposed(host, port, api_key is not None)
    app = create_app(export_dir, max_new_tokens_cap=max_new_tokens_cap, max_body_bytes=max_body_bytes,
                     workers=workers, moderation=moderation, moderation_action=moderation_action,
                     moderation_flags=moderation_flags, api_key=api_key, batch_rows=batch_rows,
                     batch_window_ms=batch_window_ms)
    print(app.state.tfgpt.describe(), file=sys.stderr, flush=True)
    if app.state.tfgpt.moderator is not None:
        print(app.state.tfgpt.moderator.describe(), file=sys.stderr, flush=True)
    model = app.state.tfgpt.model
    print(listening(model.name, model.version, host, port), file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, http=TimedH11Protocol)  # slow clients: timeouts.py
