"""The SavedModel's decode math in plain TF ops: per-row sampling, one cached decode step, chunk writes.

Every row of a batch keeps its own position, temperature, top-k and seed, so requests of different
prompt lengths and settings share one decode step (:class:`~tfgpt.export.savedmodel.ServingModule`).
No op here needs XLA: TensorFlow Serving runs the graph as it is.

Example:
    >>> import tensorflow as tf
    >>> logits = tf.constant([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    >>> sample_tf(logits, tf.constant([0.0, 0.0]), tf.constant([0, 0]), tf.constant([1, 2]), 0).numpy().tolist()
    [1, 0]
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from tfgpt.generate.sampling import MIN_TEMPERATURE, NEG_INF, stateless_uniform
from tfgpt.model.attention import MASK_VALUE
from tfgpt.model.block import gelu_tanh


def _row_noise(seeds: tf.Tensor, step: tf.Tensor, vocab: tf.Tensor) -> tf.Tensor:
    """Uniform noise ``[batch, vocab]``: row ``r`` is ``stateless_uniform([1, vocab], seeds[r], step)``, the
    noise a request of that one row gets, whatever else shares its batch."""
    def one(seed: tf.Tensor) -> tf.Tensor:
        return stateless_uniform(tf.stack([1, vocab]), seed, step)[0]

    return tf.map_fn(one, seeds, fn_output_signature=tf.TensorSpec([None], tf.float32))


def _top_k_filter(x: tf.Tensor, top_k: tf.Tensor, vocab: tf.Tensor) -> tf.Tensor:
    """``x`` ``[batch, vocab]`` with each row's logits below its ``top_k[r]``-th largest set to -inf
    (``top_k[r]`` 0 or ≥ vocab: that row unfiltered). One ``top_k`` for the batch's largest k."""
    active = tf.logical_and(top_k > 0, top_k < vocab)

    def filtered() -> tf.Tensor:
        k = tf.where(active, top_k, 1)
        values = tf.math.top_k(x, tf.reduce_max(k), sorted=True).values  # [batch, max k]
        kth = tf.gather(values, k - 1, batch_dims=1)[:, None]  # [batch, 1]
        return tf.where(tf.logical_and(active[:, None], x < kth), tf.constant(NEG_INF, tf.float32), x)

    return tf.cond(tf.reduce_any(active), filtered, lambda: x)


def sample_tf(
    logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, seed: tf.Tensor, step: tf.Tensor,
    vocab_limit: int | None = None,
) -> tf.Tensor:
    """Next ids ``[batch]`` int32 for ``logits`` ``[batch, vocab]``, each row with its own settings.

    ``temperature``, ``top_k``, ``seed``: ``[batch]`` (or scalars, broadcast). A row whose temperature is
    below 1e-5 (``MIN_TEMPERATURE``) is greedy; the others take top-k + Gumbel-max with the noise of
    :func:`_row_noise`: the arithmetic of :func:`tfgpt.generate.sampling.sample_next`, branches as
    ``tf.cond``. ``vocab_limit`` (static): ids ≥ it are never picked (a vocabulary padded past the
    tokenizer's), as in ``tfgpt.generate``.
    """
    logits = tf.cast(logits, tf.float32)
    if vocab_limit is not None and (logits.shape[-1] is None or vocab_limit < logits.shape[-1]):
        keep = tf.range(tf.shape(logits)[-1]) < vocab_limit
        logits = tf.where(keep[None, :], logits, tf.constant(NEG_INF, tf.float32))
    batch, vocab = tf.shape(logits)[0], tf.shape(logits)[1]
    temperature = tf.broadcast_to(tf.cast(temperature, tf.float32), [batch])
    sampled_rows = temperature >= MIN_TEMPERATURE
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)

    def sampled() -> tf.Tensor:
        x = logits / tf.where(sampled_rows, temperature, 1.0)[:, None]
        limit = vocab if vocab_limit is None else tf.minimum(vocab, vocab_limit)
        x = _top_k_filter(x, tf.broadcast_to(tf.cast(top_k, tf.int32), [batch]), limit)
        u = _row_noise(tf.broadcast_to(tf.cast(seed, tf.int32), [batch]), step, vocab)
        drawn = tf.argmax(x - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)
        return tf.where(sampled_rows, drawn, greedy)

    return tf.cond(tf.reduce_any(sampled_rows), sampled, lambda: greedy)


