"""serving/client.py request bodies, read by the server's own parsers and run as TF Serving would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from client import grpc_request, rest_body

import tfgpt
from tfgpt.export.verify import session_run
from tfgpt.serve.rest import PredictRequest, named_inputs, parse_predict_body

from .helpers import free_port

PROMPTS = ["ROMEO:", "The quick"]


def test_row_body_is_one_instance_per_prompt_with_the_parameters_repeated():
    body = rest_body(PROMPTS, "row", max_new_tokens=5, temperature=0, top_k=0, seed=1)
    params = {"max_new_tokens": 5, "temperature": 0.0, "top_k": 0, "seed": 1}
    assert body == {"signature_name": "serving_default",
                    "instances": [{"prompts": "ROMEO:", **params}, {"prompts": "The quick", **params}]}
    assert isinstance(body["instances"][0]["temperature"], float)  # the signature's input is float32


@pytest.mark.parametrize("fmt", ["row", "columnar"])
def test_rest_bodies_parse_to_the_signature_inputs_and_match_keras(exported_model, keras_model, fmt):
    body = rest_body(PROMPTS, fmt, max_new_tokens=5, temperature=0.0, top_k=0, seed=1)
    request = parse_predict_body(body)
    assert request.signature == "serving_default" and request.row_format == (fmt == "row")
    inputs = named_inputs(request, exported_model.specs)
    assert inputs == {"prompts": PROMPTS, "max_new_tokens": 5, "temperature": 0.0, "top_k": 0, "seed": 1}
    out = exported_model.predict(request.signature, inputs)
    assert out["ids"].shape == (2, 5)
    model, tok = keras_model
    expected = [tfgpt.generate(model, tok, p, max_new_tokens=5, temperature=0) for p in PROMPTS]
    assert [c.decode() for c in out["completions"]] == expected


def test_rest_body_without_parameters_uses_signature_defaults(exported_model):
    request = parse_predict_body(rest_body(["ROMEO:"], "columnar"))
    assert request == PredictRequest("serving_default", {"prompts": ["ROMEO:"]}, None, row_format=False)
    assert exported_model.predict("serving_default", request.inputs)["ids"].shape == (1, 31)  # 32 clipped to the cap


def test_grpc_request_matches_the_signature_and_runs_in_the_session_loader(tiny_export, keras_model):
    from tensorflow_serving.apis import predict_pb2

    req = grpc_request(["ROMEO:", "w"], "tiny", max_new_tokens=4, temperature=0.0, top_k=0, seed=0)
    assert isinstance(req, predict_pb2.PredictRequest)
    assert req.model_spec.name == "tiny" and req.model_spec.signature_name == "serving_default"
    feeds = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
    assert sorted(feeds) == ["max_new_tokens", "prompts", "seed", "temperature", "top_k"]
    assert feeds["prompts"].tolist() == [b"ROMEO:", b"w"] and feeds["prompts"].dtype == object
    assert feeds["max_new_tokens"].dtype == np.int32 and int(feeds["max_new_tokens"]) == 4
    assert feeds["temperature"].dtype == np.float32
    out = session_run(tiny_export / "savedmodel" / "tiny" / "1", req.model_spec.signature_name, feeds)
    assert out["ids"].shape == (2, 4) and out["completions"].shape == (2,)
    model, tok = keras_model
    assert out["completions"][0].decode() == tfgpt.generate(model, tok, "ROMEO:", max_new_tokens=4, temperature=0)


def test_bad_body_format():
    with pytest.raises(ValueError, match="row"):
        rest_body(["a"], "csv")


def _client(*args: str) -> subprocess.CompletedProcess:
    client = Path(__file__).resolve().parents[2] / "serving" / "client.py"
    return subprocess.run([sys.executable, str(client), *args], capture_output=True, text=True, timeout=60)


def test_no_server_is_one_line_naming_the_url():
    port = free_port()  # nobody listens on it
    done = _client("--rest", f"http://127.0.0.1:{port}", "--model", "tiny", "--prompt", "ROMEO:")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"client.py: error: cannot reach http://127.0.0.1:{port}/v1/models/tiny:predict: "
                           "[Errno 111] Connection refused (is the server running?)\n")


def test_an_error_reply_is_one_line_with_the_servers_message(server):
    done = _client("--rest", server, "--model", "other", "--prompt", "ROMEO:")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"client.py: error: POST {server}/v1/models/other:predict: HTTP 404: "
                           '{"error":"model \'other\' is not served here (this server serves \'tiny\')"}\n')
