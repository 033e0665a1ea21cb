"""The GPT ``keras.Model``: token + position embeddings, Transformer blocks, final LayerNorm, head.

``model(ids)`` returns logits ``[batch, time, vocab]`` (float32 even under mixed precision).
``model(ids, cache=cache, cache_index=i)`` runs with a static-shape KV cache and returns
``(logits, new_cache)`` of the same form: ``[batch, n_layer, 2, max_len, n_embd]`` (5-D, so TFLite
can carry it), or a list of per-layer ``[batch, 2, max_len, n_embd]`` or heads-first
``[batch, 2, n_head, max_len, head_dim]`` tensors (what generation uses). A decode step costs one
token's work. Generation and export trace this same path.
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

    Example:
        >>> model = GPT(GPTConfig.preset("char-small"))
        >>> logits = model(keras.ops.zeros((1, 16), "int32"))
        >>> tuple(logits.shape)
        (1, 16, 65)
        >>> cache = model.init_cache(batch_size=1, max_length=32)
        >>> logits, cache = model(keras.ops.zeros((1, 4), "int32"), cache=cache, cache_index=0)
    """

    def __init__(self, config: GPTConfig | dict | None = None, **kwargs: Any) -> None:
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

    def init_cache(
        self, batch_size: int, max_length: int | None = None, dtype: str | None = None, per_layer: bool = False
    ) -> Any:
        """Zeros ``[batch, n_layer, 2, max_length, n_embd]`` for cached decoding.

        ``per_layer=True`` gives a list of ``n_layer`` heads-first tensors
        ``[batch, 2, n_head, max_length, head_dim]`` instead: the same values, but each layer's
        buffer is separate, so a compiled decode loop updates each in place (one 5-D buffer makes
        XLA copy it once per layer per step), and attention reads it without transposes.
        """
        c = self.config
        max_length = max_length or c.block_size
        if max_length > c.block_size:
            raise ValueError(f"cache length {max_length} exceeds block_size {c.block_size}")
        dtype = dtype or self.dtype_policy.compute_dtype
        if per_layer:
            shape = (batch_size, 2, c.n_head, max_length, c.head_dim)
            return [ops.zeros(shape, dtype=dtype) for _ in range(c.n_layer)]
        return ops.zeros((batch_size, c.n_layer, 2, max_length, c.n_embd), dtype=dtype)

    def hidden_states(
        self, token_ids: Any, cache: Any = None, cache_index: Any = None, training: bool | None = None
    ) -> tuple[Any, Any]:
        """Final-LayerNorm hidden states ``[batch, time, n_embd]`` and the updated cache (or None)."""
        token_ids = ops.cast(token_ids, "int32")
        seq_len = ops.shape(token_ids)[1]
        if isinstance(seq_len, int) and seq_len > self.config.block_size:
            # Without this the position lookup fails deep in Embedding (TF eager), is silently clamped
            # (XLA) or yields NaN (JAX); a dynamic length is the caller's to crop (tfgpt.generate does).
            raise ValueError(
                f"sequence length {seq_len} exceeds block_size {self.config.block_size}: crop the input "
                f"to its last {self.config.block_size} tokens"
            )
        positions = ops.arange(seq_len, dtype="int32")
        if cache is not None and cache_index is not None:
            positions = positions + ops.cast(cache_index, "int32")
        x = self.wte(token_ids) + ops.expand_dims(self.wpe(positions), 0)
        x = self.drop(x, training=training)
        if cache is None:
            for block in self.blocks:
                x = block(x, training=training)
            return self.ln_f(x), None
        index = 0 if cache_index is None else cache_index
        if isinstance(cache, (list, tuple)):
            new_caches = []
            for block, layer_cache in zip(self.blocks, cache, strict=True):
                x, layer_cache = block(x, cache=layer_cache, cache_index=index, training=training)
                new_caches.append(layer_cache)
            return self.ln_f(x), new_caches
        for i, block in enumerate(self.blocks):
            x, cache = block(x, cache=cache, cache_index=index, cache_layer=i, training=training)
        return self.ln_f(x), cache

    def logits_from_hidden(self, hidden: Any) -> Any:
        """Project hidden states to vocabulary logits (float32)."""
        if self.lm_head is not None:
            logits = self.lm_head(hidden)
        else:
            emb = ops.cast(self.wte.embeddings, hidden.dtype)
            logits = ops.einsum("btd,vd->btv", hidden, emb)
        return ops.cast(logits, "float32")

    def call(
        self, token_ids: Any, cache: Any = None, cache_index: Any = None, training: bool | None = None
    ) -> Any:
        hidden, new_cache = self.hidden_states(token_ids, cache, cache_index, training=training)
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
