"""MLP and TransformerBlock: shapes, pre/post-LN, config round trip."""

import keras
import numpy as np
import pytest

from tfgpt.model.block import MLP, TransformerBlock


def test_mlp_shape_and_config():
    mlp = MLP(expansion=4, dropout=0.0)
    y = mlp(np.ones((2, 3, 8), np.float32))
    assert tuple(y.shape) == (2, 3, 8)
    assert mlp.c_fc.kernel.shape == (8, 32)


def test_mlp_config_round_trip():
    mlp = MLP(expansion=2, dropout=0.3, use_bias=False, init_stddev=0.05, proj_init_stddev=0.01, name="m")
    cfg = MLP.from_config(mlp.get_config()).get_config()
    assert (cfg["name"], cfg["expansion"], cfg["dropout"], cfg["use_bias"]) == ("m", 2, 0.3, False)
    assert (cfg["init_stddev"], cfg["proj_init_stddev"]) == (0.05, 0.01)


def reference_block(block: TransformerBlock, x: np.ndarray) -> np.ndarray:
    """The block in NumPy: pre-LN ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``; post-LN the LNs after."""

    def ln(layer, h):
        mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        return (h - mean) / np.sqrt(var + layer.epsilon) * np.asarray(layer.gamma) + np.asarray(layer.beta)

    def attn(h):
        return np.asarray(block.attn(h))  # checked against NumPy in test_attention.py

    def mlp(h):
        z = h @ np.asarray(block.mlp.c_fc.kernel) + np.asarray(block.mlp.c_fc.bias)
        z = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
        return z @ np.asarray(block.mlp.c_proj.kernel) + np.asarray(block.mlp.c_proj.bias)

    if block.norm == "pre":
        x = x + attn(ln(block.ln_1, x))
        return x + mlp(ln(block.ln_2, x))
    x = ln(block.ln_1, x + attn(x))
    return ln(block.ln_2, x + mlp(x))


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_block_equals_numpy_reference(norm):
    keras.utils.set_random_seed(3)
    block = TransformerBlock(num_heads=2, norm=norm)
    block.build((None, None, 16))
    rng = np.random.default_rng(3)
    for w in block.weights:
        w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    np.testing.assert_allclose(np.asarray(block(x)), reference_block(block, x), atol=1e-4)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("mode", ["slice", "scatter"])
def test_block_cache_matches_full_pass(norm, mode):
    keras.utils.set_random_seed(3)
    block = TransformerBlock(num_heads=2, norm=norm)
    x = np.random.default_rng(0).normal(size=(1, 6, 16)).astype("float32")
    full = np.asarray(block(x))
    cache = np.zeros((1, 2, 2, 8, 8), np.float32)  # [batch, 2, heads, max_len, head_dim]
    a, cache = block(x[:, :4], cache=cache, cache_index=0, cache_update=mode)
    b, cache = block(x[:, 4:], cache=cache, cache_index=4, cache_update=mode)
    np.testing.assert_allclose(np.concatenate([a, b], 1), full, atol=1e-5)
    assert tuple(cache.shape) == (1, 2, 2, 8, 8)


def test_pre_and_post_ln_differ():
    keras.utils.set_random_seed(4)
    x = np.random.default_rng(0).normal(size=(1, 4, 16)).astype("float32")
    pre = TransformerBlock(num_heads=2, norm="pre")
    post = TransformerBlock(num_heads=2, norm="post")
    pre.build(x.shape)
    post.build(x.shape)
    post.set_weights(pre.get_weights())
    assert np.abs(np.asarray(pre(x)) - np.asarray(post(x))).max() > 1e-3
    # post-LN output is normalised per position
    np.testing.assert_allclose(np.asarray(post(x)).mean(-1), 0.0, atol=1e-5)


def test_block_rejects_unknown_norm():
    with pytest.raises(ValueError, match="norm"):
        TransformerBlock(num_heads=2, norm="sandwich")


def test_block_config_round_trip():
    block = TransformerBlock(num_heads=4, dropout=0.2, norm="post", layer_norm_epsilon=1e-6, use_bias=False, name="b")
    cfg = TransformerBlock.from_config(block.get_config()).get_config()
    assert (cfg["name"], cfg["num_heads"], cfg["dropout"], cfg["norm"]) == ("b", 4, 0.2, "post")
    assert (cfg["layer_norm_epsilon"], cfg["use_bias"]) == (1e-6, False)
    assert (cfg["init_stddev"], cfg["proj_init_stddev"]) == (0.02, 0.02)
