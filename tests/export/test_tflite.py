"""tfgpt.export.tflite: builtins only, prefill/decode signatures and cache layout, logits equal Keras."""

from __future__ import annotations

import numpy as np

from tfgpt.export.tflite import flex_ops, op_names
from tfgpt.export.tflite_runner import TFLiteGenerator


def test_builtins_only(exported):
    out, info = exported
    for name in ("model.tflite", "model_int8.tflite"):
        path = out / "tflite" / name
        assert flex_ops(path) == []
        ops = op_names(path)
        assert "DYNAMIC_UPDATE_SLICE" in ops and not any(o.startswith("Flex") for o in ops)
    assert set(info["tflite"]["files"]) == {"tflite/model.tflite", "tflite/model_int8.tflite"}
    assert info["tflite"]["files"]["tflite/model.tflite"]["size_bytes"] == (out / "tflite/model.tflite").stat().st_size


def test_signatures_and_cache_shape(exported):
    out, _ = exported
    gen = TFLiteGenerator(out / "tflite" / "model.tflite")
    sigs = gen.interpreter.get_signature_list()
    assert sigs["prefill"]["inputs"] == ["ids"] and sorted(sigs["prefill"]["outputs"]) == ["cache", "logits"]
    assert sorted(sigs["decode"]["inputs"]) == ["cache", "index", "token"]
    assert gen.cache_shape == (1, 2, 2, 32, 32)


def test_prefill_decode_logits_match_keras(exported, loaded):
    model, tok = loaded
    out, _ = exported
    gen = TFLiteGenerator(out / "tflite" / "model.tflite")
    ids = tok.encode("ROMEO: hi")
    r = gen.prefill(ids=np.array([ids], np.int32))
    full = np.asarray(model(np.array([ids + [3]], np.int32)))
    np.testing.assert_allclose(r["logits"][0], full[0, len(ids) - 1], atol=1e-4)
    d = gen.decode(token=np.array([[3]], np.int32), index=np.array(len(ids), np.int32), cache=r["cache"])
    np.testing.assert_allclose(d["logits"][0], full[0, -1], atol=1e-4)


def test_no_cache_sized_constant_in_the_files(exported):
    """The prefill's zero cache is filled at run time, not stored as a constant buffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    out, info = exported
    cache = tuple(info["tflite"]["cache_shape"])
    heads = info["source"]["model"]["n_head"]
    heads_first = (1, 2, heads, cache[3], cache[4] // heads)  # one layer in the model's own layout
    shapes = {cache, (1, *cache[2:]), cache[:1] + cache[2:], heads_first}
    for name in ("model.tflite", "model_int8.tflite"):
        data = (out / "tflite" / name).read_bytes()
        fb = schema.Model.GetRootAsModel(data, 0)
        for s in range(fb.SubgraphsLength()):
            graph = fb.Subgraphs(s)
            for t in range(graph.TensorsLength()):
                tensor = graph.Tensors(t)
                shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
                if shape in shapes and tensor.Buffer():
                    buf = fb.Buffers(tensor.Buffer())
                    assert buf.DataLength() == 0 and buf.Size() <= 1, (name, tensor.Name(), shape)


def test_decode_takes_a_cropped_cache(exported):
    """decode accepts any cache length ≤ block_size; the runner crops to prompt + new tokens (rounded)."""
    out, _ = exported
    for name in ("model.tflite", "model_int8.tflite"):
        gen = TFLiteGenerator(out / "tflite" / name)
        assert gen.dynamic_cache and gen.cache_length(5, 3) == min(32, 64) and gen.cache_length(20, 100) == 32
        r = gen.prefill(ids=np.array([[1, 2, 3, 4]], np.int32))
        full = gen.decode(token=np.array([[3]], np.int32), index=np.array(4, np.int32), cache=r["cache"])
        short = gen.decode(token=np.array([[3]], np.int32), index=np.array(4, np.int32),
                           cache=np.ascontiguousarray(r["cache"][:, :, :, :8]))
        assert short["cache"].shape[3] == 8
        np.testing.assert_allclose(short["logits"], full["logits"], atol=1e-5)
        np.testing.assert_array_equal(short["cache"], full["cache"][:, :, :, :8])
