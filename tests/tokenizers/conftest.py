"""Fixtures for tokenizer tests: GPT-2 files, an independent HF reference, in-graph tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfgpt.assets_path import gpt2_vocab_dir
from tfgpt.tokenizers import BPETokenizer, CharTokenizer

#: Strings that have tripped up GPT-2 re-implementations.
ADVERSARIAL = [
    "",
    " ",
    "x  ",
    "   \n\n\t  x",
    "a\n\n\tb",
    '.)\n\n"The',
    "a  \n\nb",
    "x \n y",
    "Hello  world",
    "I'll've",
    "don'T I'LL 's  's",
    "12345 1,000,000 3.14159 ٣٤ ६ ६६",
    "😀👍🏽 family: 👨‍👩‍👧",
    "日本語のテキスト、中文文本。한국어",
    "e\u0301 a\u0300\u0301 Z\u0351\u0353",
    "<|endoftext|>",
    "a <|endoftext|> b<|endoftext|><|endoftext|>c",
    "<|endoftext",
    "tabs\tand\r\nCRLF\r\n",
    "\u00a0x \u3000y \u2009z \u2028w \x85v \x1cu \vt \u200bs",
    "  leading and trailing  ",
    "!!! ??? ... --- ''' \"\"\"",
    "\x00\x01 control",
]

#: Pieces that hypothesis strings are built from (whitespace runs, contractions, specials, scripts).
TRICKY_PIECES = [
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "\r\n",
    "\u00a0",
    "\u3000",
    "\x85",
    "'s",
    "'ll",
    "'",
    "ve",
    "a",
    "Z",
    "é",
    "e\u0301",
    "1",
    "42",
    "!",
    "?!",
    "<|endoftext|>",
    "日本",
    "😀",
    "६",
    "\u2028",
    "\v",
]


@pytest.fixture(scope="session")
def gpt2_dir() -> Path:
    """GPT-2's encoder.json + vocab.bpe as shipped in the package (tfgpt/assets/gpt2)."""
    return gpt2_vocab_dir()


@pytest.fixture(scope="session")
def gpt2(gpt2_dir: Path) -> BPETokenizer:
    return BPETokenizer.gpt2(gpt2_dir)


def hf_reference(directory: Path, special_tokens: list[str]):
    """An independent GPT-2-style tokenizer: HF ``tokenizers`` BPE over the same files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    model = models.BPE.from_file(str(directory / "encoder.json"), str(directory / "vocab.bpe"))
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(special_tokens)
    return tok


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
