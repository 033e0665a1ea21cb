"""The GPT ``keras.Model``: token + position embeddings, Transformer blocks, final LayerNorm, head.

``model(ids)`` returns logits ``[batch, time, vocab]`` (float32 even under mixed precision).
``model(ids, cache=cache, cache_index=i)`` runs with a static-shape KV cache and returns
``(logits, new_cache)``. The cache is :meth:`GPT.init_cache`'s list of ``n_layer`` per-layer,
heads-first ``[batch, 2, n_head, max_len, head_dim]`` tensors, the one layout generation and
export use (the TFLite export converts it to its external 5-D form at its signature). A decode
step costs one token's work. Generation and export trace this same path.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from tfgpt.config import GPTConfig, from_dict
from tfgpt.model.block import TransformerBlock

_CONFIG_FIELDS = tuple(GPTConfig.__dataclass_fields__)


@keras.saving.register_keras_serializable(package="tfgpt")
class GPT(keras.Model):
    """A GPT-2 style decoder-only language model.

    Args:
        config: a :class:`~tfgpt.config.GPTConfig` (or its fields as keyword arguments).

    Call args:
        token_ids: int ``[batch, time]``.
        cache: optional, the list :meth:`init_cache` makes (or a call returned).
        cache_index: int scalar, the position of ``token_ids[:, 0]`` (default 0).
        cache_update: how the cache is written: "slice" (default) or "scatter" (no XLA ops).

    Example:
        >>> import keras
        >>> model = GPT(GPTConfig.preset("char-small"))
        >>> logits = model(keras.ops.zeros((1, 16), "int32"))
        >>> tuple(logits.shape)
        (1, 16, 65)
        >>> cache = model.init_cache(batch_size=1, max_length=32)
        >>> len(cache), tuple(cache[0].shape)  # n_layer × [batch, 2, n_head, max_len, head_dim]
        (4, (1, 2, 4, 32, 32))
        >>> logits, cache = model(keras.ops.zeros((1, 4), "int32"), cache=cache, cache_index=0)
        >>> tuple(logits.shape)
        (1, 4, 65)
    """

    def __init__(self, config: GPTConfig | dict | None = None, **kwargs: Any) -> None:
        # === Config ===
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_FIELDS}
        if config is None:
            config = from_dict(GPTConfig, fields, where="GPT(...)")
        elif isinstance(config, dict):
            config = from_dict(GPTConfig, {**config, **fields}, where="GPT config")
        elif fields:
            raise TypeError("pass either a GPTConfig or config fields as keywords, not both")
        super().__init__(**kwargs)
        self.config = config
        c = config
        proj_std = 0.02 / math.sqrt(2 * c.n_layer)
        policy = self.dtype_policy
        # === Layers ===
        self.wte = keras.layers.Embedding(
            c.vocab_size, c.n_embd,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=policy, name="wte",
        )
        self.wpe = keras.layers.Embedding(
            c.block_size, c.n_embd,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=policy, name="wpe",
        )
        self.drop = keras.layers.Dropout(c.dropout, dtype=policy)
        self.blocks = [
            TransformerBlock(
                c.n_head, dropout=c.dropout, use_bias=c.bias, norm=c.norm,
                layer_norm_epsilon=c.layer_norm_epsilon, init_stddev=0.02, proj_init_stddev=proj_std,
                dtype=policy, name=f"h_{i}",
            )
            for i in range(c.n_layer)
        ]
        self.ln_f = keras.layers.LayerNormalization(
            epsilon=c.layer_norm_epsilon, center=c.bias, dtype=policy, name="ln_f"
        )
        self.lm_head = None
        if not c.tie_embeddings:
            self.lm_head = keras.layers.Dense(
                c.vocab_size, use_bias=False,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                dtype=policy, name="lm_head",
            )

    def build(self, input_shape: tuple = (None, None)) -> None:
        c = self.config
        hidden = tuple(input_shape[:2]) + (c.n_embd,)
        layers = [(self.wte, input_shape), (self.wpe, input_shape)]
        layers += [(block, hidden) for block in self.blocks] + [(self.ln_f, hidden)]
        if self.lm_head is not None:
            layers.append((self.lm_head, hidden))
        for layer, shape in layers:
            if not layer.built:
                layer.build(shape)
        self.built = True

    # -- pieces, used by generation and export -------------------------------------------

    def init_cache(self, batch_size: int, max_length: int | None = None, dtype: str | None = None) -> list[Any]:
        """Zeros for cached decoding: a list of ``n_layer`` ``[batch, 2, n_head, max_length, head_dim]``.

        One buffer per layer, so a compiled decode loop updates each in place (one 5-D buffer for
        the whole model makes XLA copy it once per layer per step), heads-first, so attention
        reads it without transposes. ``max_length`` defaults to block_size and may not exceed it.
        """
        c = self.config
        max_length = max_length or c.block_size
        if max_length > c.block_size:
            raise ValueError(f"cache length {max_length} exceeds block_size {c.block_size}")
        dtype = dtype or self.dtype_policy.compute_dtype
        shape = (batch_size, 2, c.n_head, max_length, c.head_dim)
        return [ops.zeros(shape, dtype=dtype) for _ in range(c.n_layer)]

    def hidden_states(
        self,
        token_ids: Any,
        cache: Any = None,
        cache_index: Any = None,
        cache_update: str = "slice",
        training: bool | None = None,
    ) -> tuple[Any, Any]:
        """Final-LayerNorm hidden states ``[batch, time, n_embd]`` and the updated cache (or None).

        ``cache``: the list :meth:`init_cache` makes (or one from an earlier call), written at
        ``cache_index`` the ``cache_update`` way ("slice" or "scatter").
        """
        x = self._embed(token_ids, 0 if cache is None or cache_index is None else cache_index, training)
        if cache is None:
            for block in self.blocks:
                x = block(x, training=training)
            return self.ln_f(x), None
        cache = self._check_cache(cache)
        index = 0 if cache_index is None else cache_index
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache, strict=True):
            x, layer_cache = block(
                x, cache=layer_cache, cache_index=index, cache_update=cache_update, training=training
            )
            new_cache.append(layer_cache)
        return self.ln_f(x), new_cache

    def _embed(self, token_ids: Any, start: Any, training: bool | None) -> Any:
        """Token + position embeddings ``[batch, time, n_embd]`` for positions ``start, start + 1, ...``."""
        token_ids = ops.cast(token_ids, "int32")
        seq_len = ops.shape(token_ids)[1]
        if isinstance(seq_len, int) and seq_len > self.config.block_size:
            # Without this the position lookup fails deep in Embedding (TF eager), is silently clamped
            # (XLA) or yields NaN (JAX); a dynamic length is the caller's to crop (tfgpt.generate does).
            raise ValueError(
                f"sequence length {seq_len} exceeds block_size {self.config.block_size}: crop the input "
                f"to its last {self.config.block_size} tokens"
            )
        positions = ops.arange(seq_len, dtype="int32") + ops.cast(start, "int32")  # [time]
        x = self.wte(token_ids) + ops.expand_dims(self.wpe(positions), 0)  # [batch, time, n_embd]
        return self.drop(x, training=training)

    def _check_cache(self, cache: Any) -> list[Any]:
        """The per-layer cache as a list, or a one-line error naming the expected form."""
        if not isinstance(cache, (list, tuple)) or len(cache) != self.config.n_layer:
            got = f"a list of {len(cache)}" if isinstance(cache, (list, tuple)) else f"shape {tuple(cache.shape)}"
            raise ValueError(
                f"cache must be a list of {self.config.n_layer} per-layer [batch, 2, n_head, max_len, head_dim] "
                f"tensors (GPT.init_cache), got {got}"
            )
        return list(cache)

    def logits_from_hidden(self, hidden: Any) -> Any:
        """Project hidden states to vocabulary logits (float32)."""
        if self.lm_head is not None:
            logits = self.lm_head(hidden)
        else:
            emb = ops.cast(self.wte.embeddings, hidden.dtype)
            logits = ops.einsum("btd,vd->btv", hidden, emb)
        return ops.cast(logits, "float32")

    def call(
        self,
        token_ids: Any,
        cache: Any = None,
        cache_index: Any = None,
        cache_update: str = "slice",
        training: bool | None = None,
    ) -> Any:
        hidden, new_cache = self.hidden_states(token_ids, cache, cache_index, cache_update, training=training)
        logits = self.logits_from_hidden(hidden)
        if cache is not None:
            return logits, new_cache
        return logits

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape[:2]) + (self.config.vocab_size,)

    def get_config(self) -> dict[str, Any]:
        base = super().get_config()
        base.pop("trainable", None)
        return {**base, **self.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GPT:
        return cls(**config)
