"""Send prompts to a served tfgpt export: TF Serving REST (row or columnar) or gRPC, or ``tfgpt serve``.

Examples::

    python serving/client.py --model tfgpt --prompt "ROMEO:" --max-new-tokens 32            # REST, row format
    python serving/client.py --format columnar --prompt "ROMEO:" --prompt "JULIET:"
    python serving/client.py --grpc localhost:8500 --prompt "ROMEO:"                          # gRPC PredictionService

Only the body builders need no server; they are what the tests run through the SavedModel. A server
that cannot be reached, or that answers with an error, is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

PARAMS = ("max_new_tokens", "temperature", "top_k", "seed")


def _params(max_new_tokens: int | None, temperature: float | None, top_k: int | None,
            seed: int | None) -> dict[str, Any]:
    values = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "seed": seed}
    out = {k: v for k, v in values.items() if v is not None}
    if "temperature" in out:
        out["temperature"] = float(out["temperature"])
    return out


def rest_body(
    prompts: Sequence[str],
    fmt: str = "row",
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
    signature_name: str = "serving_default",
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/models/NAME:predict``.

    Row format (``instances``) puts every parameter in every instance (TF Serving stacks them, so
    they must agree); columnar (``inputs``) sends ``prompts`` as a list and parameters as scalars.

    Example:
        >>> rest_body(["ROMEO:"], "columnar", max_new_tokens=8)
        {'signature_name': 'serving_default', 'inputs': {'prompts': ['ROMEO:'], 'max_new_tokens': 8}}
    """
    params = _params(max_new_tokens, temperature, top_k, seed)
    if fmt == "row":
        return {"signature_name": signature_name, "instances": [{"prompts": p, **params} for p in prompts]}
    if fmt == "columnar":
        return {"signature_name": signature_name, "inputs": {"prompts": list(prompts), **params}}
    raise ValueError(f"fmt must be 'row' or 'columnar', got {fmt!r}")


def grpc_request(
    prompts: Sequence[str],
    model_name: str,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
    signature_name: str = "serving_default",
) -> Any:
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for ``PredictionService/Predict``."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["prompts"].CopyFrom(tf.make_tensor_proto([p.encode("utf-8") for p in prompts], tf.string))
    dtypes = {"max_new_tokens": tf.int32, "temperature": tf.float32, "top_k": tf.int32, "seed": tf.int32}
    for key, value in _params(max_new_tokens, temperature, top_k, seed).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtypes[key]))
    return request


def send_rest(url: str, body: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """POST ``body`` as JSON to ``url``; returns the decoded JSON reply."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - user-given URL
        return json.loads(resp.read())


def send_grpc(target: str, request: Any, timeout: float = 120.0) -> dict[str, Any]:
    """Call ``PredictionService.Predict`` at ``target`` (host:port); outputs as Python values."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=timeout)
    return {k: tf.make_ndarray(v).tolist() for k, v in response.outputs.items()}


class ClientError(Exception):
    """A request that got no reply, or an error reply: its message is the one line ``main`` prints."""


def _send(a: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """The reply to the request ``a`` describes; a :class:`ClientError` naming the URL if there is none."""
    if a.grpc:
        import grpc

        try:
            return send_grpc(a.grpc, grpc_request(a.prompt, a.model, **params))
        except grpc.RpcError as e:
            raise ClientError(f"gRPC {a.grpc}: {e.code().name}: {e.details()}") from None
    url = f"{a.rest}/v1/models/{a.model}:predict"
    try:
        return send_rest(url, rest_body(a.prompt, a.format, **params))
    except urllib.error.HTTPError as e:
        raise ClientError(f"POST {url}: HTTP {e.code}: {e.read().decode('utf-8', 'replace').strip()}") from None
    except (urllib.error.URLError, OSError) as e:  # refused, unknown host, timed out
        reason = getattr(e, "reason", e)
        raise ClientError(f"cannot reach {url}: {reason} (is the server running?)") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", action="append", required=True)
    p.add_argument("--model", default="tfgpt", help="model name (models.config / export name)")
    p.add_argument("--rest", default="http://localhost:8501", help="REST base URL")
    p.add_argument("--grpc", default=None, help="host:port of the gRPC endpoint (uses gRPC instead of REST)")
    p.add_argument("--format", choices=("row", "columnar"), default="row")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args(argv)
    params = dict(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k, seed=a.seed)
    try:
        reply = _send(a, params)
    except ClientError as e:
        print(f"client.py: error: {e}", file=sys.stderr)
        return 1
    json.dump(reply, sys.stdout, indent=2, default=lambda b: b.decode("utf-8", "replace"))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
