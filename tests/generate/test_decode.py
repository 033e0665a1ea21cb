"""The compiled decode functions: prefill, the cached loop and the sliding window, against the uncached model."""

import keras
import numpy as np
import pytest

from tfgpt.config import GPTConfig
from tfgpt.generate.decode import Decoder, SamplingMode
from tfgpt.model import GPT

GREEDY = SamplingMode(greedy=True)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    m = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16))
    m.build((None, None))
    rng = np.random.default_rng(0)
    for v in m.variables:  # large weights: varied greedy tokens
        v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))
    return m


def naive_greedy(model, ids, n):
    for _ in range(n):
        nxt = np.asarray(model(ids[:, -model.config.block_size :]))[:, -1].argmax(-1).astype(np.int32)
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
    return ids[:, -n:]


def loop_args(logits, cache, index, n, eot=-1, done=None):
    done = np.zeros((len(logits),), bool) if done is None else done
    return (logits, cache, np.int32(index), np.int32(n), np.float32(1.0), np.float32(1.0), np.int32(0),
            np.int32(0), np.int32(eot), done)


def test_one_decoder_per_model_and_compile_flag(model):
    assert Decoder.for_model(model) is Decoder.for_model(model)
    assert Decoder.for_model(model, jit_compile=False) is not Decoder.for_model(model)
    decoder = Decoder.for_model(model)
    assert decoder.loop(GREEDY, 4) is decoder.loop(GREEDY, 4) and decoder.loop(GREEDY, 8) is not decoder.loop(GREEDY, 4)


def test_prefill_of_a_padded_prompt_gives_the_uncached_logits(model):
    ids = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]], np.int32)
    padded = np.zeros((2, 8), np.int32)
    padded[:, :5] = ids
    logits, cache = Decoder.for_model(model).prefill()(padded, model.init_cache(2, 16), np.int32(4))
    np.testing.assert_allclose(np.asarray(logits), np.asarray(model(ids))[:, -1], atol=1e-5)
    assert [tuple(c.shape) for c in cache] == [(2, 2, 2, 16, 8)] * 2  # heads-first per layer


def test_loop_greedy_tokens_equal_the_naive_loop(model):
    ids = np.array([[3, 1, 4], [2, 7, 1]], np.int32)
    decoder = Decoder.for_model(model)
    logits, cache = decoder.prefill()(ids, model.init_cache(2, 16), np.int32(2))
    out, steps, _, _, done = decoder.loop(GREEDY, 8)(*loop_args(logits, cache, 3, 8))
    assert int(np.asarray(steps)) == 8 and not np.asarray(done).any()
    np.testing.assert_array_equal(np.asarray(out), naive_greedy(model, ids, 8))


def test_loop_stops_when_every_row_hit_end_of_text(model):
    ids = np.array([[3, 1, 4]], np.int32)
    first = int(naive_greedy(model, ids, 1)[0, 0])  # greedy's first token, used as "end of text"
    decoder = Decoder.for_model(model)
    logits, cache = decoder.prefill()(ids, model.init_cache(1, 16), np.int32(2))
    out, steps, _, _, done = decoder.loop(GREEDY, 8)(*loop_args(logits, cache, 3, 8, eot=first))
    assert int(np.asarray(steps)) == 1 and np.asarray(done).tolist() == [True]
    assert int(np.asarray(out)[0, 0]) == first


def test_slide_samples_then_reruns_the_last_block(model):
    ctx = np.random.default_rng(1).integers(0, 30, (1, 16)).astype(np.int32)
    logits = np.asarray(model(ctx))[:, -1]
    out, steps, new_logits, new_ctx, done = Decoder.for_model(model).slide(GREEDY, 4)(
        logits, ctx, np.int32(3), np.float32(1.0), np.float32(1.0), np.int32(0), np.int32(0), np.int32(-1),
        np.zeros((1,), bool),
    )
    expected = ctx
    for _ in range(3):  # nanoGPT's loop: crop to the block, argmax, append
        expected = np.concatenate([expected[:, 1:], np.asarray(model(expected))[:, -1].argmax(-1)[:, None]], axis=1)
    assert int(np.asarray(steps)) == 3 and np.asarray(done).tolist() == [False]
    np.testing.assert_array_equal(np.asarray(out)[:, :3], expected[:, -3:])
    np.testing.assert_array_equal(np.asarray(new_ctx), expected)
    np.testing.assert_allclose(np.asarray(new_logits), np.asarray(model(expected))[:, -1], atol=1e-5)


def test_vocab_limit_masks_the_padded_ids(model):
    ids = np.array([[3, 1, 4]], np.int32)
    decoder = Decoder.for_model(model)
    logits, cache = decoder.prefill()(ids, model.init_cache(1, 16), np.int32(2))
    logits = np.asarray(logits).copy()
    logits[:, 20:] += 100.0  # the padded ids would win
    out, *_ = decoder.loop(SamplingMode(greedy=True, vocab_limit=20), 4)(*loop_args(logits, cache, 3, 4))
    assert (np.asarray(out) < 20).all()
