"""Tokenizers: character-level, byte-level BPE (GPT-2 or trained), in-graph versions for export.

Example:
    >>> import tempfile
    >>> from tfgpt.tokenizers import CharTokenizer, load_tokenizer
    >>> tok = CharTokenizer.train(["To be, or not to be"])
    >>> saved = tok.save(tempfile.mkdtemp())                # writes tokenizer.json
    >>> load_tokenizer(saved).encode("To be") == tok.encode("To be") == [2, 6, 0, 3, 4]
    True

TensorFlow is imported only by :meth:`Tokenizer.graph_tokenizer` (module ``graph``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tfgpt.errors import TokenizerError
from tfgpt.tokenizers.base import END_OF_TEXT, FORMAT_VERSION, TOKENIZER_JSON, Tokenizer
from tfgpt.tokenizers.bpe import BPETokenizer
from tfgpt.tokenizers.char import CharTokenizer

__all__ = [
    "END_OF_TEXT",
    "TOKENIZER_JSON",
    "BPETokenizer",
    "CharTokenizer",
    "Tokenizer",
    "TokenizerError",
    "build_tokenizer",
    "load_tokenizer",
]

KINDS = ("char", "bpe", "gpt2")


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Load the tokenizer saved in ``directory`` (its ``tokenizer.json`` names the type)."""
    directory = Path(directory)
    path = directory / TOKENIZER_JSON
    if not directory.is_dir():
        raise TokenizerError(f"tokenizer directory {directory} does not exist")
    if not path.is_file():
        raise TokenizerError(f"{path} is missing (not a saved tokenizer directory)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(config, dict):
        raise TokenizerError(f"{path}: expected a JSON object, got {type(config).__name__}")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise TokenizerError(f"{path}: unsupported format_version {version!r} (this tfgpt reads {FORMAT_VERSION})")
    kind = config.get("type")
    if kind == "char":
        return CharTokenizer.from_config(config, where=str(path))
    if kind in ("bpe", "gpt2"):
        return BPETokenizer.from_config(config, directory)
    raise TokenizerError(f"{path}: unknown tokenizer type {kind!r}; expected one of {', '.join(KINDS)}")


def build_tokenizer(
    kind: str,
    texts: Iterable[str] | None = None,
    vocab_size: int | None = None,
    special_tokens: Sequence[str] | None = None,
    gpt2_dir: str | os.PathLike | None = None,
) -> Tokenizer:
    """Make a tokenizer of ``kind`` ("char", "bpe", "gpt2"), training on ``texts`` where needed.

    ``gpt2`` loads GPT-2's files from ``gpt2_dir`` (default ``$TFGPT_GPT2_BPE_DIR``, else the copy
    in the package); ``bpe`` needs ``vocab_size``. ``special_tokens`` defaults to none for char
    (tinyshakespeare → 65 ids) and ``("<|endoftext|>",)`` for bpe.
    """
    if kind == "gpt2":
        return BPETokenizer.gpt2(gpt2_dir)
    if kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")
    if texts is None:
        raise TokenizerError(f"a {kind} tokenizer needs training texts")
    if kind == "char":
        return CharTokenizer.train(texts, special_tokens=special_tokens or ())
    if not vocab_size:
        raise TokenizerError("a bpe tokenizer needs vocab_size")
    specials = (END_OF_TEXT,) if special_tokens is None else special_tokens
    return BPETokenizer.train(texts, vocab_size=vocab_size, special_tokens=specials)
