"""tfgpt.train.step: the loss, gradient accumulation, fused steps (GPTTrainer, no run dir)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.train.helpers import char_tokens
from tfgpt.config import GPTConfig
from tfgpt.model.gpt import GPT
from tfgpt.train.config import TrainConfig
from tfgpt.train.optim import make_optimizer
from tfgpt.train.step import GPTTrainer, token_cross_entropy


def test_token_cross_entropy_known_values():
    uniform = tf.zeros((2, 3, 8))  # equal logits: -log(1/8) for every token
    assert float(token_cross_entropy(uniform, tf.zeros((2, 3), tf.int32))) == pytest.approx(math.log(8), rel=1e-6)
    # one confident position: logit 10 on the target among 4 classes -> -log(e^10 / (e^10 + 3))
    logits = tf.constant([[[10.0, 0.0, 0.0, 0.0]]], tf.float16)
    expected = -math.log(math.exp(10) / (math.exp(10) + 3))
    assert float(token_cross_entropy(logits, tf.constant([[0]]))) == pytest.approx(expected, rel=1e-3)


def test_accumulation_matches_big_batch():
    """Accumulating 4 micro-batches of 2 equals one batch of 8 (loss, grad norm and weights)."""
    ids, _ = char_tokens(20000)
    x = np.stack([ids[i * 17:i * 17 + 16] for i in range(8)])
    y = np.stack([ids[i * 17 + 1:i * 17 + 17] for i in range(8)])
    results = []
    for accum in (1, 4):
        keras.utils.set_random_seed(0)
        gpt = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=32))  # 1 layer: half the compile
        gpt.build((None, 16))
        trainer = GPTTrainer(gpt, grad_accum_steps=accum, grad_clip=1.0)
        trainer.compile(optimizer=make_optimizer(TrainConfig(warmup_steps=0, max_steps=10), gpt), jit_compile=True)
        logs = trainer.fit(tf.data.Dataset.from_tensors((x, y)).repeat(), steps_per_epoch=3, verbose=0).history
        results.append((logs, [w.numpy() for w in gpt.trainable_weights]))
    (h1, w1), (h4, w4) = results
    np.testing.assert_allclose(h1["loss"], h4["loss"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h1["grad_norm"], h4["grad_norm"], rtol=1e-4)
    for a, b in zip(w1, w4, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_fused_steps_match_keras_loop():
    """With XLA and steps_per_execution 4, the fused loop trains exactly as Keras' per-step loop."""
    ids, _ = char_tokens(20000)
    x = np.stack([ids[i * 17:i * 17 + 16] for i in range(32)]).reshape(8, 4, 16)
    y = np.stack([ids[i * 17 + 1:i * 17 + 17] for i in range(32)]).reshape(8, 4, 16)
    results = []
    for fuse in (False, True):
        keras.utils.set_random_seed(0)
        gpt = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=32))  # 1 layer: half the compile
        gpt.build((None, 16))
        trainer = GPTTrainer(gpt, grad_clip=1.0, fuse_steps=fuse)
        trainer.compile(optimizer=make_optimizer(TrainConfig(warmup_steps=2, max_steps=8), gpt), jit_compile=True,
                        steps_per_execution=4)
        logs = trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)).repeat(), steps_per_epoch=8, verbose=0).history
        assert trainer._fusable() is fuse
        assert int(trainer.optimizer.iterations.numpy()) == 8
        results.append((logs, [w.numpy() for w in gpt.trainable_weights]))
    (h0, w0), (h1, w1) = results
    np.testing.assert_allclose(h0["loss"], h1["loss"], rtol=1e-5)
    np.testing.assert_allclose(h0["lr"], h1["lr"], rtol=1e-6)
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_evaluate_reports_the_mean_loss_of_its_batches():
    """``evaluate`` and ``fit``'s ``val_loss`` are the mean over the batches (not Keras' unfed tracker's 0.0)."""
    keras.utils.set_random_seed(0)
    gpt = GPT(GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=1, n_embd=8))
    gpt.build((None, 8))
    trainer = GPTTrainer(gpt)
    trainer.compile(optimizer=make_optimizer(TrainConfig(warmup_steps=0, max_steps=4), gpt), jit_compile=False)
    rng = np.random.default_rng(0)
    xs, ys = rng.integers(0, 8, (2, 5, 3, 8))  # 5 batches of 3 windows of 8 ids
    batches = tf.data.Dataset.from_tensor_slices((xs, ys))
    expected = np.mean([float(token_cross_entropy(gpt(x), y)) for x, y in zip(xs, ys, strict=True)])
    assert trainer.evaluate(batches, verbose=0, return_dict=True)["loss"] == pytest.approx(expected, rel=1e-5)
    history = trainer.fit(batches.repeat(), steps_per_epoch=1, epochs=1, validation_data=batches, verbose=0)
    after = np.mean([float(token_cross_entropy(gpt(x), y)) for x, y in zip(xs, ys, strict=True)])
    assert history.history["val_loss"] == [pytest.approx(after, rel=1e-5)] and after != pytest.approx(expected)
