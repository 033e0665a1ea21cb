"""TFLite export: builtins only, prefill/decode signatures, runner equals Keras, int8 size."""

from __future__ import annotations

import numpy as np
import pytest

import tfgpt
from tfgpt.errors import ExportError
from tfgpt.export.tflite import flex_ops, op_names
from tfgpt.export.tflite_runner import TFLiteGenerator, generate_tflite


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


def test_float_greedy_equals_keras_and_int8_reported(exported, loaded):
    model, tok = loaded
    out, info = exported
    for prompt in ["ROMEO:", "The ", "w"]:
        text = generate_tflite(out / "tflite" / "model.tflite", out / "tokenizer", prompt, 20, temperature=0)
        assert text == tfgpt.generate(model, tok, prompt, max_new_tokens=20, temperature=0)
    v = info["verification"]["tflite"]
    assert v["model.tflite"]["greedy_tokens_equal"] is True
    assert "greedy_tokens_equal" in v["model_int8.tflite"]
    for p in v["model_int8.tflite"]["prompts"]:
        assert p["first_divergence"] is None or 0 <= p["first_divergence"] < p["tokens"]


def test_runner_never_produces_padded_vocabulary_ids(padded_exported):
    out, info = padded_exported
    model, tok = tfgpt.load(out.parent / "run")
    path = out / "tflite" / "model.tflite"
    for prompt in ["ROMEO:", "hello"]:
        text = generate_tflite(path, None, prompt, 8, temperature=0)
        assert text == tfgpt.generate(model, tok, prompt, max_new_tokens=8, temperature=0)
    assert info["verification"]["tflite"]["model.tflite"]["greedy_tokens_equal"] is True
    gen = TFLiteGenerator(path)
    assert gen.vocab_size == tok.vocab_size + 40
    assert max(gen.generate_ids(tok.encode("hello"), 4, temperature=0)) >= tok.vocab_size  # unmasked
    for seed in range(3):
        ids = gen.generate_ids(tok.encode("hello"), 8, temperature=1.0, seed=seed, vocab_limit=tok.vocab_size)
        assert max(ids) < tok.vocab_size
    with pytest.raises(tfgpt.errors.GenerationError, match="vocab_limit must be in"):
        gen.generate_ids([1], 2, vocab_limit=0)


def test_runner_slides_past_block_size_and_samples(exported, loaded):
    out, _ = exported
    path = out / "tflite" / "model.tflite"
    text = generate_tflite(path, None, "ROMEO:", 40, temperature=0)  # 6 + 40 > block_size 32
    assert len(text) == 40
    a = generate_tflite(path, None, "ROMEO:", 10, temperature=0.8, top_k=5, seed=1)
    assert a == generate_tflite(path, None, "ROMEO:", 10, temperature=0.8, top_k=5, seed=1)
    stop = text[3]
    assert generate_tflite(path, None, "ROMEO:", 10, temperature=0, stop=stop) == text[: text.index(stop)]


def test_runner_bad_input(exported, tmp_path):
    out, _ = exported
    with pytest.raises(ExportError, match="not found"):
        generate_tflite(tmp_path / "missing.tflite", out / "tokenizer", "ROMEO:", 5)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ExportError, match="not a valid TFLite model"):
        TFLiteGenerator(bad)
    from tfgpt.errors import GenerationError

    with pytest.raises(GenerationError, match="not valid UTF-8"):
        generate_tflite(out / "tflite" / "model.tflite", out / "tokenizer", b"\xff", 5)


def test_no_cache_sized_constant_in_the_files(exported):
    """The prefill's zero cache is filled at run time, not stored as a constant buffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    out, info = exported
    cache = tuple(info["tflite"]["cache_shape"])
    shapes = {cache, (1, *cache[2:]), cache[:1] + cache[2:]}
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
