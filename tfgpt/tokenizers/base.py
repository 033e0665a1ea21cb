"""The one interface every tfgpt tokenizer implements.

A tokenizer turns text into integer ids and back, knows its vocabulary size and special
tokens, saves itself to a ``tokenizer/`` directory as JSON (plus GPT-2-format files for BPE),
and can build an in-graph (TensorFlow) version of itself for export. No pickle anywhere.

Directory layout: ``tokenizer/tokenizer.json`` always exists and holds
``{"format_version": 1, "type": "char" | "bpe" | "gpt2", ...}``; BPE tokenizers add
``encoder.json`` and ``vocab.bpe``. :func:`tfgpt.tokenizers.load_tokenizer` dispatches on ``type``.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tfgpt.atomic import write_text_atomic
from tfgpt.errors import TokenizerError

TOKENIZER_JSON = "tokenizer.json"
FORMAT_VERSION = 1
END_OF_TEXT = "<|endoftext|>"


def require_str(text: object, what: str = "text") -> str:
    """Return ``text`` if it is a ``str``; otherwise raise a :class:`TokenizerError`.

    ``bytes`` are refused rather than guessed at: decode them first, e.g.
    ``data.decode("utf-8", errors="replace")``.
    """
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray, memoryview)):
        raise TokenizerError(
            f"{what} must be str, got {type(text).__name__}; decode it first, e.g. "
            "data.decode('utf-8', errors='replace')"
        )
    raise TokenizerError(f"{what} must be str, got {type(text).__name__}")


#: tokenizer.json's key for the tokenizer's :meth:`Tokenizer.fingerprint`, checked on load (a changed character
#: in a char vocabulary leaves valid JSON and a working tokenizer, a different one).
FINGERPRINT_KEY = "fingerprint"


def write_tokenizer_json(directory: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Atomically write ``{"format_version": 1, **config}`` to ``directory/tokenizer.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, **config}
    write_text_atomic(directory / TOKENIZER_JSON, json.dumps(payload, ensure_ascii=False, indent=1) + "\n")
    return directory


class Tokenizer(abc.ABC):
    """Text ⇄ token ids.

    Subclasses: :class:`~tfgpt.tokenizers.char.CharTokenizer`,
    :class:`~tfgpt.tokenizers.bpe.BPETokenizer` (trained or GPT-2).
    """

    #: "char", "bpe" or "gpt2" — written to tokenizer.json.
    kind: str = ""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (max id + 1)."""

    @property
    @abc.abstractmethod
    def special_tokens(self) -> dict[str, int]:
        """Special token strings to ids, e.g. ``{"<|endoftext|>": 50256}``."""

    @property
    def eot_id(self) -> int | None:
        """Id of ``<|endoftext|>`` when the vocabulary has one, else None."""
        return self.special_tokens.get(END_OF_TEXT)

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Encode text; special-token strings in ``text`` map to their ids."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts (subclasses override with a parallel/batched path)."""
        return [self.encode(t) for t in texts]

    @abc.abstractmethod
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The UTF-8 bytes the ids stand for (may end mid-character: used for streaming)."""

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; invalid UTF-8 is replaced with U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    @abc.abstractmethod
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` (+ any vocab files) into ``directory`` atomically; return it."""

    @abc.abstractmethod
    def to_config(self) -> dict[str, Any]:
        """The JSON-able content of tokenizer.json (without format_version)."""

    def fingerprint(self) -> str:
        """sha256 hex digest identifying the vocabulary (used by data manifests and runs)."""
        blob = json.dumps(self.to_config(), sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size})"

    @abc.abstractmethod
    def graph_tokenizer(self) -> Any:
        """An object usable inside a TensorFlow graph (tf.function / SavedModel, no py_function)
        with ``tokenize(tf.string [batch]) -> tf.RaggedTensor int32`` and
        ``detokenize(int ids [batch, n] or ragged) -> tf.string [batch]``."""
