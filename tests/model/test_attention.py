"""CausalSelfAttention: causality, cache equivalence, config round trip."""

import keras
import numpy as np

from tfgpt.model.attention import CausalSelfAttention, causal_mask


def test_mask_is_lower_triangular_with_offset():
    m = np.asarray(causal_mask(3, 5, start=2))
    expected = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], np.float32)
    np.testing.assert_array_equal(m, expected)


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


def test_cached_chunks_equal_full_pass():
    keras.utils.set_random_seed(2)
    attn = CausalSelfAttention(num_heads=2)
    x = np.random.default_rng(1).normal(size=(1, 9, 16)).astype("float32")
    full = np.asarray(attn(x))
    cache = np.zeros((1, 2, 12, 16), np.float32)
    y1, cache = attn(x[:, :5], cache=cache, cache_index=0)
    y2, cache = attn(x[:, 5:6], cache=cache, cache_index=5)
    y3, cache = attn(x[:, 6:], cache=cache, cache_index=6)
    got = np.concatenate([y1, y2, y3], axis=1)
    np.testing.assert_allclose(got, full, atol=1e-5)
    assert np.abs(np.asarray(cache)[:, :, 9:]).max() == 0.0


def test_get_config_round_trip():
    attn = CausalSelfAttention(num_heads=3, dropout=0.1, use_bias=False, proj_init_stddev=0.01, name="a")
    clone = CausalSelfAttention.from_config(attn.get_config())
    assert clone.get_config() == attn.get_config()
