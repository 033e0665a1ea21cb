"""tfgpt.tokenizers (package): load_tokenizer dispatch and errors, build_tokenizer.

The per-type loading errors live with their module: test_char.py, test_bpe.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfgpt.errors import TokenizerError
from tfgpt.tokenizers import CharTokenizer, build_tokenizer, load_tokenizer


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")


def test_missing_tokenizer_json(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="tokenizer.json is missing"):
        load_tokenizer(tmp_path)


def test_invalid_json_names_file(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: invalid JSON"):
        load_tokenizer(tmp_path)


def test_unknown_type(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(json.dumps({"format_version": 1, "type": "wordpiece"}))
    with pytest.raises(TokenizerError, match="unknown tokenizer type 'wordpiece'"):
        load_tokenizer(tmp_path)


def test_wrong_format_version(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(json.dumps({"format_version": 99, "type": "char"}))
    with pytest.raises(TokenizerError, match="format_version"):
        load_tokenizer(tmp_path)


def test_build_tokenizer(shakespeare: str) -> None:
    char = build_tokenizer("char", [shakespeare])
    assert isinstance(char, CharTokenizer) and char.vocab_size == 59  # distinct characters in the slice
    bpe = build_tokenizer("bpe", [shakespeare[:50_000]], vocab_size=300)
    assert bpe.vocab_size == 300 and bpe.eot_id == 299
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        build_tokenizer("sentencepiece", [shakespeare])
    with pytest.raises(TokenizerError, match="vocab_size"):
        build_tokenizer("bpe", ["x"])


def test_build_gpt2(gpt2_dir: Path) -> None:
    tok = build_tokenizer("gpt2", gpt2_dir=gpt2_dir)
    assert (tok.kind, tok.vocab_size, tok.eot_id) == ("gpt2", 50257, 50256)


def test_a_changed_character_is_refused_by_fingerprint(tmp_path: Path) -> None:
    """One bit flipped in a char vocabulary ('a' -> '`') leaves valid JSON and a working tokenizer that
    encodes differently; it loaded silently. tokenizer.json's fingerprint now catches it."""
    tok = CharTokenizer.train(["abc"])
    tok.save(tmp_path)
    path = tmp_path / "tokenizer.json"
    path.write_text(path.read_text(encoding="utf-8").replace('"a"', '"`"'), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: its content does not match its fingerprint"):
        load_tokenizer(tmp_path)
    config = json.loads(path.read_text(encoding="utf-8"))
    del config["fingerprint"]  # a tokenizer dir saved before fingerprints were recorded loads unchecked
    path.write_text(json.dumps(config), encoding="utf-8")
    assert load_tokenizer(tmp_path).encode("`bc") == [0, 1, 2]
