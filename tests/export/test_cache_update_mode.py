"""The "scatter" cache write (non-XLA, for TF Serving) computes what the default "slice" one does."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfgpt.config import GPTConfig
from tfgpt.model import GPT
from tfgpt.model.attention import cache_update_mode


def test_scatter_equals_slice_eager_and_in_graph():
    model = GPT(GPTConfig(vocab_size=17, block_size=16, n_layer=2, n_head=2, n_embd=16))
    model.build((None, None))
    ids = np.array([[1, 2, 3], [4, 5, 6]], np.int32)

    def run(mode: str):
        with cache_update_mode(mode):
            cache = model.init_cache(2, 8)
            a, cache = model(ids, cache=cache, cache_index=0)
            b, cache = model(ids[:, :1], cache=cache, cache_index=3)
        return np.asarray(a), np.asarray(b), np.asarray(cache)

    for x, y in zip(run("slice"), run("scatter"), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)

    @tf.function
    def step(ids, cache):
        with cache_update_mode("scatter"):
            return model(ids, cache=cache, cache_index=tf.constant(2))

    graph = step.get_concrete_function(tf.TensorSpec([2, 1], tf.int32), tf.TensorSpec([2, 2, 2, 8, 16])).graph
    ops = {op.type for op in graph.get_operations()}
    assert "TensorScatterUpdate" in ops and not any(o.startswith("Xla") for o in ops)


def test_mode_is_restored_and_checked():
    from tfgpt.model import attention

    with pytest.raises(ValueError, match="cache update mode"):
        with cache_update_mode("blend"):
            pass
    with cache_update_mode("scatter"):
        assert attention._CACHE_UPDATE_MODE == "scatter"
    assert attention._CACHE_UPDATE_MODE == "slice"
