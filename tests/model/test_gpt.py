"""The GPT model: parameter counts, init, tied head, KV cache, .keras round trip, JAX backend."""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from tfgpt.config import GPTConfig
from tfgpt.model import GPT

TINY = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)


def tiny(**overrides):
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(**{**TINY.to_dict(), **overrides}))
    model.build((None, None))
    return model


def test_gpt2_param_count_is_124_439_808():
    model = GPT(GPTConfig.preset("gpt2"))
    model.build((None, None))
    assert model.count_params() == 124_439_808


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False}, {"bias": False}, {"norm": "post"}])
def test_param_count_matches_config_formula(overrides):
    model = tiny(**overrides)
    assert model.count_params() == model.config.num_params()


def test_init_follows_gpt2():
    keras.utils.set_random_seed(0)
    cfg = GPTConfig(vocab_size=2000, block_size=64, n_layer=8, n_head=4, n_embd=256)
    model = GPT(cfg)
    model.build((None, None))
    std = lambda w: float(np.std(np.asarray(w)))  # noqa: E731
    assert abs(std(model.wte.embeddings) - 0.02) < 0.002
    assert abs(std(model.blocks[0].attn.c_attn.kernel) - 0.02) < 0.002
    scaled = 0.02 / math.sqrt(2 * cfg.n_layer)
    assert abs(std(model.blocks[0].attn.c_proj.kernel) - scaled) < 0.001
    assert abs(std(model.blocks[-1].mlp.c_proj.kernel) - scaled) < 0.001
    assert np.all(np.asarray(model.blocks[0].attn.c_attn.bias) == 0)


def test_tied_head_uses_the_token_embedding():
    model = tiny()
    ids = np.array([[1, 2, 3]], np.int32)
    hidden, _ = model.hidden_states(ids)
    expected = np.asarray(hidden) @ np.asarray(model.wte.embeddings).T
    np.testing.assert_allclose(np.asarray(model(ids)), expected, atol=1e-5)
    assert not any("lm_head" in w.path for w in model.weights)
    assert any("lm_head" in w.path for w in tiny(tie_embeddings=False).weights)


def test_logits_are_causal_and_float32():
    model = tiny()
    ids = np.random.default_rng(0).integers(0, 50, (2, 12)).astype(np.int32)
    logits = np.asarray(model(ids))
    assert logits.shape == (2, 12, 50) and logits.dtype == np.float32
    ids2 = ids.copy()
    ids2[:, 8:] = 0
    np.testing.assert_allclose(np.asarray(model(ids2))[:, :8], logits[:, :8], atol=1e-5)


def test_init_cache_is_per_layer_heads_first():
    cache = tiny().init_cache(2, 12)
    assert isinstance(cache, list) and len(cache) == 2  # n_layer
    assert [tuple(c.shape) for c in cache] == [(2, 2, 2, 12, 16)] * 2  # [batch, 2, n_head, max_len, head_dim]
    assert all(np.asarray(c).max() == 0 and "float32" in str(c.dtype) for c in cache)
    assert tuple(tiny().init_cache(1)[0].shape) == (1, 2, 2, 16, 16)  # block_size by default


@pytest.mark.parametrize("mode", ["slice", "scatter"])
def test_cached_decoding_matches_full_forward(mode):
    model = tiny()
    ids = np.random.default_rng(1).integers(0, 50, (2, 10)).astype(np.int32)
    full = np.asarray(model(ids))
    cache = model.init_cache(2, 16)
    logits, cache = model(ids[:, :7], cache=cache, cache_index=0, cache_update=mode)
    steps = [np.asarray(logits)]
    for t in range(7, 10):
        logits, cache = model(ids[:, t : t + 1], cache=cache, cache_index=t, cache_update=mode)
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)
    assert [tuple(c.shape) for c in cache] == [(2, 2, 2, 16, 16)] * 2


def test_scatter_decode_step_traces_without_xla_ops():
    """What the SavedModel for TF Serving (run without XLA) needs from a decode step."""
    import tensorflow as tf

    model = tiny()
    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int32)
    full = np.asarray(model(ids))
    _, cache = model(ids[:, :3], cache=model.init_cache(2, 8), cache_index=0)
    step = tf.function(lambda t, c: model(t, cache=c, cache_index=tf.constant(3), cache_update="scatter"))
    layer_spec = tf.TensorSpec([2, 2, 2, 8, 16])
    concrete = step.get_concrete_function(tf.TensorSpec([2, 1], tf.int32), [layer_spec, layer_spec])
    ops = {op.type for op in concrete.graph.get_operations()}
    assert "TensorScatterUpdate" in ops and not any(o.startswith("Xla") for o in ops), sorted(ops)
    logits, _ = concrete(tf.constant(ids[:, 3:]), [tf.constant(c) for c in cache])
    np.testing.assert_allclose(np.asarray(logits)[:, 0], full[:, 3], atol=1e-5)