def fast_step_supported(model: Any) -> bool:
    """Whether :func:`decode_step` can run ``model``: float32 weights and compute, no quantized layer.

    Other models (mixed precision, ``quantize("int8")``) decode through the model's own cached call.
    """
    if model.dtype_policy.name != "float32":
        return False
    return all(getattr(layer, "quantization_mode", None) is None for layer in model._flatten_layers())


def _matmul(x: tf.Tensor, y: tf.Tensor, adj_y: bool = False) -> tf.Tensor:
    """``x @ y`` (``y`` transposed with ``adj_y``) as ``BatchMatMulV3``: a plain TF kernel that the oneDNN
    graph rewrite leaves alone. With one query row per step its ``_MklMatMul``/``_MklBatchMatMulV2``
    rewrites of MatMul/BatchMatMulV2 cost more in call overhead than the product itself (measured:
    benchmarks/README.md, "SavedModel serving_default without XLA")."""
    return tf.raw_ops.BatchMatMulV3(x=x, y=y, Tout=x.dtype, adj_y=adj_y)


def _dense(layer: Any, x: tf.Tensor) -> tf.Tensor:
    """A Keras ``Dense`` (no activation) on ``[batch, in]``."""
    y = _matmul(x, layer.kernel)
    return y if layer.bias is None else y + layer.bias


def _attend_step(attn: Any, x: tf.Tensor, caches: tuple, buffers: tuple, at: tf.Tensor, biases: tuple) -> tuple:
    """One position of :class:`~tfgpt.model.attention.CausalSelfAttention`: ``x`` ``[b, width]`` →
    ``(y [b, width], k_buffer, v_buffer)``.

    ``caches``: this layer's earlier keys and values ``[b, heads, T, head_dim]`` (read only);
    ``buffers``: the chunk's ``[b, heads, chunk, head_dim]``, written at ``at`` (``[b·heads, 3]``
    scatter rows); ``biases``: ``([b, 1, 1, T], [chunk])``, 0 where a key is visible, else -1e9. One
    softmax over both parts, as over one cache.
    """
    batch, heads, head_dim = tf.shape(x)[0], attn.num_heads, attn.head_dim
    q, k, v = tf.split(_dense(attn.c_attn, x), 3, axis=-1)  # 3 × [b, width]
    k_buf = tf.tensor_scatter_nd_update(buffers[0], at, tf.reshape(k, [-1, head_dim]))
    v_buf = tf.tensor_scatter_nd_update(buffers[1], at, tf.reshape(v, [-1, head_dim]))
    q = tf.reshape(q, [batch, heads, 1, head_dim]) * (1.0 / math.sqrt(head_dim))
    old = _matmul(q, caches[0], adj_y=True) + biases[0]  # [b, heads, 1, T]
    new = _matmul(q, k_buf, adj_y=True) + biases[1]  # [b, heads, 1, chunk]
    # softmax as plain ops (oneDNN's _MklSoftmax has the same per-call overhead as its small products)
    top = tf.maximum(tf.reduce_max(old, axis=-1, keepdims=True), tf.reduce_max(new, axis=-1, keepdims=True))
    e_old, e_new = tf.exp(old - top), tf.exp(new - top)
    total = tf.reduce_sum(e_old, axis=-1, keepdims=True) + tf.reduce_sum(e_new, axis=-1, keepdims=True)
    y = (_matmul(e_old, caches[1]) + _matmul(e_new, v_buf)) / total  # [b, heads, 1, head_dim]
    return _dense(attn.c_proj, tf.reshape(y, [batch, heads * head_dim])), k_buf, v_buf  # heads side by side


def _block_step(block: Any, x: tf.Tensor, caches: tuple, buffers: tuple, at: tf.Tensor, biases: tuple) -> tuple:
    """One position of a :class:`~tfgpt.model.block.TransformerBlock` (pre- or post-LN), as its ``call``."""
    def mlp(h: tf.Tensor) -> tf.Tensor:
        return _dense(block.mlp.c_proj, gelu_tanh(_dense(block.mlp.c_fc, h)))

    if block.norm == "pre":
        a, k_buf, v_buf = _attend_step(block.attn, block.ln_1(x), caches, buffers, at, biases)
        x = x + a
        x = x + mlp(block.ln_2(x))
    else:
        a, k_buf, v_buf = _attend_step(block.attn, x, caches, buffers, at, biases)
        x = block.ln_1(x + a)
        x = block.ln_2(x + mlp(x))
    return x, k_buf, v_buf


