"""Causal multi-head self-attention with an optional static-shape KV cache.

The same ``call`` serves training (no cache: every position attends to itself and the past)
and cached decoding (write this chunk's keys/values at ``cache_index``, attend over the
whole cache with positions after the chunk masked out). The cache has one layout, per layer
and heads-first: ``[batch, 2, heads, max_len, head_dim]`` (keys at ``[:, 0]``, values at
``[:, 1]``), so attention over it is a plain batched matrix product. Shapes never depend on
the step, so one compiled decode step serves every token. The mask is arithmetic (no boolean
tensors), which keeps TFLite conversion to builtin ops. Design notes: docs/design/attention.md.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

MASK_VALUE = -1e9

#: How a call writes keys/values into the cache (the ``cache_update`` argument):
#: "slice" (``ops.slice_update``: TensorFlow lowers it to ``XlaDynamicUpdateSlice``, in place
#: under XLA and a DYNAMIC_UPDATE_SLICE builtin in TFLite) or "scatter" (``ops.scatter_update``,
#: i.e. ``tf.tensor_scatter_nd_update``: a plain TF kernel, for graphs run without XLA such as
#: the SavedModel TensorFlow Serving loads).
CACHE_UPDATES = ("slice", "scatter")


def causal_mask(q_len: int, k_len: int, start: Any = 0) -> Any:
    """Float mask ``[q_len, k_len]``: 1 where key position ≤ query position (``start + i``), else 0.

    Example:
        >>> import keras
        >>> keras.ops.convert_to_numpy(causal_mask(2, 3, start=1)).tolist()
        [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    """
    q_pos = ops.arange(q_len, dtype="int32") + ops.cast(start, "int32")
    k_pos = ops.arange(k_len, dtype="int32")
    diff = ops.expand_dims(q_pos, 1) - ops.expand_dims(k_pos, 0)  # [q_len, k_len]
    return ops.cast(ops.clip(diff + 1, 0, 1), "float32")


def check_cache_update(mode: str) -> str:
    """``mode`` if it is one of :data:`CACHE_UPDATES`, else a ValueError naming it."""
    if mode not in CACHE_UPDATES:
        raise ValueError(f"cache_update must be one of {CACHE_UPDATES}, got {mode!r}")
    return mode


def update_cache(cache: Any, kv: Any, index: Any, mode: str = "slice") -> Any:
    """``cache[:, :, :, index : index + time] = kv``, written the ``mode`` way.

    ``cache``: ``[batch, 2, heads, max_len, head_dim]``; ``kv``: ``[batch, 2, heads, time,
    head_dim]`` in the cache's dtype; ``index``: int32 scalar.

    Example:
        >>> import keras
        >>> cache = keras.ops.zeros((1, 2, 1, 4, 1))
        >>> new = update_cache(cache, keras.ops.ones((1, 2, 1, 2, 1)), 1, mode="scatter")
        >>> keras.ops.convert_to_numpy(new)[0, 0, 0, :, 0].tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    index = ops.cast(index, "int32")
    if check_cache_update(mode) == "slice":
        zero = ops.zeros((), "int32")
        return ops.slice_update(cache, (zero, zero, zero, index, zero), kv)
    shape = ops.shape(kv)
    batch, heads, time, head_dim = shape[0], shape[2], shape[3], shape[4]
    # One row [b, s, h, index + t] per head_dim vector written.
    grid = ops.zeros((batch, 2, heads, time), "int32")
    b = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1, 1)) + grid
    s = ops.reshape(ops.arange(2, dtype="int32"), (1, -1, 1, 1)) + grid
    h = ops.reshape(ops.arange(heads, dtype="int32"), (1, 1, -1, 1)) + grid
    t = ops.reshape(ops.arange(time, dtype="int32"), (1, 1, 1, -1)) + index + grid
    indices = ops.reshape(ops.stack([b, s, h, t], axis=-1), (-1, 4))  # [batch·2·heads·time, 4]
    return ops.scatter_update(cache, indices, ops.reshape(kv, (-1, head_dim)))  # kv: [batch·2·heads·time, head_dim]


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
        cache: optional keys/values of earlier positions, ``[batch, 2, heads, max_len, head_dim]``.
        cache_index: int scalar, where this chunk's first position goes in the cache (default 0).
        cache_update: how the cache is written, "slice" (default) or "scatter" (no XLA ops).

    Returns ``y`` (``[batch, time, width]``), or ``(y, new_cache)`` when a cache is given.

    Example:
        >>> import keras
        >>> attn = CausalSelfAttention(num_heads=4)
        >>> tuple(attn(keras.ops.zeros((2, 8, 64))).shape)
        (2, 8, 64)
        >>> cache = keras.ops.zeros((2, 2, 4, 16, 16))  # [batch, 2, heads, max_len, head_dim]
        >>> y, cache = attn(keras.ops.zeros((2, 3, 64)), cache=cache, cache_index=0)
        >>> tuple(y.shape), tuple(cache.shape)
        ((2, 3, 64), (2, 2, 4, 16, 16))
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
        # === Config ===
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
        # === Layers ===
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
        cache_update: str = "slice",
        training: bool | None = None,
    ) -> Any:
        check_cache_update(cache_update)
        batch, time = ops.shape(x)[0], ops.shape(x)[1]
        # qkv: one projection, split into query, key, value
        q, k, v = ops.split(self.c_attn(x), 3, axis=-1)  # 3 × [batch, time, width]
        # heads
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)  # [batch, heads, time, head_dim]
        start: Any = 0
        if cache is not None:  # keys/values so far: write this chunk's, read them all
            self._check_cache(cache)
            start = 0 if cache_index is None else cache_index
            kv = ops.cast(ops.stack([k, v], axis=1), cache.dtype)  # [batch, 2, heads, time, head_dim]
            cache = update_cache(cache, kv, start, cache_update)
            k = ops.cast(cache[:, 0], q.dtype)  # [batch, heads, max_len, head_dim]
            v = ops.cast(cache[:, 1], q.dtype)  # [batch, heads, max_len, head_dim]
        # attend
        y = self._attend(q, k, v, start, training)  # [batch, heads, time, head_dim]
        # project: heads side by side again
        y = ops.transpose(y, (0, 2, 1, 3))  # [batch, time, heads, head_dim]
        y = ops.reshape(y, (batch, time, self.width))  # [batch, time, width]
        y = self.resid_dropout(self.c_proj(y), training=training)
        return y if cache is None else (y, cache)

    def _split_heads(self, t: Any) -> Any:
        """``[batch, time, width]`` → ``[batch, heads, time, head_dim]``."""
        t = ops.reshape(t, (ops.shape(t)[0], ops.shape(t)[1], self.num_heads, self.head_dim))  # [b, t, h, d]
        return ops.transpose(t, (0, 2, 1, 3))  # [batch, heads, time, head_dim]

    def _attend(self, q: Any, k: Any, v: Any, start: Any, training: bool | None) -> Any:
        """Masked softmax attention of ``q`` (query positions ``start + i``) over ``k``/``v``.

        ``q``: ``[batch, heads, q_len, head_dim]``; ``k``, ``v``: ``[batch, heads, k_len, head_dim]``;
        returns ``[batch, heads, q_len, head_dim]``. Scores and softmax are float32.
        """
        q_len, k_len = ops.shape(q)[2], ops.shape(k)[2]
        q = q * ops.cast(1.0 / math.sqrt(self.head_dim), q.dtype)
        scores = ops.cast(ops.einsum("bhqd,bhkd->bhqk", q, k), "float32")  # [batch, heads, q_len, k_len]
        mask = causal_mask(q_len, k_len, start)  # [q_len, k_len]
        scores = scores + (mask - 1.0) * (-MASK_VALUE)
        probs = ops.softmax(scores, axis=-1)
        probs = self.attn_dropout(ops.cast(probs, v.dtype), training=training)
        return ops.einsum("bhqk,bhkd->bhqd", probs, v)

    def _check_cache(self, cache: Any) -> None:
        """A one-line error for a cache not shaped ``[batch, 2, heads, max_len, head_dim]``."""
        shape = tuple(cache.shape)
        expected = (None, 2, self.num_heads, None, self.head_dim)
        if len(shape) != 5 or any(e is not None and s not in (None, e) for s, e in zip(shape, expected, strict=True)):
            raise ValueError(
                f"cache must be [batch, 2, heads={self.num_heads}, max_len, head_dim={self.head_dim}], "
                f"got shape {shape}"
            )

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
