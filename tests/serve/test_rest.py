"""tfgpt.serve.rest: TF Serving REST bodies (row and columnar) parsed, named and typed as TF Serving would."""

from __future__ import annotations

import numpy as np
import pytest

from tfgpt.serve.errors import BadRequest
from tfgpt.serve.rest import PredictRequest, json_to_array, named_inputs, parse_predict_body, predict_reply

SCALAR_I32 = {"dtype": "int32", "shape": []}
# The specs signature_specs reads from a tfgpt export (outputs left out: the parsers do not read them).
SPECS = {
    "serving_default": {
        "inputs": {"max_new_tokens": SCALAR_I32, "prompts": {"dtype": "string", "shape": [-1]},
                   "seed": SCALAR_I32, "temperature": {"dtype": "float32", "shape": []}, "top_k": SCALAR_I32},
        "defaults": {"max_new_tokens": 32, "seed": 0, "temperature": 0.0, "top_k": 0},
    },
    "logits": {"inputs": {"ids": {"dtype": "int32", "shape": [-1, -1]}}, "defaults": {}},
    "two_required": {"inputs": {"a": SCALAR_I32, "b": SCALAR_I32}, "defaults": {}},
}


def test_columnar_body_keeps_its_inputs_as_given():
    body = {"inputs": {"prompts": ["a", "b"], "max_new_tokens": 4}}
    assert parse_predict_body(body) == PredictRequest("serving_default", body["inputs"], None, row_format=False)


def test_row_body_stacks_the_instances_into_columns():
    rows = [{"prompts": "a", "seed": 1}, {"prompts": "b", "seed": 1}]
    body = {"signature_name": "serving_default", "instances": rows}
    assert parse_predict_body(body) == PredictRequest(
        "serving_default", {"prompts": ["a", "b"], "seed": [1, 1]}, None, row_format=True)


@pytest.mark.parametrize(("body", "unnamed", "row_format"), [
    ({"instances": [[1, 2]]}, [[1, 2]], True),
    ({"inputs": [[1, 2]]}, [[1, 2]], False),
    ({"inputs": None}, None, False),  # JSON null is a value, not "no input": the typed check rejects it later
])
def test_plain_values_are_one_unnamed_input(body, unnamed, row_format):
    assert parse_predict_body({"signature_name": "logits", **body}) == PredictRequest(
        "logits", None, unnamed, row_format)


@pytest.mark.parametrize(("body", "message"), [
    ([1, 2], "the request body must be a JSON object"),
    ({"signature_name": 3, "inputs": {}}, "signature_name must be a string"),
    ({"instances": [], "inputs": {}}, "give exactly one of 'instances' (row format) or 'inputs' (columnar format)"),
    ({"signature_name": "logits"}, "give exactly one of 'instances' (row format) or 'inputs' (columnar format)"),
    ({"instances": []}, "'instances' must be a non-empty list"),
    ({"instances": {"prompts": "a"}}, "'instances' must be a non-empty list"),
    ({"instances": [{"prompts": "a"}, {"prompt": "b"}]}, "every instance must have the same keys"),
    ({"instances": [{"prompts": "a"}, "b"]}, "instances mix objects and plain values"),
])
def test_bad_bodies(body, message):
    with pytest.raises(BadRequest) as e:
        parse_predict_body(body)
    assert str(e.value) == message and e.value.status == 400


def test_unnamed_input_goes_to_the_one_required_input():
    assert named_inputs(parse_predict_body({"signature_name": "logits", "inputs": [[5, 6]]}), SPECS) == {
        "ids": [[5, 6]]}
    assert named_inputs(parse_predict_body({"instances": ["a", "b"]}), SPECS) == {"prompts": ["a", "b"]}


@pytest.mark.parametrize(("signature", "message"), [
    ("nope", "unknown signature_name 'nope'"),
    ("two_required", "signature 'two_required' needs named inputs: a, b"),
])
def test_unnamed_input_needs_a_signature_with_one_required_input(signature, message):
    with pytest.raises(BadRequest) as e:
        named_inputs(parse_predict_body({"signature_name": signature, "inputs": [1]}), SPECS)
    assert str(e.value) == message