def decode_step(
    model: Any, token: tf.Tensor, caches: list[tf.Tensor], start: tf.Tensor, buffers: list[tf.Tensor], j: tf.Tensor
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Logits ``[b, vocab]`` after ``token`` ``[b]``, row ``r`` at position ``start[r] + j``, and the buffers.

    The model's cached single-token call in plain TF ops, for a graph run without XLA. ``start``:
    ``[b]`` (or a scalar for all rows). ``caches``: keys and values apart, ``[k_0, v_0, k_1, v_1,
    ...]``, each ``[b, heads, T, head_dim]``; row ``r`` holds its positions ``< start[r]`` (read,
    never written; later slots are masked). ``buffers``: the same for positions ``start[r], start[r] +
    1, ...`` (``[b, heads, chunk, head_dim]``); this token's keys/values go to index ``j``. The products
    are ``BatchMatMulV3`` (see :func:`_matmul`), keys read transposed by the product (no transpose op).
    Same weights and arithmetic as ``model(token[:, None], cache=..., cache_index=start + j)``.
    """
    batch, heads = tf.shape(token)[0], model.config.n_head
    start = tf.broadcast_to(start, [batch])
    # a finished row of a batch may run past its end: clamp, its tokens are discarded
    positions = tf.minimum(start + j, model.config.block_size - 1)
    x = model.wte(token) + model.wpe(positions)  # [b, width]
    grid = tf.reshape(tf.range(batch * heads), [batch * heads, 1])
    at = tf.concat([grid // heads, grid % heads, tf.fill([batch * heads, 1], j)], axis=1)  # [b·h, 3]
    later = tf.range(tf.shape(caches[0])[2])[None, :] >= start[:, None]  # [b, T]
    biases = (tf.cast(later, x.dtype)[:, None, None, :] * MASK_VALUE,  # [b, 1, 1, T]
              tf.cast(tf.range(tf.shape(buffers[0])[2]) > j, x.dtype) * MASK_VALUE)  # [chunk]
    new_buffers = []
    for i, block in enumerate(model.blocks):
        x, k_buf, v_buf = _block_step(block, x, caches[2 * i : 2 * i + 2], buffers[2 * i : 2 * i + 2], at, biases)
        new_buffers += [k_buf, v_buf]
    return tf.cast(_head(model, model.ln_f(x)), tf.float32), new_buffers


def _head(model: Any, x: tf.Tensor) -> tf.Tensor:
    """Logits ``[b, vocab]`` of ``x`` ``[b, width]``: the head's product is the biggest of a step.

    ``MatMul`` here, not ``BatchMatMulV3``: with the vocabulary's 50k rows Eigen's batch product is the
    slower kernel, and for the tied head (embeddings read transposed) it is ~20× slower at 2–4 rows
    (benchmarks/README.md, "Batched serving"). At more than 2 rows the tied product runs as
    ``(E · xᵀ)ᵀ``, the faster form there.
    """
    if model.lm_head is not None:
        y = tf.matmul(x, model.lm_head.kernel)
        return y if model.lm_head.bias is None else y + model.lm_head.bias
    emb = model.wte.embeddings  # [vocab, width]

    def few() -> tf.Tensor:
        return tf.matmul(x, emb, transpose_b=True)

    def many() -> tf.Tensor:
        return tf.transpose(tf.matmul(emb, x, transpose_b=True))  # [vocab, b] → [b, vocab]

    return tf.cond(tf.shape(x)[0] <= 2, few, many)


def write_chunk(cache: tf.Tensor, buffer: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
    """``cache[r, :, start[r] : start[r] + chunk] = buffer[r]`` for each row (``[b, heads, T, d]`` ←
    ``[b, heads, chunk, d]``; ``start`` ``[b]`` or a scalar)."""
    shape = tf.shape(buffer)
    b, h, t = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), tf.range(shape[2]), indexing="ij")
    t = t + tf.reshape(tf.broadcast_to(start, [shape[0]]), [-1, 1, 1])  # each row from its own start
    rows = tf.reshape(tf.stack([b, h, t], axis=-1), [-1, 3])  # [b·heads·chunk, 3]
    return tf.tensor_scatter_nd_update(cache, rows, tf.reshape(buffer, [-1, shape[3]]))
