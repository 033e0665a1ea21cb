"""int8 weights for inference: Keras's ``quantize("int8")`` on the attention and MLP Dense layers.

The embeddings stay float32: ``wte`` is also the tied LM head, which would read an int8 table
unscaled, and ``wpe`` is small. What this buys on CPU is memory, not speed: the Dense kernels are
4× smaller, but XLA:CPU's int8 products are slower than its float32 ones (benchmarks/bench_int8.py).

Example:
    >>> from tfgpt.config import GPTConfig
    >>> from tfgpt.model import GPT
    >>> gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    >>> quantize_dense(gpt)
    >>> str(gpt.blocks[0].mlp.c_fc.kernel.dtype), str(gpt.wte.embeddings.dtype)
    ('int8', 'float32')
"""

from __future__ import annotations

from typing import Any

from tfgpt.errors import ConfigError

#: The ``--quantize`` modes of inference (LoRA's base, :func:`tfgpt.finetune.lora.quantize_base`, also takes int4).
QUANTIZE_MODES = ("int8",)
DENSE_GROUPS = ("attn", "mlp")


def block_dense_layers(block: Any, groups: tuple[str, ...] = DENSE_GROUPS) -> list[Any]:
    """A block's attention (c_attn, c_proj) and/or MLP (c_fc, c_proj) Dense layers."""
    layers = []
    if "attn" in groups:
        layers += [block.attn.c_attn, block.attn.c_proj]
    if "mlp" in groups:
        layers += [block.mlp.c_fc, block.mlp.c_proj]
    return layers


def quantize_dense(gpt: Any, mode: str = "int8", groups: tuple[str, ...] = DENSE_GROUPS) -> None:
    """Quantize ``gpt``'s attention/MLP Dense layers in place (``layer.quantize(mode)``), building it first."""
    if mode not in QUANTIZE_MODES:
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, got {mode!r}")
    if not gpt.built:
        gpt.build((None, None))
    for block in gpt.blocks:
        for layer in block_dense_layers(block, groups):
            layer.quantize(mode)
