"""Paths of the files shipped inside the package (``tfgpt/assets/``): GPT-2's vocabulary, the demo corpus.

They travel with every install, so ``--tokenizer gpt2`` and ``tfgpt demo`` need no download and no
data beside the checkout. Standard library only, so any module may import it.

Example:
    >>> from tfgpt.assets_path import gpt2_vocab_dir
    >>> sorted(p.name for p in gpt2_vocab_dir().iterdir() if p.suffix in (".json", ".bpe"))
    ['encoder.json', 'vocab.bpe']
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def asset_path(*parts: str) -> Path:
    """``tfgpt/assets/<parts>`` as a file-system path (e.g. ``asset_path("corpus", "tinyshakespeare.txt")``)."""
    return Path(str(importlib.resources.files("tfgpt").joinpath("assets", *parts)))


def gpt2_vocab_dir() -> Path:
    """The packaged directory with GPT-2's ``encoder.json`` + ``vocab.bpe`` (sources: its ``SOURCES.md``).

    ``BPETokenizer.gpt2()`` loads it when given no directory and ``$TFGPT_GPT2_BPE_DIR`` is unset.
    """
    return asset_path("gpt2")
