"""Fixtures for tokenizer tests: GPT-2 files, an independent HF reference, in-graph tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tokenizers.helpers import PROPERTY_EXAMPLES, hf_reference
from tfgpt.assets_path import gpt2_vocab_dir
from tfgpt.tokenizers import BPETokenizer, CharTokenizer


@pytest.fixture(scope="session")
def property_examples(figures):
    """Count a property's examples (``property_examples[name] += 1``); reported as figures after the session."""
    yield PROPERTY_EXAMPLES
    if PROPERTY_EXAMPLES:
        rows = [[name, n] for name, n in sorted(PROPERTY_EXAMPLES.items())]
        figures("80-tokenizer-properties", title="Tokenizer properties (hypothesis)", columns=["property", "examples"],
                rows=rows, test="tests/tokenizers",
                note="An example is one generated string (a batch of strings counts each string). Strings are any "
                     "Unicode scalar values (surrogates excluded: they cannot occur in UTF-8 text) or pieces biased "
                     "to whitespace, contractions, digits and special tokens.")

@pytest.fixture(scope="session")
def gpt2_dir() -> Path:
    """GPT-2's encoder.json + vocab.bpe as shipped in the package (tfgpt/assets/gpt2)."""
    return gpt2_vocab_dir()


@pytest.fixture(scope="session")
def gpt2(gpt2_dir: Path) -> BPETokenizer:
    return BPETokenizer.gpt2(gpt2_dir)


@pytest.fixture(scope="session")
def gpt2_hf(gpt2_dir: Path):
    return hf_reference(gpt2_dir, ["<|endoftext|>"])


@pytest.fixture(scope="session")
def gpt2_graph(gpt2: BPETokenizer):
    return gpt2.graph_tokenizer()


@pytest.fixture(scope="session")
def verdict(verdict_file: Path) -> str:
    return verdict_file.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def shakespeare(shakespeare_file: Path) -> str:
    """The first 64 KiB of tinyshakespeare (59 distinct characters)."""
    return shakespeare_file.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def trained_bpe(shakespeare: str) -> BPETokenizer:
    return BPETokenizer.train([shakespeare], vocab_size=600)


@pytest.fixture(scope="session")
def shakespeare_char(shakespeare: str) -> CharTokenizer:
    return CharTokenizer.train([shakespeare], special_tokens=["<|endoftext|>"])
