"""``tfgpt serve``: a FastAPI server over an export's SavedModel (for users without TF Serving).

Endpoints:

- ``GET /healthz`` → ``{"status": "ok", "model": NAME}``
- ``GET /v1/models/{name}`` → TF Serving's model status JSON
- ``POST /v1/models/{name}:predict`` → TF Serving's REST predict: ``{"instances": [...]}`` (row) or
  ``{"inputs": ...}`` (columnar), optional ``"signature_name"``; answers ``{"predictions": ...}`` /
  ``{"outputs": ...}``.
- ``POST /v1/completions`` → ``{"prompt": str | [str], "max_tokens": int, "temperature": float,
  "top_k": int, "seed": int, "stream": bool}``; with ``stream`` the reply is server-sent events,
  one ``data: {"text": ...}`` event per decoded piece, then ``data: [DONE]`` (a failure after the 200
  status sends ``data: {"error": ...}`` before ``[DONE]``). Streaming decodes in chunks of
  :data:`STREAM_CHUNK` tokens, each a new call on the prompt + text so far: sampled streams are
  reproducible for a seed but differ from the non-streamed completion, and so can greedy ones when the
  prompt + completion outgrow ``block_size`` (each chunk crops the context on its own).

Bad requests get a 4xx with ``{"error": "..."}`` (malformed or too deeply nested JSON, missing
fields, wrong types, ragged lists or shapes, numbers out of the input's dtype range, ``max_new_tokens``
above the cap, bodies over ``max_body_bytes``); the model runs in a
worker thread pool, so the event loop keeps serving while requests compute.

Example:
    >>> serve("export/shakespeare", host="127.0.0.1", port=8501)
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request  # module level: FastAPI resolves the string annotations against it

from tfgpt.errors import ExportError, RunDirError

DEFAULT_MAX_NEW_TOKENS_CAP = 256
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_WORKERS = 2
#: New tokens per SavedModel call when streaming /v1/completions.
STREAM_CHUNK = 8
#: Deepest JSON nesting a request may have (TF Serving bodies need 4: object, list, object, 2-D list).
MAX_JSON_DEPTH = 32


class BadRequest(ExportError):
    """A request the server rejects with HTTP 400 (or ``status``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _np_dtype(name: str) -> Any:
    return {"string": object, "int32": np.int32, "int64": np.int64, "float32": np.float32}[name]


class ExportedModel:
    """The SavedModel of an export dir, loaded once; ``predict`` converts and checks JSON inputs.

    Example:
        >>> m = ExportedModel("export/shakespeare")
        >>> m.predict("serving_default", {"prompts": ["ROMEO:"], "max_new_tokens": 8})["completions"]
    """

    def __init__(self, export_dir: str | os.PathLike, max_new_tokens_cap: int = DEFAULT_MAX_NEW_TOKENS_CAP) -> None:
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - registers the TF-Text ops of in-graph tokenizers (BPE, specials)

        from tfgpt.export.export import load_export_info, signature_specs

        self.export_dir = Path(export_dir)
        self.info = load_export_info(export_dir)
        if "savedmodel" not in self.info:
            raise RunDirError(f"{export_dir} has no SavedModel (export with --format savedmodel)")
        self.sm_dir = self.export_dir / self.info["savedmodel"]["path"]
        if not (self.sm_dir / "saved_model.pb").is_file():
            raise RunDirError(f"{self.sm_dir} holds no saved_model.pb")
        self.name = self.info["name"]
        self.version = int(self.info["version"])
        self.block_size = int(self.info["source"]["model"]["block_size"])
        self.max_new_tokens_cap = min(int(max_new_tokens_cap), self.block_size - 1)
        self.specs = signature_specs(self.sm_dir)
        self._loaded = tf.saved_model.load(str(self.sm_dir))
        self._tf = tf

    def _convert(self, signature: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if signature not in self.specs:
            raise BadRequest(f"unknown signature_name {signature!r}; have {', '.join(sorted(self.specs))}")
        spec = self.specs[signature]
        unknown = sorted(set(inputs) - set(spec["inputs"]))
        if unknown:
            raise BadRequest(f"unknown input(s) {', '.join(unknown)} for signature {signature!r}; "
                             f"expected {', '.join(sorted(spec['inputs']))}")
        feeds: dict[str, Any] = {}
        for key, info in spec["inputs"].items():
            if key not in inputs:
                if key in spec["defaults"]:
                    value = spec["defaults"][key]
                    if key == "max_new_tokens":
                        value = min(value, self.max_new_tokens_cap)
                else:
                    raise BadRequest(f"missing input {key!r} for signature {signature!r}")
            else:
                value = inputs[key]
            feeds[key] = self._tensor(key, value, info)
        if "max_new_tokens" in feeds and int(feeds["max_new_tokens"]) > self.max_new_tokens_cap:
            raise BadRequest(f"max_new_tokens {int(feeds['max_new_tokens'])} is above this server's cap "
                             f"({self.max_new_tokens_cap})")
        if "max_new_tokens" in feeds and int(feeds["max_new_tokens"]) < 0:
            raise BadRequest("max_new_tokens must be ≥ 0")
        return feeds

    def _tensor(self, key: str, value: Any, info: dict[str, Any]) -> Any:
        dtype, shape = info["dtype"], info["shape"]
        if dtype == "string":
            if not _is_nested_of(value, str, len(shape)):
                raise BadRequest(f"input {key!r} must be {_describe(shape)} of strings")
            try:
                arr = np.asarray(_nested_map(value, lambda s: s.encode("utf-8")), dtype=object)
            except UnicodeEncodeError:
                raise BadRequest(f"input {key!r} holds a string that is not valid UTF-8") from None
        else:
            kind = float if dtype.startswith("float") else int
            if not _is_nested_of(value, kind, len(shape)):
                what = "numbers" if kind is float else "integers"
                raise BadRequest(f"input {key!r} must be {_describe(shape)} of {what}")
            leaves = _leaves(key, value, len(shape))
            limits = np.finfo(dtype) if kind is float else np.iinfo(dtype)
            lo, hi = kind(limits.min), kind(limits.max)
            if not all(lo <= v <= hi for v in leaves):  # also rejects NaN, which json.loads accepts
                raise BadRequest(f"input {key!r} is out of the {dtype} range [{lo}, {hi}]")
            arr = np.asarray(value, dtype=_np_dtype(dtype))
        if arr.ndim != len(shape) or any(s not in (-1, d) for s, d in zip(shape, arr.shape, strict=True)):
            raise BadRequest(f"input {key!r} has shape {list(arr.shape)}, expected {_describe(shape)}")
        if arr.ndim == 2 and 0 in arr.shape:
            raise BadRequest(f"input {key!r} is empty")
        return self._tf.constant(arr, dtype=dtype)

    def predict(self, signature: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Run ``signature`` on JSON-like ``inputs`` (missing optional inputs take their defaults)."""
        feeds = self._convert(signature, inputs)
        if "ids" in feeds and signature in ("logits", "generate_ids"):
            ids = feeds["ids"].numpy()
            vocab = int(self.info["source"]["model"]["vocab_size"])
            if ids.min() < 0 or ids.max() >= vocab:
                raise BadRequest(f"ids must be in [0, {vocab})")
            if signature == "logits" and ids.shape[1] > self.block_size:
                raise BadRequest(f"ids has {ids.shape[1]} positions, more than block_size {self.block_size}")
        try:
            out = self._loaded.signatures[signature](**feeds)
        except self._tf.errors.InvalidArgumentError as e:
            known = {
                "not valid UTF-8": "a prompt is not valid UTF-8",
                "encodes to no tokens": "a prompt encodes to no tokens: give at least one character",
                "not in the char vocabulary": "a prompt holds characters that are not in the vocabulary",
            }
            message = next((v for k, v in known.items() if k in e.message), e.message.split("\n")[0])
            raise BadRequest(message) from None
        return {k: v.numpy() for k, v in out.items()}


def _describe(shape: list[int]) -> str:
    return "a scalar" if not shape else f"a {len(shape)}-D list (shape {shape}, -1 = any)"


def _is_nested_of(value: Any, kind: type, depth: int) -> bool:
    if depth == 0:
        if kind is float:
            return isinstance(value, int | float) and not isinstance(value, bool)
        if kind is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, kind)
    return isinstance(value, list) and all(_is_nested_of(v, kind, depth - 1) for v in value)


def _leaves(key: str, value: Any, depth: int) -> list[Any]:
    """The scalars of a ``depth``-deep nested list (checked by :func:`_is_nested_of`); 400 if it is ragged."""
    level = [value]
    for _ in range(depth):
        if len({len(v) for v in level}) > 1:
            raise BadRequest(f"input {key!r} is ragged: its lists at one depth must have equal lengths")
        level = [x for v in level for x in v]
    return level


def _json_depth(value: Any) -> int:
    """How deeply lists/objects nest in a parsed JSON value (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
        elif isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
    return deepest


def _nested_map(value: Any, fn: Any) -> Any:
    return [_nested_map(v, fn) for v in value] if isinstance(value, list) else fn(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    return _nested_map(value, lambda x: x.decode("utf-8", errors="replace") if isinstance(x, bytes) else x)


def parse_predict_body(body: Any) -> tuple[str, dict[str, Any], bool]:
    """TF Serving REST body → ``(signature, inputs, row_format)``; row format stacks instances."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    signature = body.get("signature_name", "serving_default")
    if not isinstance(signature, str):
        raise BadRequest("signature_name must be a string")
    has_rows, has_cols = "instances" in body, "inputs" in body
    if has_rows == has_cols:
        raise BadRequest("give exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    if has_cols:
        inputs = body["inputs"]
        return signature, inputs if isinstance(inputs, dict) else {"__single__": inputs}, False
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
        raise BadRequest("'instances' must be a non-empty list")
    if all(isinstance(r, dict) for r in rows):
        keys = set(rows[0])
        if any(set(r) != keys for r in rows):
            raise BadRequest("every instance must have the same keys")
        return signature, {k: [r[k] for r in rows] for k in rows[0]}, True
    if any(isinstance(r, dict) for r in rows):
        raise BadRequest("instances mix objects and plain values")
    return signature, {"__single__": rows}, True


class _App:
    def __init__(self, model: ExportedModel, workers: int) -> None:
        self.model = model
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tfgpt-serve")
        self.lock = threading.Lock()

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


def create_app(
    export_dir: str | os.PathLike,
    max_new_tokens_cap: int = DEFAULT_MAX_NEW_TOKENS_CAP,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    workers: int = DEFAULT_WORKERS,
) -> Any:
    """The FastAPI app serving ``export_dir`` (loads the SavedModel now).

    Example:
        >>> app = create_app("export/shakespeare", max_new_tokens_cap=128)
        >>> uvicorn.run(app, host="127.0.0.1", port=8501)
    """
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    model = ExportedModel(export_dir, max_new_tokens_cap=max_new_tokens_cap)
    state = _App(model, workers)
    app = FastAPI(title="tfgpt serve", version="1")
    app.state.tfgpt = state

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def read_json(request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            raise BadRequest(f"request body is larger than {max_body_bytes} bytes", status=413)
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > max_body_bytes:
                raise BadRequest(f"request body is larger than {max_body_bytes} bytes", status=413)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"malformed JSON: {e}") from None
        except RecursionError:
            raise BadRequest(f"JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
        if _json_depth(body) > MAX_JSON_DEPTH:
            raise BadRequest(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        return body

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": model.name, "version": model.version}

    def check_name(name: str) -> None:
        if name != model.name:
            raise BadRequest(f"model {name!r} is not served here (this server serves {model.name!r})", status=404)

    @app.get("/v1/models/{name}")
    async def model_status(name: str) -> dict[str, Any]:
        check_name(name)
        return {"model_version_status": [
            {"version": str(model.version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]}

    @app.get("/v1/models/{name}/metadata")
    async def model_metadata(name: str) -> dict[str, Any]:
        check_name(name)
        return {"model_spec": {"name": model.name, "version": str(model.version)}, "signatures": model.specs}

    @app.post("/v1/models/{name_verb}")
    async def predict(name_verb: str, request: Request) -> JSONResponse:
        name, _, verb = name_verb.partition(":")
        if verb != "predict":
            raise BadRequest(f"unsupported verb {verb!r}: only ':predict' is served", status=404)
        check_name(name)
        body = await read_json(request)
        signature, inputs, rows = parse_predict_body(body)
        if "__single__" in inputs:
            spec = model.specs.get(signature)
            if spec is None:
                raise BadRequest(f"unknown signature_name {signature!r}")
            required = [k for k in spec["inputs"] if k not in spec["defaults"]]
            if len(required) != 1:
                raise BadRequest(f"signature {signature!r} needs named inputs: {', '.join(sorted(spec['inputs']))}")
            inputs = {required[0]: inputs.pop("__single__")}
        if rows:  # row format: per-instance scalars must agree (the signature takes them as scalars)
            spec = model.specs.get(signature, {"inputs": {}})
            for key, values in list(inputs.items()):
                info = spec["inputs"].get(key)
                if info is not None and not info["shape"]:
                    if any(v != values[0] for v in values):
                        raise BadRequest(f"instances disagree on the scalar input {key!r}")
                    inputs[key] = values[0]
        out = await state.run(model.predict, signature, inputs)
        if rows:
            n = len(next(iter(out.values())))
            preds = [{k: _jsonable(v[i]) for k, v in out.items()} for i in range(n)]
            return JSONResponse({"predictions": preds})
        return JSONResponse({"outputs": {k: _jsonable(v) for k, v in out.items()}})

    def completion_inputs(body: Any) -> tuple[dict[str, Any], bool, bool]:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        allowed = {"prompt", "max_tokens", "max_new_tokens", "temperature", "top_k", "seed", "stream"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
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
        return inputs, single, stream

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await read_json(request)
        inputs, single, stream = completion_inputs(body)
        if not stream:
            out = await state.run(model.predict, "serving_default", inputs)
            texts = _jsonable(out["completions"])
            choices = [{"index": i, "text": t, "num_tokens": int(out["num_tokens"][i])} for i, t in enumerate(texts)]
            return JSONResponse({"model": model.name, "choices": choices})
        if not single:
            raise BadRequest("streaming takes a single prompt string")
        feeds = model._convert("serving_default", inputs)  # validate types and ranges before the 200 is sent
        total = int(feeds["max_new_tokens"])
        # The first chunk runs here, so a prompt the in-graph tokenizer rejects still gets a 400.
        first = await state.run(model.predict, "serving_default", stream_step(inputs, "", 0, min(STREAM_CHUNK, total)))
        return StreamingResponse(stream_events(inputs, total, first), media_type="text/event-stream")

    def stream_step(inputs: dict[str, Any], text: str, produced: int, n: int) -> dict[str, Any]:
        step = {**inputs, "prompts": [inputs["prompts"][0] + text], "max_new_tokens": n}
        if "seed" in inputs:  # a different seed per chunk, wrapped into int32
            step["seed"] = (int(inputs["seed"]) + produced + 2**31) % 2**32 - 2**31
        return step

    async def stream_events(inputs: dict[str, Any], total: int, out: dict[str, np.ndarray]) -> AsyncIterator[str]:
        """Decode in chunks (each chunk re-runs the prompt + text so far through the SavedModel); ``out`` is
        the first chunk's result. A failure after the 200 ends the stream with an error event, then [DONE]."""
        text, produced = "", 0
        try:
            while True:
                n = min(STREAM_CHUNK, total - produced)
                piece = _jsonable(out["completions"])[0]
                got = int(out["num_tokens"][0])
                if piece:
                    yield f"data: {json.dumps({'text': piece})}\n\n"
                text += piece
                produced += n
                if got < n or produced >= total:
                    break
                step = stream_step(inputs, text, produced, min(STREAM_CHUNK, total - produced))
                out = await state.run(model.predict, "serving_default", step)
        except Exception as e:  # noqa: BLE001 - the status is sent: report in the stream, then end it cleanly
            message = str(e) if isinstance(e, BadRequest) else f"internal error: {type(e).__name__}: {e}"
            yield f"data: {json.dumps({'error': message})}\n\n"
        yield "data: [DONE]\n\n"

    return app


def serve(
    export_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8501,
    max_new_tokens_cap: int = DEFAULT_MAX_NEW_TOKENS_CAP,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    workers: int = DEFAULT_WORKERS,
    log_level: str = "info",
) -> None:
    """Serve ``export_dir`` with uvicorn until interrupted (what ``tfgpt serve`` runs).

    Example:
        >>> serve("export/shakespeare", port=8501)
    """
    import uvicorn

    app = create_app(export_dir, max_new_tokens_cap=max_new_tokens_cap, max_body_bytes=max_body_bytes,
                     workers=workers)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def main(argv: list[str] | None = None) -> int:
    """``python -m tfgpt.serve.app --export DIR [--host H] [--port P]`` (tests and benchmarks use it)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m tfgpt.serve.app")
    p.add_argument("--export", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--max-new-tokens-cap", type=int, default=DEFAULT_MAX_NEW_TOKENS_CAP)
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    serve(args.export, args.host, args.port, args.max_new_tokens_cap, args.max_body_bytes, args.workers,
          args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