def test_row_format_scalars_must_agree_and_become_one_value():
    rows = [{"prompts": "a", "max_new_tokens": 4, "temperature": 0.5}, {"prompts": "b", "max_new_tokens": 4,
                                                                        "temperature": 0.5}]
    request = parse_predict_body({"instances": rows})
    assert named_inputs(request, SPECS) == {"prompts": ["a", "b"], "max_new_tokens": 4, "temperature": 0.5}
    assert request.inputs == {"prompts": ["a", "b"], "max_new_tokens": [4, 4], "temperature": [0.5, 0.5]}  # kept
    rows[1]["max_new_tokens"] = 5
    with pytest.raises(BadRequest, match="instances disagree on the scalar input 'max_new_tokens'"):
        named_inputs(parse_predict_body({"instances": rows}), SPECS)


def test_columnar_and_unknown_inputs_pass_through_for_the_model_to_check():
    request = parse_predict_body({"inputs": {"prompts": ["a"], "max_new_tokens": [4, 5], "colour": 1}})
    assert named_inputs(request, SPECS) == {"prompts": ["a"], "max_new_tokens": [4, 5], "colour": 1}
    rows = parse_predict_body({"signature_name": "nope", "instances": [{"x": 1}, {"x": 2}]})
    assert named_inputs(rows, SPECS) == {"x": [1, 2]}


def test_predict_reply_rows_and_columns():
    out = {"ids": np.array([[3, -1], [4, 5]], np.int32), "completions": np.array([b"ab", b"\xff"], dtype=object)}
    assert predict_reply(out, row_format=True) == {"predictions": [
        {"ids": [3, -1], "completions": "ab"}, {"ids": [4, 5], "completions": "\ufffd"}]}
    assert predict_reply(out, row_format=False) == {"outputs": {"ids": [[3, -1], [4, 5]],
                                                                "completions": ["ab", "\ufffd"]}}


def test_json_to_array_types_the_values():
    strings = json_to_array("prompts", ["a", "é"], {"dtype": "string", "shape": [-1]})
    assert strings.dtype == object and strings.tolist() == [b"a", b"\xc3\xa9"]
    ids = json_to_array("ids", [[1, 2, 3]], {"dtype": "int32", "shape": [-1, -1]})
    assert ids.dtype == np.int32 and ids.tolist() == [[1, 2, 3]]
    t = json_to_array("temperature", 1, {"dtype": "float32", "shape": []})
    assert t.dtype == np.float32 and t.shape == () and float(t) == 1.0
    assert int(json_to_array("n", -(2**31), SCALAR_I32)) == -(2**31)


FLOAT = {"dtype": "float32", "shape": []}
IDS = {"dtype": "int32", "shape": [-1, -1]}
PROMPTS = {"dtype": "string", "shape": [-1]}


D1 = "a 1-D list (shape [-1], -1 = any)"
D2 = "a 2-D list (shape [-1, 2], -1 = any)"


@pytest.mark.parametrize(("value", "info", "message"), [
    ("a", PROMPTS, f"input 'x' must be {D1} of strings"),
    ([["a"]], PROMPTS, f"input 'x' must be {D1} of strings"),
    (["\ud800"], PROMPTS, "input 'x' holds a string that is not valid UTF-8"),
    (True, SCALAR_I32, "input 'x' must be a scalar of integers"),
    (1.5, SCALAR_I32, "input 'x' must be a scalar of integers"),
    ("1", FLOAT, "input 'x' must be a scalar of numbers"),
    (2**31, SCALAR_I32, "input 'x' is out of the int32 range [-2147483648, 2147483647]"),
    (float("nan"), FLOAT, "input 'x' is out of the float32 range [-3.4028234663852886e+38, 3.4028234663852886e+38]"),
    (1e39, FLOAT, "input 'x' is out of the float32 range [-3.4028234663852886e+38, 3.4028234663852886e+38]"),
    ([[1, 2], [3]], IDS, "input 'x' is ragged: its lists at one depth must have equal lengths"),
    ([[]], IDS, "input 'x' is empty"),
    ([], PROMPTS, "input 'x' is empty"),  # was the graph's "Graph execution error:"
    ([1, 2], {"dtype": "int32", "shape": [-1, 2]}, f"input 'x' must be {D2} of integers"),
    ([[1, 2, 3]], {"dtype": "int32", "shape": [-1, 2]}, f"input 'x' has shape [1, 3], expected {D2}"),
])
def test_json_to_array_rejects_with_a_message_naming_the_input(value, info, message):
    with pytest.raises(BadRequest) as e:
        json_to_array("x", value, info)
    assert str(e.value) == message
