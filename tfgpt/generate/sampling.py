"""Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus).

Sampling uses the Gumbel-max trick with stateless noise drawn from ``(seed, step)``, so a
compiled decode loop is reproducible for a seed on every backend and never carries RNG state.
Everything is ``keras.ops`` except the noise source, which is per backend.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

NEG_INF = -1e30
#: Temperatures below this sample as greedy: logits / T would overflow float32 as T → 0, and
#: already at 1e-5 a logit gap of 0.001 outweighs the Gumbel noise.
MIN_TEMPERATURE = 1e-5


def stateless_uniform(shape: Any, seed: Any, step: Any) -> Any:
    """Uniform(0, 1) noise that depends only on ``(seed, step)`` (open at 0)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        pair = tf.stack([tf.cast(seed, tf.int32), tf.cast(step, tf.int32)])
        return tf.random.stateless_uniform(shape, seed=pair, minval=1e-20, maxval=1.0)
    if backend == "jax":
        import jax

        key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
        return jax.random.uniform(key, shape, minval=1e-20, maxval=1.0)
    raise NotImplementedError(f"sampling is implemented for the tensorflow and jax backends, not {backend}")


def filter_logits(logits: Any, top_k: int | None = None, top_p: Any = None) -> Any:
    """Set logits outside the top-k and outside the top-p nucleus to a large negative value.

    ``logits``: ``[batch, vocab]`` float32. ``top_k`` is static (a Python int); ``top_p`` may be a
    tensor in (0, 1] (1 keeps everything).
    """
    if top_k is not None:
        kth = ops.top_k(logits, top_k, sorted=True)[0][:, -1:]
        logits = ops.where(logits < kth, NEG_INF, logits)
    if top_p is not None:
        vocab = ops.shape(logits)[-1]
        sorted_logits = ops.top_k(logits, vocab, sorted=True)[0]
        probs = ops.softmax(sorted_logits, axis=-1)
        cum_before = ops.cumsum(probs, axis=-1) - probs
        # Keep a token while the mass before it is below top_p (the top token is always kept).
        kept = ops.where(cum_before < ops.cast(top_p, "float32"), sorted_logits, -NEG_INF)
        threshold = ops.min(kept, axis=-1, keepdims=True)
        logits = ops.where(logits < threshold, NEG_INF, logits)
    return logits


def sample_next(
    logits: Any,
    *,
    greedy: bool,
    temperature: Any = 1.0,
    top_k: int | None = None,
    top_p: Any = None,
    seed: Any = 0,
    step: Any = 0,
) -> Any:
    """Next token ids ``[batch]`` (int32) from ``logits`` ``[batch, vocab]``."""
    logits = ops.cast(logits, "float32")
    if greedy:
        return ops.cast(ops.argmax(logits, axis=-1), "int32")
    logits = logits / ops.cast(temperature, "float32")
    logits = filter_logits(logits, top_k=top_k, top_p=top_p)
    u = stateless_uniform(ops.shape(logits), seed, step)
    gumbel = -ops.log(-ops.log(u))
    return ops.cast(ops.argmax(logits + gumbel, axis=-1), "int32")
