"""Data: ``prepare`` (stream → clean → dedupe → tokenize → TFRecord shards) and tf.data pipelines.

Imports are lazy so that tokenizer worker processes never load TensorFlow.

Example:
    >>> from tfgpt.data import prepare, lm_dataset
    >>> prepare(["input.txt"], "data/shakespeare", "char", val_fraction=0.1)  # doctest: +SKIP
    >>> ds = lm_dataset("data/shakespeare", "train", block_size=256, batch_size=64, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["prepare", "lm_dataset", "load_manifest", "verify_shards", "check_tokenizer", "load_data_tokenizer",
           "read_split_tokens", "tokenizer_dir"]

_WHERE = {
    "prepare": "tfgpt.data.prepare",
    "lm_dataset": "tfgpt.data.pipeline",
    "load_data_tokenizer": "tfgpt.data.pipeline",
    "read_split_tokens": "tfgpt.data.pipeline",
    "load_manifest": "tfgpt.data.manifest",
    "verify_shards": "tfgpt.data.manifest",
    "check_tokenizer": "tfgpt.data.manifest",
    "tokenizer_dir": "tfgpt.data.manifest",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'tfgpt.data' has no attribute {name!r}")
