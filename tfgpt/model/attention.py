"""Causal multi-head self-attention with an optional static-shape KV cache.

The same ``call`` serves training (no cache: every position attends to itself and the past)
and cached decoding (write this chunk's keys/values at ``cache_index``, attend over the
whole cache with positions after the chunk masked out). Shapes never depend on the step, so
one compiled decode step serves every token. The mask is arithmetic (no boolean tensors),
which keeps TFLite conversion to builtin ops.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import keras
from keras import ops

MASK_VALUE = -1e9

#: How cached keys/values are written: "slice" (default; ``ops.slice_update``, which TensorFlow
#: lowers to ``XlaDynamicUpdateSlice``: in place under XLA, a TFLite DYNAMIC_UPDATE_SLICE builtin)
#: or "scatter" (``ops.scatter_update``, i.e. ``tf.tensor_scatter_nd_update``: a plain TF kernel,
#: for SavedModels run without XLA, as TensorFlow Serving does). Read when a call is traced.
_CACHE_UPDATE_MODE = "slice"
CACHE_UPDATE_MODES = ("slice", "scatter")


@contextlib.contextmanager
def cache_update_mode(mode: str) -> Iterator[None]:
    """Trace cache writes with ``mode`` ("slice" or "scatter") inside the ``with`` block.

    Example:
        >>> with cache_update_mode("scatter"):
        ...     concrete = tf.function(step).get_concrete_function(...)  # no Xla* ops in the graph
    """
    global _CACHE_UPDATE_MODE
    if mode not in CACHE_UPDATE_MODES:
        raise ValueError(f"cache update mode must be one of {CACHE_UPDATE_MODES}, got {mode!r}")
    previous, _CACHE_UPDATE_MODE = _CACHE_UPDATE_MODE, mode
    try:
        yield
    finally:
        _CACHE_UPDATE_MODE = previous


def _scatter_time(cache: Any, lead: tuple, index: Any, kv: Any) -> Any:
    """``cache[*lead, :, s, index + t, :] = kv[:, s, t, :]`` with ``ops.scatter_update``.

    ``cache``: ``[batch, *lead_dims, 2, max_len, width]``; ``kv``: ``[batch, 2, time, width]``;
    ``lead``: fixed indices of the dims between batch and the k/v axis (the layer slot, or none).
    """
    shape = ops.shape(kv)
    batch, time, width = shape[0], shape[2], shape[3]
    b = ops.arange(batch, dtype="int32")[:, None, None]
    s = ops.arange(2, dtype="int32")[None, :, None]
    t = ops.arange(time, dtype="int32")[None, None, :] + index
    zeros = ops.zeros((batch, 2, time), "int32")
    cols = [b + zeros] + [ops.cast(v, "int32") + zeros for v in lead] + [s + zeros, t + zeros]
    indices = ops.reshape(ops.stack(cols, axis=-1), (-1, len(cols)))
    return ops.scatter_update(cache, indices, ops.reshape(kv, (-1, width)))


def causal_mask(q_len: int, k_len: int, start: Any = 0) -> Any:
    """Float mask ``[q_len, k_len]``: 1 where key position ≤ query position (``start + i``), else 0."""
    q_pos = ops.arange(q_len, dtype="int32") + ops.cast(start, "int32")
    k_pos = ops.arange(k_len, dtype="int32")
    diff = ops.expand_dims(q_pos, 1) - ops.expand_dims(k_pos, 0)
    return ops.cast(ops.clip(diff + 1, 0, 1), "float32")


@keras.saving.register_keras_serializable(package="tfgpt")
class CausalSelfAttention(keras.layers.Layer):
    """GPT-2 style causal self-attention: one fused QKV projection, an output projection.

    Args:
        num_heads: number of attention heads; the input width must divide by it.
        dropout: dropout rate on attention probabilities and the output.
        use_bias: whether the projections have biases.
        init_stddev: stddev of the normal init of the QKV projection.
        proj_init_stddev: stddev for the output projection (GPT-2 scales it by 1/sqrt(2·n_layer)).

    Call args:
        x: ``[batch, time, width]``.
        cache: optional keys/values of earlier positions: ``[batch, 2, max_len, width]``, or
            heads-first ``[batch, 2, heads, max_len, head_dim]`` (fastest for decoding), or the
            model-level ``[batch, n_layer, 2, max_len, width]`` cache with ``cache_layer`` set.
        cache_index: int scalar, where this chunk's first position goes in the cache.
        cache_layer: this layer's slot in a model-level cache (updated in place, never copied).

    Returns ``y`` (``[batch, time, width]``), or ``(y, new_cache)`` when a cache is given.

    Example:
        >>> attn = CausalSelfAttention(num_heads=4)
        >>> y = attn(keras.ops.zeros((2, 8, 64)))
        >>> tuple(y.shape)
        (2, 8, 64)
    """

    def __init__(
        self,
        num_heads: int,
        dropout: float = 0.0,
        use_bias: bool = True,
        init_stddev: float = 0.02,
        proj_init_stddev: float = 0.02,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.dropout = dropout
        self.use_bias = use_bias
        self.init_stddev = init_stddev
        self.proj_init_stddev = proj_init_stddev

    def build(self, input_shape: tuple) -> None:
        width = input_shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
        self.width = width
        self.head_dim = width // self.num_heads
        self.c_attn = keras.layers.Dense(
            3 * width,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.RandomNormal(stddev=self.init_stddev),
            dtype=self.dtype_policy,
            name="c_attn",
        )
        self.c_attn.build(input_shape)
        self.c_proj = keras.layers.Dense(
            width,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.RandomNormal(stddev=self.proj_init_stddev),
            dtype=self.dtype_policy,
            name="c_proj",
        )
        self.c_proj.build(tuple(input_shape[:-1]) + (width,))
        self.attn_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.resid_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def call(
        self,
        x: Any,
        cache: Any = None,
        cache_index: Any = None,
        cache_layer: int | None = None,
        training: bool | None = None,
    ) -> Any:
        batch, q_len = ops.shape(x)[0], ops.shape(x)[1]
        qkv = self.c_attn(x)
        q, k, v = ops.split(qkv, 3, axis=-1)
        start: Any = 0
        if cache is not None and cache_layer is None and len(cache.shape) == 5:
            return self._call_heads_major(q, k, v, cache, cache_index, training)
        if cache is not None:
            start = 0 if cache_index is None else cache_index
            index = ops.cast(start, "int32")
            zero = ops.zeros((), "int32")
            kv = ops.cast(ops.stack([k, v], axis=1), cache.dtype)  # [batch, 2, time, width]
            scatter = _CACHE_UPDATE_MODE == "scatter"
            if cache_layer is None:
                if scatter:
                    new_cache = _scatter_time(cache, (), index, kv)
                else:
                    new_cache = ops.slice_update(cache, (zero, zero, index, zero), kv)
                k_all, v_all = new_cache[:, 0], new_cache[:, 1]
            else:
                # Update the model-level cache in place (XLA aliases the buffer): no per-step copies.
                layer = ops.cast(cache_layer, "int32")
                if scatter:
                    new_cache = _scatter_time(cache, (layer,), index, kv)
                else:
                    new_cache = ops.slice_update(cache, (zero, layer, zero, index, zero), ops.expand_dims(kv, 1))
                k_all, v_all = new_cache[:, cache_layer, 0], new_cache[:, cache_layer, 1]
            k, v = ops.cast(k_all, q.dtype), ops.cast(v_all, q.dtype)
        y = self._attend(self._heads(q), self._heads(k), self._heads(v), start, "bthd", training)
        y = ops.reshape(y, (batch, q_len, self.width))
        y = self.resid_dropout(self.c_proj(y), training=training)
        if cache is not None:
            return y, new_cache
        return y

    def _heads(self, t: Any) -> Any:
        """``[batch, time, width]`` → ``[batch, time, heads, head_dim]`` (a free reshape)."""
        return ops.reshape(t, (ops.shape(t)[0], ops.shape(t)[1], self.num_heads, self.head_dim))

    def _attend(self, q: Any, k: Any, v: Any, start: Any, layout: str, training: bool | None) -> Any:
        """Masked softmax attention; ``layout`` "bthd" (time before heads) or "bhtd" (heads first).

        Returns ``[batch, q_time, heads, head_dim]`` for "bthd", ``[batch, heads, q_time, head_dim]``
        for "bhtd".
        """
        scores_eq, out_eq = {
            "bthd": ("bqhd,bkhd->bhqk", "bhqk,bkhd->bqhd"),
            "bhtd": ("bhqd,bhkd->bhqk", "bhqk,bhkd->bhqd"),
        }[layout]
        time_axis = 1 if layout == "bthd" else 2
        q_len, k_len = ops.shape(q)[time_axis], ops.shape(k)[time_axis]
        q = q * ops.cast(1.0 / math.sqrt(self.head_dim), q.dtype)
        scores = ops.cast(ops.einsum(scores_eq, q, k), "float32")
        mask = causal_mask(q_len, k_len, start)
        scores = scores + (mask - 1.0) * (-MASK_VALUE)
        probs = ops.softmax(scores, axis=-1)
        probs = self.attn_dropout(ops.cast(probs, v.dtype), training=training)
        return ops.einsum(out_eq, probs, v)

    def _call_heads_major(self, q: Any, k: Any, v: Any, cache: Any, cache_index: Any, training: bool | None) -> Any:
        """Cached attention over a per-layer ``[batch, 2, heads, max_len, head_dim]`` cache.

        Keys and values are stored heads-first, so each decode step attends with plain batched
        matrix products over the cache; the ``[batch, time, heads, head_dim]`` layout would make
        XLA transpose the whole cache every step.
        """
        if _CACHE_UPDATE_MODE != "slice":
            raise ValueError("the heads-major per-layer cache supports cache_update_mode('slice') only")
        batch, q_len = ops.shape(q)[0], ops.shape(q)[1]
        start = 0 if cache_index is None else cache_index
        index = ops.cast(start, "int32")
        zero = ops.zeros((), "int32")
        to_heads_first = (0, 2, 1, 3)
        kv = ops.stack(
            [ops.transpose(self._heads(k), to_heads_first), ops.transpose(self._heads(v), to_heads_first)], axis=1
        )
        new_cache = ops.slice_update(cache, (zero, zero, zero, index, zero), ops.cast(kv, cache.dtype))
        qh = ops.transpose(self._heads(q), to_heads_first)
        kh, vh = ops.cast(new_cache[:, 0], q.dtype), ops.cast(new_cache[:, 1], q.dtype)
        y = self._attend(qh, kh, vh, start, "bhtd", training)
        y = ops.reshape(ops.transpose(y, to_heads_first), (batch, q_len, self.width))
        return self.resid_dropout(self.c_proj(y), training=training), new_cache

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            dropout=self.dropout,
            use_bias=self.use_bias,
            init_stddev=self.init_stddev,
            proj_init_stddev=self.proj_init_stddev,
        )
        return config
