"""CausalSelfAttention: the mask, a NumPy reference, the heads-first cache in both write modes, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfgpt.model.attention import CACHE_UPDATES, CausalSelfAttention, causal_mask, update_cache


def reference_attention(attn: CausalSelfAttention, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPT-2 attention in NumPy from the layer's weights: output ``[b, t, width]``, keys and values
    ``[b, heads, t, head_dim]``."""
    b, t, width = x.shape
    h, d = attn.num_heads, width // attn.num_heads
    qkv = x @ np.asarray(attn.c_attn.kernel) + np.asarray(attn.c_attn.bias)
    q, k, v = (a.reshape(b, t, h, d).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=-1))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    y = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, width)
    return y @ np.asarray(attn.c_proj.kernel) + np.asarray(attn.c_proj.bias), k, v


def built(num_heads: int, width: int, seed: int) -> CausalSelfAttention:
    keras.utils.set_random_seed(seed)
    attn = CausalSelfAttention(num_heads=num_heads)
    attn.build((None, None, width))
    rng = np.random.default_rng(seed)
    for w in attn.weights:  # non-zero biases too, so a bias bug cannot hide
        w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))
    return attn


def test_mask_is_lower_triangular_with_offset():
    m = np.asarray(causal_mask(3, 5, start=2))
    expected = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], np.float32)
    np.testing.assert_array_equal(m, expected)


def test_output_equals_numpy_reference():
    attn = built(num_heads=4, width=32, seed=1)
    x = np.random.default_rng(0).normal(size=(2, 7, 32)).astype("float32")
    expected, _, _ = reference_attention(attn, x)
    np.testing.assert_allclose(np.asarray(attn(x)), expected, atol=1e-5)


def test_future_tokens_do_not_change_the_past():
    keras.utils.set_random_seed(1)
    attn = CausalSelfAttention(num_heads=4)
    x = np.random.default_rng(0).normal(size=(2, 10, 32)).astype("float32")
    y = np.asarray(attn(x))
    x2 = x.copy()
    x2[:, 6:] = 100.0
    y2 = np.asarray(attn(x2))
    np.testing.assert_allclose(y[:, :6], y2[:, :6], atol=1e-6)
    assert np.abs(y[:, 6:] - y2[:, 6:]).max() > 1e-3


@pytest.mark.parametrize("mode", CACHE_UPDATES)
def test_cached_chunks_equal_the_uncached_pass(mode):
    attn = built(num_heads=2, width=16, seed=2)
    x = np.random.default_rng(1).normal(size=(2, 9, 16)).astype("float32")
    expected, k, v = reference_attention(attn, x)
    cache = np.zeros((2, 2, 2, 12, 8), np.float32)  # [batch, 2, heads, max_len, head_dim]
    outs = []
    for start, stop in ((0, 5), (5, 6), (6, 9)):
        y, cache = attn(x[:, start:stop], cache=cache, cache_index=start, cache_update=mode)
        outs.append(np.asarray(y))
    np.testing.assert_allclose(np.concatenate(outs, axis=1), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(attn(x)), expected, atol=1e-5)
    cache = np.asarray(cache)
    np.testing.assert_allclose(cache[:, 0, :, :9], k, atol=1e-5)  # keys, heads-first
    np.testing.assert_allclose(cache[:, 1, :, :9], v, atol=1e-5)  # values
    assert np.abs(cache[:, :, :, 9:]).max() == 0.0  # positions not written stay zero


@pytest.mark.parametrize("mode", CACHE_UPDATES)
def test_update_cache_writes_the_time_slice(mode):
    cache = np.zeros((2, 2, 3, 6, 4), np.float32)
    kv = np.arange(2 * 2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 2, 3, 2, 4) + 1
    expected = cache.copy()
    expected[:, :, :, 3:5] = kv
    np.testing.assert_array_equal(np.asarray(update_cache(cache, kv, 3, mode)), expected)


def test_scatter_graph_has_no_xla_ops_and_slice_graph_does():
    attn = built(num_heads=2, width=16, seed=3)
    x = np.random.default_rng(2).normal(size=(1, 4, 16)).astype("float32")
    expected, _, _ = reference_attention(attn, x)
    cache = np.zeros((1, 2, 2, 8, 8), np.float32)
    _, cache = attn(x[:, :3], cache=cache, cache_index=0)
    for mode, write_op in (("scatter", "TensorScatterUpdate"), ("slice", "XlaDynamicUpdateSlice")):
        step = tf.function(lambda x, c, i, mode=mode: attn(x, cache=c, cache_index=i, cache_update=mode))
        concrete = step.get_concrete_function(
            tf.TensorSpec([1, 1, 16]), tf.TensorSpec([1, 2, 2, 8, 8]), tf.TensorSpec([], tf.int32)
        )
        ops = {op.type for op in concrete.graph.get_operations()}
        assert write_op in ops, (mode, sorted(ops))
        assert any(o.startswith("Xla") for o in ops) == (mode == "slice"), (mode, sorted(ops))
        y, _ = concrete(tf.constant(x[:, 3:4]), tf.constant(cache), tf.constant(3))
        np.testing.assert_allclose(np.asarray(y)[:, 0], expected[:, 3], atol=1e-5)


def test_bad_mode_and_bad_cache_give_clear_errors():
    attn = built(num_heads=2, width=16, seed=4)
    x = np.zeros((1, 2, 16), np.float32)
    with pytest.raises(ValueError, match="cache_update must be one of .*'blend'"):
        attn(x, cache=np.zeros((1, 2, 2, 8, 8), np.float32), cache_update="blend")
    expected = r"cache must be \[batch, 2, heads=2, max_len, head_dim=8\], got shape \(1, 2, 8, 16\)"
    with pytest.raises(ValueError, match=expected):
        attn(x, cache=np.zeros((1, 2, 8, 16), np.float32), cache_index=0)


def test_get_config_round_trip():
    attn = CausalSelfAttention(num_heads=3, dropout=0.1, use_bias=False, proj_init_stddev=0.01, name="a")
    cfg = CausalSelfAttention.from_config(attn.get_config()).get_config()
    assert cfg["name"] == "a"
    assert cfg["num_heads"] == 3
    assert cfg["dropout"] == 0.1
    assert cfg["use_bias"] is False
    assert cfg["init_stddev"] == 0.02
    assert cfg["proj_init_stddev"] == 0.01


def test_width_must_divide_by_heads():
    with pytest.raises(ValueError, match="width 10 is not divisible by num_heads 4"):
        CausalSelfAttention(num_heads=4).build((None, None, 10))
