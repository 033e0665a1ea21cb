"""TF Serving's REST predict body, read as TF Serving reads it: row or columnar format, typed and checked.

A body is ``{"instances": [...]}`` (row format: one object per example, stacked into columns) or
``{"inputs": ...}`` (columnar), with an optional ``"signature_name"``. Either may name its inputs
(objects) or give a single unnamed one, which goes to the signature's one required input. Each JSON
value becomes a numpy array only after its nesting, raggedness and dtype range are checked, so a
bad request gets a 400 naming the input instead of a TensorFlow error.

Example:
    >>> req = parse_predict_body({"instances": [{"prompts": "ROMEO:", "max_new_tokens": 4}]})
    >>> req.inputs, req.row_format
    ({'prompts': ['ROMEO:'], 'max_new_tokens': [4]}, True)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from tfgpt.serve.errors import BadRequest
from tfgpt.serve.jsonio import jsonable, nested_map


class PredictRequest(NamedTuple):
    """A parsed predict body. ``inputs`` is None when the body gives one unnamed input (in ``unnamed``)."""

    signature: str
    inputs: dict[str, Any] | None
    unnamed: Any
    row_format: bool


def parse_predict_body(body: Any) -> PredictRequest:
    """TF Serving REST body → :class:`PredictRequest`; row format stacks the instances into columns.

    Example:
        >>> parse_predict_body({"signature_name": "logits", "instances": [[1, 2, 3]]})
        PredictRequest(signature='logits', inputs=None, unnamed=[[1, 2, 3]], row_format=True)
        >>> parse_predict_body({"inputs": {"prompts": ["a"]}}).inputs
        {'prompts': ['a']}
    """
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
        if isinstance(inputs, dict):
            return PredictRequest(signature, inputs, None, row_format=False)
        return PredictRequest(signature, None, inputs, row_format=False)
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
        raise BadRequest("'instances' must be a non-empty list")
    if all(isinstance(r, dict) for r in rows):
        keys = set(rows[0])
        if any(set(r) != keys for r in rows):
            raise BadRequest("every instance must have the same keys")
        return PredictRequest(signature, {k: [r[k] for r in rows] for k in rows[0]}, None, row_format=True)
    if any(isinstance(r, dict) for r in rows):
        raise BadRequest("instances mix objects and plain values")
    return PredictRequest(signature, None, rows, row_format=True)


def named_inputs(request: PredictRequest, specs: dict[str, Any]) -> dict[str, Any]:
    """The request's inputs by name, as the signature takes them.

    An unnamed input goes to the signature's one required input. In row format, an input the
    signature takes as a scalar was repeated per instance: the instances must agree on it, and it
    becomes that one value.

    Example:
        >>> specs = {"serving_default": {"inputs": {"prompts": {"shape": [-1]}, "seed": {"shape": []}},
        ...                              "defaults": {"seed": 0}}}
        >>> named_inputs(parse_predict_body({"instances": [{"prompts": "a", "seed": 3},
        ...                                                {"prompts": "b", "seed": 3}]}), specs)
        {'prompts': ['a', 'b'], 'seed': 3}
        >>> named_inputs(parse_predict_body({"instances": ["a", "b"]}), specs)
        {'prompts': ['a', 'b']}
    """
    signature, inputs = request.signature, request.inputs
    if inputs is None:
        spec = specs.get(signature)
        if spec is None:
            raise BadRequest(f"unknown signature_name {signature!r}")
        required = [k for k in spec["inputs"] if k not in spec["defaults"]]
        if len(required) != 1:
            raise BadRequest(f"signature {signature!r} needs named inputs: {', '.join(sorted(spec['inputs']))}")
        inputs = {required[0]: request.unnamed}
    if not request.row_format:
        return inputs
    spec_inputs = specs.get(signature, {"inputs": {}})["inputs"]
    out = dict(inputs)
    for key, values in inputs.items():
        info = spec_inputs.get(key)
        if info is not None and not info["shape"]:
            if any(v != values[0] for v in values):
                raise BadRequest(f"instances disagree on the scalar input {key!r}")
            out[key] = values[0]
    return out


def predict_reply(outputs: dict[str, Any], row_format: bool) -> dict[str, Any]:
    """The reply body: ``{"predictions": [one object per example]}`` (row) or ``{"outputs": {...}}`` (columnar).

    Example:
        >>> out = {"completions": np.array([b"hi", b"yo"], dtype=object), "num_tokens": np.array([2, 2])}
        >>> predict_reply(out, row_format=True)
        {'predictions': [{'completions': 'hi', 'num_tokens': 2}, {'completions': 'yo', 'num_tokens': 2}]}
        >>> predict_reply(out, row_format=False)
        {'outputs': {'completions': ['hi', 'yo'], 'num_tokens': [2, 2]}}
    """
    if row_format:
        n = len(next(iter(outputs.values())))
        return {"predictions": [{k: jsonable(v[i]) for k, v in outputs.items()} for i in range(n)]}
    return {"outputs": {k: jsonable(v) for k, v in outputs.items()}}


def json_to_array(key: str, value: Any, info: dict[str, Any]) -> np.ndarray:
    """The JSON ``value`` of input ``key`` as a numpy array of ``info``'s dtype and shape, or a 400 naming ``key``.

    ``info`` is the signature's ``{"dtype": "string" | "int32" | "int64" | "float32", "shape": [...]}``
    (-1 = any length). Strings become UTF-8 bytes; numbers must be in the dtype's range (NaN is not).

    Example:
        >>> json_to_array("ids", [[1, 2]], {"dtype": "int32", "shape": [-1, -1]})
        array([[1, 2]], dtype=int32)
        >>> json_to_array("ids", [[2**40]], {"dtype": "int32", "shape": [-1, -1]})
        Traceback (most recent call last):
        ...
        tfgpt.serve.errors.BadRequest: input 'ids' is out of the int32 range [-2147483648, 2147483647]
    """
    dtype, shape = info["dtype"], info["shape"]
    if dtype == "string":
        if not _is_nested_of(value, str, len(shape)):
            raise BadRequest(f"input {key!r} must be {_describe(shape)} of strings")
        try:
            arr = np.asarray(nested_map(value, lambda s: s.encode("utf-8")), dtype=object)
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
        arr = np.asarray(value, dtype=_NP_DTYPES[dtype])
    if arr.ndim != len(shape) or any(s not in (-1, d) for s, d in zip(shape, arr.shape, strict=True)):
        raise BadRequest(f"input {key!r} has shape {list(arr.shape)}, expected {_describe(shape)}")
    if arr.ndim and arr.size == 0:
        raise BadRequest(f"input {key!r} is empty")
    return arr


_NP_DTYPES = {"int32": np.int32, "int64": np.int64, "float32": np.float32}


def _describe(shape: list[int]) -> str:
    return "a scalar" if not shape else f"a {len(shape)}-D list (shape {shape}, -1 = any)"


def _is_nested_of(value: Any, kind: type, depth: int) -> bool:
    """Whether ``value`` is lists nested ``depth`` deep with ``kind`` leaves (bools are not numbers)."""
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
