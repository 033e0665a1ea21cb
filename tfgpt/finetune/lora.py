"""LoRA and freezing by layer group on a tfgpt GPT, with Keras's own ``Dense.enable_lora``.

Keras merges the LoRA delta into the kernel when a model is saved, so a saved or exported model
needs no LoRA code. Freezing groups (see :func:`freeze`): ``all`` trains everything, ``head``
only the head (for a plain GPT: the final LayerNorm and the tied embedding that serves as the
LM head; for a classifier: what it adds over its ``.backbone``), ``last-block`` the head plus
the last Transformer block, ``lora`` only the LoRA matrices (plus a classifier's own head).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfgpt.errors import ConfigError
from tfgpt.model.gpt import GPT
from tfgpt.model.quantize import block_dense_layers

GROUPS = ("head", "last-block", "all", "lora")
TARGETS = ("attn", "mlp")


def _gpt_of(model: keras.Model) -> GPT:
    """The GPT inside ``model``: the model itself or its ``.backbone``."""
    if isinstance(model, GPT):
        return model
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, GPT):
        return backbone
    raise ConfigError(f"expected a tfgpt GPT or a model with a .backbone GPT, got {type(model).__name__}")


def lora_dense_layers(model: keras.Model, targets: tuple[str, ...] = TARGETS) -> list[keras.layers.Dense]:
    """The attention (c_attn, c_proj) and/or MLP (c_fc, c_proj) Dense layers of each block."""
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ConfigError(f"LoRA targets must be a non-empty subset of {TARGETS}, got {tuple(targets)}")
    return [layer for block in _gpt_of(model).blocks for layer in block_dense_layers(block, tuple(targets))]


def enable_lora_on(
    model: keras.Model, rank: int, alpha: float | None = None, targets: tuple[str, ...] = TARGETS
) -> list[keras.layers.Dense]:
    """Add rank-``rank`` LoRA to the attention/MLP Dense layers; returns the layers changed.

    Keras freezes each layer's kernel and adds ``lora_kernel_a`` [in, rank] and
    ``lora_kernel_b`` [rank, out] (b starts at zero, so logits are unchanged at first); the
    delta is scaled by ``alpha / rank`` (alpha defaults to rank). Biases stay trainable.

    Example:
        >>> from tfgpt.config import GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
        >>> gpt.build((None, None))
        >>> len(enable_lora_on(gpt, rank=2, alpha=4))
        4
        >>> enable_lora_on(gpt, rank=0)
        Traceback (most recent call last):
        tfgpt.errors.ConfigError: --lora-rank must be a positive integer, got 0
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ConfigError(f"--lora-rank must be a positive integer, got {rank!r}")
    if alpha is not None and alpha <= 0:
        raise ConfigError(f"--lora-alpha must be positive, got {alpha!r}")
    gpt = _gpt_of(model)
    if not gpt.built:
        gpt.build((None, None))
    layers = lora_dense_layers(model, tuple(targets))
    if any(layer.lora_enabled for layer in layers):
        raise ConfigError("LoRA is already enabled on this model (Keras allows it once per layer)")
    for layer in layers:
        layer.enable_lora(rank, lora_alpha=alpha)
    return layers


def _head_layers(model: keras.Model, gpt: GPT) -> list[keras.layers.Layer]:
    """The head group: a classifier's own layers, or a plain GPT's ln_f + (tied) LM head."""
    if model is not gpt:
        return [layer for layer in model.layers if layer is not gpt]
    return [gpt.ln_f, gpt.wte if gpt.lm_head is None else gpt.lm_head]


def _group_variables(model: keras.Model, gpt: GPT, group: str) -> list[Any]:
    """The variables ``group`` trains."""
    if group == "all":
        return list(model.weights)
    head = [v for layer in _head_layers(model, gpt) for v in layer.weights]
    if group == "head":
        return head
    if group == "last-block":  # + the last block and the final LayerNorm that reads it
        return head + list(gpt.blocks[-1].weights) + list(gpt.ln_f.weights)
    lora = [layer for layer in lora_dense_layers(model) if layer.lora_enabled]
    if not lora:
        raise ConfigError("--trainable lora needs LoRA enabled first (set --lora-rank)")
    own_head = head if model is not gpt else []
    return own_head + [v for layer in lora for v in (layer.lora_kernel_a, layer.lora_kernel_b)]


def freeze(model: keras.Model, group: str) -> None:
    """Make only ``group`` trainable: ``head``, ``last-block``, ``all`` or ``lora``.

    Works per variable (every layer stays ``trainable=True``, each variable's flag is set), so
    the kernels under LoRA stay frozen in ``lora`` mode. ``all`` trains every variable, LoRA's
    and the kernels under it. ``lora`` needs :func:`enable_lora_on` first. Compile after this.

    Example:
        >>> from tfgpt.config import GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8))
        >>> gpt.build((None, None))
        >>> freeze(gpt, "head")
        >>> param_counts(gpt)  # ln_f (8 + 8) + wte (11 · 8)
        (104, 1912)
        >>> freeze(gpt, "everything")
        Traceback (most recent call last):
        tfgpt.errors.ConfigError: --trainable must be one of head, last-block, all, lora; got 'everything'
    """
    if group not in GROUPS:
        raise ConfigError(f"--trainable must be one of {', '.join(GROUPS)}; got {group!r}")
    gpt = _gpt_of(model)
    chosen = {id(v) for v in _group_variables(model, gpt, group)}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        layer.trainable = True
    for v in model.weights:
        v.trainable = id(v) in chosen


def param_counts(model: keras.Model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (total counts each tied weight once).

    Example:
        >>> from tfgpt.config import GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
        >>> gpt.build((None, None))
        >>> param_counts(gpt)
        (1040, 1040)
    """
    trainable = sum(int(np.prod(v.shape)) for v in _unique(model.trainable_weights))
    total = sum(int(np.prod(v.shape)) for v in _unique(model.weights))
    return trainable, total


def _unique(variables: list[Any]) -> list[Any]:
    """``variables`` without repeats (by identity)."""
    seen: dict[int, Any] = {}
    for v in variables:
        seen.setdefault(id(v), v)
    return list(seen.values())


def quantize_base(model: keras.Model, mode: str = "int8", targets: tuple[str, ...] = TARGETS) -> None:
    """Quantize the attention/MLP Dense layers (QLoRA-style base), leaving embeddings float.

    ``model.quantize`` would also quantize ``wte``, whose int8 table the tied LM head would then
    read unscaled, so only the LoRA target layers are quantized. Call before :func:`enable_lora_on`.
    A saved model holds the merged, re-quantized kernels: rebuild with ``GPT(config)``, build,
    ``quantize_base`` and ``load_weights(path)`` (``keras.saving.load_model`` rebuilds float
    Dense layers and cannot read them).

    Example:
        >>> from tfgpt.config import GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
        >>> gpt.build((None, None))
        >>> quantize_base(gpt)
        >>> str(gpt.blocks[0].attn.c_attn.kernel.dtype), str(gpt.wte.embeddings.dtype)
        ('int8', 'float32')
    """
    if mode not in ("int8", "int4"):
        raise ConfigError(f"--quantize must be int8 or int4 (the modes LoRA runs on), got {mode!r}")
    gpt = _gpt_of(model)
    if not gpt.built:
        gpt.build((None, None))
    for layer in lora_dense_layers(model, targets):
        layer.quantize(mode)
