"""tfgpt: GPT-style language models with TensorFlow/Keras, from raw text to a deployed model.

Example:
    >>> import tfgpt
    >>> model = tfgpt.GPT(tfgpt.GPTConfig.preset("char-small"))
    >>> tuple(model(np.zeros((1, 8), "int32")).shape)  # logits [batch, time, vocab]
    (1, 8, 65)
    >>> model, tokenizer = tfgpt.load("runs/shakespeare")  # doctest: +SKIP
    >>> print(tfgpt.generate(model, tokenizer, "ROMEO:", max_new_tokens=100, temperature=0.8))  # doctest: +SKIP

Heavy modules (Keras, TensorFlow) load on first use, so ``tfgpt --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "GPTConfig": "tfgpt.config",
    "GPT": "tfgpt.model",
    "CausalSelfAttention": "tfgpt.model",
    "MLP": "tfgpt.model",
    "TransformerBlock": "tfgpt.model",
    "load": "tfgpt.runs",
    "save_run": "tfgpt.runs",
    "generate": "tfgpt.generate",
    "generate_ids": "tfgpt.generate",
    "load_tokenizer": "tfgpt.tokenizers",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfgpt' has no attribute {name!r}")
