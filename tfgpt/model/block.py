"""The position-wise MLP and the Transformer block (pre-LN as in GPT-2, or post-LN)."""

from __future__ import annotations

from typing import Any

import keras

from tfgpt.model.attention import CausalSelfAttention


def gelu_tanh(x: Any) -> Any:
    """GPT-2's GELU (tanh approximation)."""
    return keras.activations.gelu(x, approximate=True)


@keras.saving.register_keras_serializable(package="tfgpt")
class MLP(keras.layers.Layer):
    """Dense(4·width) → GELU → Dense(width) → dropout.

    Example:
        >>> import keras
        >>> mlp = MLP()
        >>> tuple(mlp(keras.ops.zeros((1, 3, 32))).shape)
        (1, 3, 32)
    """

    def __init__(
        self,
        expansion: int = 4,
        dropout: float = 0.0,
        use_bias: bool = True,
        init_stddev: float = 0.02,
        proj_init_stddev: float = 0.02,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # === Config ===
        self.expansion = expansion
        self.dropout = dropout
        self.use_bias = use_bias
        self.init_stddev = init_stddev
        self.proj_init_stddev = proj_init_stddev

    def build(self, input_shape: tuple) -> None:
        width = input_shape[-1]
        # === Layers ===
        self.c_fc = keras.layers.Dense(
            self.expansion * width,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.RandomNormal(stddev=self.init_stddev),
            dtype=self.dtype_policy,
            name="c_fc",
        )
        self.c_fc.build(input_shape)
        self.c_proj = keras.layers.Dense(
            width,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.RandomNormal(stddev=self.proj_init_stddev),
            dtype=self.dtype_policy,
            name="c_proj",
        )
        self.c_proj.build(tuple(input_shape[:-1]) + (self.expansion * width,))
        self.drop = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def call(self, x: Any, training: bool | None = None) -> Any:
        return self.drop(self.c_proj(gelu_tanh(self.c_fc(x))), training=training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            expansion=self.expansion,
            dropout=self.dropout,
            use_bias=self.use_bias,
            init_stddev=self.init_stddev,
            proj_init_stddev=self.proj_init_stddev,
        )
        return config


@keras.saving.register_keras_serializable(package="tfgpt")
class TransformerBlock(keras.layers.Layer):
    """Attention + MLP with residual connections.

    ``norm="pre"`` (GPT-2): ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``.
    ``norm="post"`` (original Transformer): ``ln1(x + attn(x))`` then ``ln2(x + mlp(x))``.

    Call args are those of :class:`CausalSelfAttention` (``cache`` is this layer's
    ``[batch, 2, heads, max_len, head_dim]`` keys/values); with a cache the block returns
    ``(y, new_cache)``.

    Example:
        >>> import keras
        >>> block = TransformerBlock(num_heads=2)
        >>> tuple(block(keras.ops.zeros((1, 5, 16))).shape)
        (1, 5, 16)
    """

    def __init__(
        self,
        num_heads: int,
        dropout: float = 0.0,
        use_bias: bool = True,
        norm: str = "pre",
        layer_norm_epsilon: float = 1e-5,
        init_stddev: float = 0.02,
        proj_init_stddev: float = 0.02,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', got {norm!r}")
        # === Config ===
        self.num_heads = num_heads
        self.dropout = dropout
        self.use_bias = use_bias
        self.norm = norm
        self.layer_norm_epsilon = layer_norm_epsilon
        self.init_stddev = init_stddev
        self.proj_init_stddev = proj_init_stddev

    def build(self, input_shape: tuple) -> None:
        common = dict(dropout=self.dropout, use_bias=self.use_bias, init_stddev=self.init_stddev,
                      proj_init_stddev=self.proj_init_stddev, dtype=self.dtype_policy)
        # === Layers ===
        self.ln_1 = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, center=self.use_bias, dtype=self.dtype_policy, name="ln_1"
        )
        self.attn = CausalSelfAttention(self.num_heads, name="attn", **common)
        self.ln_2 = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, center=self.use_bias, dtype=self.dtype_policy, name="ln_2"
        )
        self.mlp = MLP(name="mlp", **common)
        for layer in (self.ln_1, self.attn, self.ln_2, self.mlp):
            layer.build(input_shape)
        self.built = True

    def call(
        self,
        x: Any,
        cache: Any = None,
        cache_index: Any = None,
        cache_update: str = "slice",
        training: bool | None = None,
    ) -> Any:
        if self.norm == "pre":  # GPT-2: x + attn(ln_1(x)), then x + mlp(ln_2(x))
            a, cache = self._attention(self.ln_1(x), cache, cache_index, cache_update, training)
            x = x + a
            x = x + self.mlp(self.ln_2(x), training=training)
        else:  # the original Transformer: ln_1(x + attn(x)), then ln_2(x + mlp(x))
            a, cache = self._attention(x, cache, cache_index, cache_update, training)
            x = self.ln_1(x + a)
            x = self.ln_2(x + self.mlp(x, training=training))
        return x if cache is None else (x, cache)

    def _attention(
        self, x: Any, cache: Any, cache_index: Any, cache_update: str, training: bool | None
    ) -> tuple[Any, Any]:
        """``(attn(x), new_cache)``; ``new_cache`` is None when there is no cache."""
        if cache is None:
            return self.attn(x, training=training), None
        return self.attn(x, cache=cache, cache_index=cache_index, cache_update=cache_update, training=training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            dropout=self.dropout,
            use_bias=self.use_bias,
            norm=self.norm,
            layer_norm_epsilon=self.layer_norm_epsilon,
            init_stddev=self.init_stddev,
            proj_init_stddev=self.proj_init_stddev,
        )
        return config