def test_a_cache_not_in_the_model_layout_is_refused_clearly():
    model, ids = tiny(), np.zeros((1, 2), np.int32)
    with pytest.raises(ValueError, match=r"cache must be a list of 2 per-layer .*got shape \(1, 2, 2, 8, 32\)"):
        model(ids, cache=np.zeros((1, 2, 2, 8, 32), np.float32), cache_index=0)
    with pytest.raises(ValueError, match="cache must be a list of 2 .*got a list of 1"):
        model(ids, cache=model.init_cache(1, 8)[:1], cache_index=0)
    with pytest.raises(ValueError, match=r"cache must be \[batch, 2, heads=2"):
        model(ids, cache=[np.zeros((1, 2, 8, 32), np.float32)] * 2, cache_index=0)


def test_cache_longer_than_block_size_is_refused():
    with pytest.raises(ValueError, match="block_size"):
        tiny().init_cache(1, 17)


def test_input_longer_than_block_size_is_refused_clearly():
    model, ids = tiny(), np.zeros((1, 17), np.int32)
    with pytest.raises(ValueError, match="sequence length 17 exceeds block_size 16"):
        model(ids)
    # under XLA the position lookup would silently clamp instead of failing: refused at trace time
    import tensorflow as tf

    with pytest.raises(ValueError, match="exceeds block_size"):
        tf.function(model, jit_compile=True)(ids)
    assert tuple(model(ids[:, :16]).shape) == (1, 16, 50)


def test_keras_round_trip_safe_mode(tmp_path):
    model = tiny(norm="post", tie_embeddings=False, dropout=0.1)
    ids = np.array([[4, 5, 6, 7]], np.int32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, GPT) and loaded.config == model.config
    np.testing.assert_allclose(np.asarray(loaded(ids)), np.asarray(model(ids)), atol=0)


def test_mixed_precision_cache_and_logits():
    keras.utils.set_random_seed(0)
    model = GPT(TINY, dtype="mixed_bfloat16")
    ids = np.array([[1, 2, 3]], np.int32)
    cache = model.init_cache(1, 8)
    assert all("bfloat16" in str(c.dtype) for c in cache)
    logits, cache = model(ids, cache=cache, cache_index=0)
    assert "float32" in str(logits.dtype) and all("bfloat16" in str(c.dtype) for c in cache)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(model(ids)), atol=0.05)  # bf16 rounding only
    assert model.wte.embeddings.dtype == "float32"


JAX_SCRIPT = textwrap.dedent(
    """
    import json, numpy as np, keras
    from tfgpt.config import GPTConfig
    from tfgpt.model import GPT
    from tfgpt.generate import generate_ids
    assert keras.backend.backend() == "jax"
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32))
    ids = np.array([[3, 1, 4, 1, 5]], np.int32)

    def forward(seq):  # right-padded to block_size: one shape, so eager JAX compiles each op once, not per length
        padded = np.zeros((1, 16), np.int32)
        padded[:, :seq.shape[1]] = seq
        return np.asarray(model(padded))[:, :seq.shape[1]]  # causal: the padding cannot change these

    full = forward(ids)
    cache = model.init_cache(1, 16)
    logits, cache = model(ids[:, :3], cache=cache, cache_index=0)
    step, cache = model(ids[:, 3:4], cache=cache, cache_index=3)
    cached_err = float(np.abs(np.asarray(step)[:, 0] - full[:, 3]).max())
    _, cache = model(ids[:, :3], cache=model.init_cache(1, 16), cache_index=0, cache_update="scatter")
    step, cache = model(ids[:, 3:4], cache=cache, cache_index=3, cache_update="scatter")
    scatter_err = float(np.abs(np.asarray(step)[:, 0] - full[:, 3]).max())
    greedy = generate_ids(model, ids, 20, temperature=0)
    naive = ids
    for _ in range(20):
        nxt = forward(naive[:, -16:])[:, -1].argmax(-1).astype(np.int32)
        naive = np.concatenate([naive, nxt[:, None]], 1)
    s1 = generate_ids(model, ids, 8, temperature=1.0, top_k=5, seed=7)
    s2 = generate_ids(model, ids, 8, temperature=1.0, top_k=5, seed=7)
    print(json.dumps({"cached_err": cached_err, "scatter_err": scatter_err,
                      "greedy_equal": bool((greedy == naive[:, 5:]).all()), "sample_repro": bool((s1 == s2).all())}))
    """
)


def test_jax_backend_forward_and_cached_decoding():
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["cached_err"] < 1e-4 and result["scatter_err"] < 1e-4
    assert result["greedy_equal"] and result["sample_repro"]


def test_get_config_round_trip():
    model = tiny(norm="post", dropout=0.1)
    cfg = GPT.from_config(model.get_config()).get_config()
    assert (cfg["vocab_size"], cfg["block_size"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"]) == (50, 16, 2, 2, 32)
    assert (cfg["norm"], cfg["dropout"], cfg["bias"], cfg["tie_embeddings"]) == ("post", 0.1, True, True)
