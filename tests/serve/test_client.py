"""serving/client.py request bodies, run through the exported SavedModel as TF Serving would."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from client import grpc_request, rest_body

from tfgpt.export.verify import session_run
from tfgpt.serve.app import ExportedModel, parse_predict_body


@pytest.fixture(scope="module")
def exported_model(sm_export):
    return ExportedModel(sm_export)


@pytest.mark.parametrize("fmt", ["row", "columnar"])
def test_rest_bodies_run_through_the_signature(exported_model, fmt):
    body = rest_body(["ROMEO:", "The quick"], fmt, max_new_tokens=5, temperature=0.0, top_k=0, seed=1)
    assert body["signature_name"] == "serving_default"
    if fmt == "row":
        assert body["instances"][0] == {"prompts": "ROMEO:", "max_new_tokens": 5, "temperature": 0.0, "top_k": 0,
                                        "seed": 1}
    signature, inputs, rows = parse_predict_body(body)
    assert rows == (fmt == "row")
    if rows:  # TF Serving stacks row-format instances; scalar inputs must agree
        inputs = {k: (v if k == "prompts" else v[0]) for k, v in inputs.items()}
    out = exported_model.predict(signature, inputs)
    assert out["ids"].shape == (2, 5)
    assert [c.decode() for c in out["completions"]] == [
        exported_model.predict("serving_default", {"prompts": [p], "max_new_tokens": 5})["completions"][0].decode()
        for p in ["ROMEO:", "The quick"]
    ]


def test_rest_body_without_parameters_uses_signature_defaults(exported_model):
    _, inputs, _ = parse_predict_body(rest_body(["ROMEO:"], "columnar"))
    assert exported_model.predict("serving_default", inputs)["ids"].shape == (1, 31)  # 32 clipped to the cap


def test_grpc_request_matches_the_signature_and_runs_in_the_session_loader(sm_export):
    req = grpc_request(["ROMEO:", "w"], "tiny", max_new_tokens=4, temperature=0.0, top_k=0, seed=0)
    assert req.model_spec.name == "tiny" and req.model_spec.signature_name == "serving_default"
    feeds = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
    assert feeds["prompts"].dtype == object and feeds["max_new_tokens"].dtype == np.int32
    assert feeds["temperature"].dtype == np.float32
    out = session_run(sm_export / "savedmodel" / "tiny" / "1", req.model_spec.signature_name, feeds)
    assert out["ids"].shape == (2, 4) and out["completions"].shape == (2,)


def test_bad_body_format():
    with pytest.raises(ValueError, match="row"):
        rest_body(["a"], "csv")
