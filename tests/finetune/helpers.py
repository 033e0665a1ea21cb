"""A tiny random run for the fine-tuning tests: one block, 32 wide, a char tokenizer with end-of-text."""

from __future__ import annotations

from pathlib import Path

import keras

from tfgpt.model import GPT
from tfgpt.runs import save_run
from tfgpt.tokenizers import CharTokenizer


def char_tokenizer(texts: list[str]) -> CharTokenizer:
    """The char vocabulary of ``texts`` plus ``<|endoftext|>`` (which the fine-tuning drivers need)."""
    return CharTokenizer.train(texts, special_tokens=["<|endoftext|>"])


def tiny_run(path: Path, tokenizer: CharTokenizer, block_size: int) -> Path:
    """Save a seeded, random 1-layer GPT (2 heads, 32 wide) over ``tokenizer`` as a run dir at ``path``."""
    keras.utils.set_random_seed(0)
    gpt = GPT(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=32)
    gpt.build((None, None))
    return save_run(path, gpt, tokenizer)
