"""The tokenizer of an imported GPT-2: the files beside the weights, a directory, or the packaged GPT-2.

Three spellings of the same two files are recognised (a token -> id JSON and a merges list):
Hugging Face's ``vocab.json`` + ``merges.txt``, OpenAI's ``encoder.json`` + ``vocab.bpe``, and
keras-hub's ``assets/tokenizer/vocabulary.json`` + ``merges.txt``. ``"gpt2"`` (or no choice and no
files beside the weights) is the copy of GPT-2's vocabulary shipped in the package.

Example:
    >>> from tfgpt.assets_path import gpt2_vocab_dir
    >>> found = find_tokenizer(gpt2_vocab_dir(), None)
    >>> found.tokenizer.kind, found.tokenizer.vocab_size, [p.name for p in found.files]
    ('gpt2', 50257, ['encoder.json', 'vocab.bpe'])
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from tfgpt.assets_path import gpt2_vocab_dir
from tfgpt.convert.keras_hub_preset import TOKENIZER_ASSETS
from tfgpt.errors import ConvertError, TokenizerError
from tfgpt.tokenizers.bpe import BPETokenizer, read_merges

#: (token -> id file, merges file) pairs, in the order they are looked for.
PAIRS = (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe"), TOKENIZER_ASSETS)

__all__ = ["FoundTokenizer", "find_tokenizer", "tokenizer_files", "load_pair"]

#: How a special token looks (``<|endoftext|>``, ``<pad>``, ``[SEP]``). A vocabulary entry that no merge
#: produces is taken as special only in this shape: else the merges file lost lines (truncated or damaged).
SPECIAL_SHAPE = re.compile(r"<\|[^\s|]+\|>|<[^\s<>]+>|\[[^\s\[\]]+\]")


@dataclasses.dataclass
class FoundTokenizer:
    """A tokenizer and where it came from (``how``: "beside the weights", "--tokenizer DIR", "packaged gpt2")."""

    tokenizer: Any
    files: list[Path]
    how: str


def tokenizer_files(directory: str | os.PathLike) -> tuple[Path, Path] | None:
    """The first (vocab, merges) pair of :data:`PAIRS` present in ``directory``, or None."""
    for vocab, merges in PAIRS:
        pair = (Path(directory) / vocab, Path(directory) / merges)
        if pair[0].is_file() and pair[1].is_file():
            return pair
    return None


@lru_cache(maxsize=1)
def _packaged() -> BPETokenizer:
    return BPETokenizer.gpt2(gpt2_vocab_dir())


def load_pair(vocab: Path, merges: Path) -> BPETokenizer:
    """A BPE tokenizer from a token -> id JSON and a merges file; kind "gpt2" when it is GPT-2's own."""
    try:
        encoder = json.loads(vocab.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConvertError(f"{vocab}: not readable JSON ({e})") from None
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise ConvertError(f"{vocab}: expected a JSON object of token string -> integer id")
    pairs = read_merges(merges)
    gpt2 = _packaged()
    if encoder == gpt2.encoder and pairs == gpt2.merges:
        return gpt2
    try:
        tok = BPETokenizer(encoder, pairs, kind="bpe", source=f"{vocab} + {merges.name}")
    except TokenizerError as e:
        raise ConvertError(str(e)) from None
    odd = [t for t in tok.special_tokens if not SPECIAL_SHAPE.fullmatch(t)]
    if odd:
        raise ConvertError(f"{merges}: no merge produces {len(odd)} token(s) of {vocab.name} ({odd[:3]!r}), which "
                           "are not special tokens: the merges file is truncated, damaged or from another vocabulary")
    return tok


def find_tokenizer(weights_dir: str | os.PathLike, choice: str | os.PathLike | None) -> FoundTokenizer:
    """The tokenizer for weights in ``weights_dir``: ``choice`` (a dir or ``"gpt2"``), else the files beside them.

    ``choice=None`` and no files beside the weights means GPT-2's packaged vocabulary.
    """
    if choice is not None and str(choice) == "gpt2":
        d = gpt2_vocab_dir()
        return FoundTokenizer(_packaged(), [d / "encoder.json", d / "vocab.bpe"], "packaged gpt2")
    if choice is not None:
        pair = tokenizer_files(choice)
        if pair is None:
            names = ", ".join(" + ".join(p) for p in PAIRS)
            raise ConvertError(f"{choice}: no tokenizer files (expected {names})")
        return FoundTokenizer(load_pair(*pair), list(pair), "--tokenizer DIR")
    pair = tokenizer_files(weights_dir)
    if pair is None:
        return find_tokenizer(weights_dir, "gpt2")
    return FoundTokenizer(load_pair(*pair), list(pair), "beside the weights")
