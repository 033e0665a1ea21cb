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
    assert MLP.from_config(mlp.get_config()).get_config() == mlp.get_config()


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_block_cache_matches_full_pass(norm):
    keras.utils.set_random_seed(3)
    block = TransformerBlock(num_heads=2, norm=norm)
    x = np.random.default_rng(0).normal(size=(1, 6, 16)).astype("float32")
    full = np.asarray(block(x))
    cache = np.zeros((1, 2, 8, 16), np.float32)
    a, cache = block(x[:, :4], cache=cache, cache_index=0)
    b, cache = block(x[:, 4:], cache=cache, cache_index=4)
    np.testing.assert_allclose(np.concatenate([a, b], 1), full, atol=1e-5)


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
    block = TransformerBlock(num_heads=4, dropout=0.2, norm="post", layer_norm_epsilon=1e-6)
    assert TransformerBlock.from_config(block.get_config()).get_config() == block.get_config()
