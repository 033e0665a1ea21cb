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
from pathlib import Path

from tfgpt.errors import TokenizerError
from tfgpt.tokenizers.base import END_OF_TEXT, FINGERPRINT_KEY, FORMAT_VERSION, TOKENIZER_JSON, Tokenizer
from tfgpt.tokenizers.bpe import BPETokenizer
from tfgpt.tokenizers.build import KINDS, build_tokenizer
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
        tok: Tokenizer = CharTokenizer.from_config(config, where=str(path))
    elif kind in ("bpe", "gpt2"):
        tok = BPETokenizer.from_config(config, directory)
    else:
        raise TokenizerError(f"{path}: unknown tokenizer type {kind!r}; expected one of {', '.join(KINDS)}")
    want = config.get(FINGERPRINT_KEY)  # absent from tokenizer dirs saved before it was recorded
    if want is not None and tok.fingerprint() != want:
        raise TokenizerError(f"{path}: its content does not match its {FINGERPRINT_KEY} (the file was edited or "
                             "damaged): this is not the tokenizer that was saved")
    return tok

