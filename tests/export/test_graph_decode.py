"""tfgpt.export.graph_decode: per-row sampling and the plain-TF decode step against the model's own calls."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfgpt.config import GPTConfig
from tfgpt.export.graph_decode import decode_step, fast_step_supported, sample_tf, write_chunk
from tfgpt.model import GPT


def test_sample_tf_treats_a_vanishing_temperature_as_greedy():
    logits = tf.constant([[50.0, 100.0, 0.0]])
    # 1e-37 is a normal float32 > 0, but logits / 1e-37 overflow to +inf in two places, and argmax
    # over [inf, inf, 0] would pick index 0, not the greedy 1
    token = sample_tf(logits, tf.constant(1e-37), tf.constant(0), tf.constant(3), tf.constant(0))
    assert token.numpy().tolist() == [1]


@pytest.mark.parametrize("fields", [{}, {"norm": "post"}, {"bias": False, "tie_embeddings": False}])
def test_decode_step_and_write_chunk_match_the_models_cached_calls(fields):
    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16, **fields))
    model.build((None, None))
    assert fast_step_supported(model)
    _, cache = model(np.array([[1, 2, 3], [4, 5, 6]], np.int32), cache=model.init_cache(2, 8), cache_index=0)
    split = [t for layer in cache for t in (layer[:, 0], layer[:, 1])]  # [k_0, v_0, k_1, v_1]
    buffers = [tf.zeros([2, 2, 4, 8])] * 4  # a chunk of 4 positions from 3
    step = tf.function(lambda t, c, b, j: decode_step(model, t, c, tf.constant(3), b, j))
    for j, token in enumerate([np.array([7, 9], np.int32), np.array([11, 0], np.int32)]):  # positions 3, 4
        expected, cache = model(token[:, None], cache=cache, cache_index=3 + j)
        got, buffers = step(token, split, buffers, tf.constant(j))
        np.testing.assert_allclose(got.numpy(), np.asarray(expected)[:, -1], atol=1e-5)
    for i, layer in enumerate(cache):  # the chunk written back: the model's cache, positions 3..6
        for kv in (0, 1):
            written = write_chunk(split[2 * i + kv], buffers[2 * i + kv], tf.constant(3))
            np.testing.assert_allclose(written.numpy(), np.asarray(layer)[:, kv], atol=1e-6)


def test_sample_tf_rows_are_independent_of_the_rows_beside_them():
    logits = tf.random.stateless_normal([4, 50], seed=[1, 2]) * 3.0
    temperature, top_k, seed = tf.constant([0.0, 1.0, 0.7, 2.0]), tf.constant([0, 0, 5, 1]), tf.constant([9, 8, 7, 6])
    together = sample_tf(logits, temperature, top_k, seed, tf.constant(4)).numpy()
    alone = [sample_tf(logits[i : i + 1], temperature[i : i + 1], top_k[i : i + 1], seed[i : i + 1], tf.constant(4))
             for i in range(4)]
    assert together.tolist() == [int(a.numpy()[0]) for a in alone]
    greedy = np.argmax(logits.numpy(), axis=-1)
    assert together[0] == greedy[0] and together[3] == greedy[3]  # temperature 0, and top_k 1


def test_sample_tf_keeps_each_rows_own_top_k():
    logits = tf.tile(tf.range(20, dtype=tf.float32)[None, :] * 0.1, [2, 1])  # ids 19, 18, ... are the top ones
    seen: list[set] = [set(), set()]
    for step in range(200):
        got = sample_tf(logits, tf.constant([1.0, 1.0]), tf.constant([3, 0]), tf.constant([1, 2]), tf.constant(step))
        for row, token in enumerate(got.numpy().tolist()):
            seen[row].add(token)
    assert seen[0] == {17, 18, 19}  # top_k 3
    assert len(seen[1]) > 10  # top_k 0: the whole vocabulary


def test_decode_step_rows_at_their_own_positions_match_each_rows_own_cached_call():
    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16))
    model.build((None, None))
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]  # row 0 decodes from position 3, row 1 from 5
    padded = np.array([p + [0] * (5 - len(p)) for p in prompts], np.int32)
    _, cache = model(padded, cache=model.init_cache(2, 12), cache_index=0)
    split = [t for layer in cache for t in (layer[:, 0], layer[:, 1])]
    buffers = [tf.zeros([2, 2, 4, 8])] * 4
    start = tf.constant([3, 5])
    alone = [model(np.array([p], np.int32), cache=model.init_cache(1, 12), cache_index=0)[1] for p in prompts]
    for j, token in enumerate([np.array([7, 9], np.int32), np.array([11, 0], np.int32)]):
        got, buffers = decode_step(model, tf.constant(token), split, start, buffers, tf.constant(j))
        for r, p in enumerate(prompts):
            expected, alone[r] = model(token[r : r + 1, None], cache=alone[r], cache_index=len(p) + j)
            np.testing.assert_allclose(got.numpy()[r], np.asarray(expected)[0, -1], atol=1e-5)
    for i in range(2):  # written back at each row's own positions: each row's own cache there
        for kv in (0, 1):
            written = write_chunk(split[2 * i + kv], buffers[2 * i + kv], start).numpy()
            for r, p in enumerate(prompts):
                want = np.asarray(alone[r][i])[0, kv, :, : len(p) + 2]
                np.testing.assert_allclose(written[r, :, : len(p) + 2], want, atol=1e-6)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("rows", [1, 2, 3, 16])
def test_the_head_matches_the_models_logits_at_any_batch(tie, rows):
    from tfgpt.export.graph_decode import _head

    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=16, tie_embeddings=tie))
    model.build((None, None))
    x = tf.random.stateless_normal([rows, 16], seed=[rows, 1])
    expected = np.asarray(model.logits_from_hidden(x[:, None, :]))[:, 0]
    np.testing.assert_allclose(_head(model, x).numpy(), expected, atol=1e-5)
