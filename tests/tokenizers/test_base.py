"""tfgpt.tokenizers.base: the shared interface's defaults, str checks and tokenizer.json writing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tfgpt.errors import TokenizerError
from tfgpt.tokenizers.base import END_OF_TEXT, Tokenizer, require_str, write_tokenizer_json


class ByteTokenizer(Tokenizer):
    """The smallest tokenizer: one id per UTF-8 byte, end-of-text at 256."""

    kind = "bytes"

    @property
    def vocab_size(self) -> int:
        return 257

    @property
    def special_tokens(self) -> dict[str, int]:
        return {END_OF_TEXT: 256}

    def encode(self, text: str) -> list[int]:
        return list(require_str(text).encode("utf-8"))

    def decode_bytes(self, ids) -> bytes:
        return bytes(int(i) for i in ids)

    def save(self, directory) -> Path:
        return write_tokenizer_json(directory, self.to_config())

    def to_config(self) -> dict:
        return {"type": self.kind}

    def graph_tokenizer(self):
        raise NotImplementedError


def test_interface_defaults() -> None:
    tok = ByteTokenizer()
    assert tok.eot_id == 256 and len(tok) == 257
    assert repr(tok) == "ByteTokenizer(kind='bytes', vocab_size=257)"
    assert tok.encode_batch(["hi", "é"]) == [[104, 105], [195, 169]]
    assert tok.decode([104, 195]) == "h\ufffd"  # a cut character decodes to U+FFFD
    expected = hashlib.sha256(b'{"type": "bytes"}').hexdigest()
    assert tok.fingerprint() == expected


def test_require_str() -> None:
    assert require_str("ok") == "ok"
    with pytest.raises(TokenizerError, match=r"text must be str, got bytes; decode it first"):
        require_str(b"x")
    with pytest.raises(TokenizerError, match=r"^texts\[2\] must be str, got int$"):
        require_str(3, "texts[2]")


def test_write_tokenizer_json(tmp_path: Path) -> None:
    out = write_tokenizer_json(tmp_path / "new" / "tok", {"type": "char", "vocab": ["é"]})
    assert out == tmp_path / "new" / "tok"
    text = (out / "tokenizer.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"format_version": 1, "type": "char", "vocab": ["é"]}
    assert "é" in text and text.endswith("\n")  # UTF-8, not \\u escapes
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json"]  # no temp file left
