"""load_tokenizer / build_tokenizer: dispatch and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tfgpt.errors import TokenizerError
from tfgpt.tokenizers import BPETokenizer, CharTokenizer, build_tokenizer, load_tokenizer


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


def test_char_config_missing_vocab(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(json.dumps({"format_version": 1, "type": "char"}))
    with pytest.raises(TokenizerError, match="vocab"):
        load_tokenizer(tmp_path)


def test_bpe_missing_vocab_files(tmp_path: Path, trained_bpe: BPETokenizer) -> None:
    trained_bpe.save(tmp_path)
    (tmp_path / "vocab.bpe").unlink()
    with pytest.raises(TokenizerError, match=r"vocab\.bpe is missing"):
        load_tokenizer(tmp_path)


def test_bpe_inconsistent_files(tmp_path: Path, trained_bpe: BPETokenizer) -> None:
    trained_bpe.save(tmp_path)
    lines = (tmp_path / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    lines[1], lines[2] = lines[2], lines[1]  # swap two merges: ids no longer match
    (tmp_path / "vocab.bpe").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="disagree"):
        load_tokenizer(tmp_path)


def test_bpe_files_from_another_tokenizer_are_refused(
    tmp_path: Path, trained_bpe: BPETokenizer, shakespeare: str
) -> None:
    # Consistent encoder.json + vocab.bpe of another vocabulary (same size, same special-token ids):
    # only the digests recorded in tokenizer.json catch it.
    other = BPETokenizer.train([shakespeare[300_000:600_000]], vocab_size=trained_bpe.vocab_size)
    assert other.special_tokens == trained_bpe.special_tokens and other.merges != trained_bpe.merges
    trained_bpe.save(tmp_path / "mine")
    other.save(tmp_path / "other")
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(tmp_path / "other" / name, tmp_path / "mine" / name)
    with pytest.raises(TokenizerError, match=r"encoder\.json: content does not match encoder_sha256"):
        load_tokenizer(tmp_path / "mine")
    # With the encoder digest matching, the merges digest still names vocab.bpe.
    config = json.loads((tmp_path / "mine" / "tokenizer.json").read_text(encoding="utf-8"))
    config["encoder_sha256"] = other.to_config()["encoder_sha256"]
    (tmp_path / "mine" / "tokenizer.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"vocab\.bpe: content does not match merges_sha256"):
        load_tokenizer(tmp_path / "mine")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("special_tokens", {"<|endoftext|>": "x"}),
        ("special_tokens", {"<|endoftext|>": True}),
        ("special_tokens", ["<|endoftext|>"]),
        ("encoder_sha256", 5),
        ("type", "wordpiece-ish"),
    ],
)
def test_bpe_config_bad_types(tmp_path: Path, trained_bpe: BPETokenizer, key: str, value: object) -> None:
    trained_bpe.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    config[key] = value
    (tmp_path / "tokenizer.json").write_text(json.dumps(config), encoding="utf-8")
    if key == "type":  # load_tokenizer dispatches on type; from_config itself must check it too
        with pytest.raises(TokenizerError, match=r"tokenizer\.json: 'type' must be"):
            BPETokenizer.from_config(config, tmp_path)
        return
    with pytest.raises(TokenizerError, match=rf"tokenizer\.json: '{key}' must be"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize(
    ("key", "value"),
    [("unk_token", 5), ("unk_token", ""), ("special_tokens", [1]), ("vocab", ["a", 2]), ("vocab", "ab")],
)
def test_char_config_bad_types(tmp_path: Path, key: str, value: object) -> None:
    CharTokenizer.train(["abc"], special_tokens=["<|endoftext|>"]).save(tmp_path)
    config = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    config[key] = value
    (tmp_path / "tokenizer.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(TokenizerError, match=rf"tokenizer\.json: .*'?{key}'?"):
        load_tokenizer(tmp_path)


def test_gpt2_save_copies_files(tmp_path: Path, gpt2: BPETokenizer, gpt2_dir: Path) -> None:
    gpt2.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.kind == "gpt2" and loaded.vocab_size == 50257 and loaded.eot_id == 50256
    assert loaded.fingerprint() == gpt2.fingerprint()
    # The saved files are GPT-2's files (same content once parsed).
    assert json.loads((tmp_path / "encoder.json").read_text()) == json.loads((gpt2_dir / "encoder.json").read_text())


def test_gpt2_from_env(monkeypatch: pytest.MonkeyPatch, gpt2_dir: Path) -> None:
    monkeypatch.setenv("TFGPT_GPT2_BPE_DIR", str(gpt2_dir))
    assert build_tokenizer("gpt2").vocab_size == 50257
    monkeypatch.delenv("TFGPT_GPT2_BPE_DIR")
    with pytest.raises(TokenizerError, match="TFGPT_GPT2_BPE_DIR"):
        BPETokenizer.gpt2()


def test_gpt2_rejects_other_vocab(tmp_path: Path, trained_bpe: BPETokenizer) -> None:
    trained_bpe.save(tmp_path)
    with pytest.raises(TokenizerError, match="not GPT-2"):
        BPETokenizer.gpt2(tmp_path)


def test_build_tokenizer(shakespeare: str) -> None:
    char = build_tokenizer("char", [shakespeare])
    assert isinstance(char, CharTokenizer) and char.vocab_size == 65
    bpe = build_tokenizer("bpe", [shakespeare[:50_000]], vocab_size=300)
    assert bpe.vocab_size == 300 and bpe.eot_id == 299
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        build_tokenizer("sentencepiece", [shakespeare])
    with pytest.raises(TokenizerError, match="vocab_size"):
        build_tokenizer("bpe", ["x"])


def test_atomic_save_leaves_no_temp_files(tmp_path: Path, trained_bpe: BPETokenizer) -> None:
    out = trained_bpe.save(tmp_path / "t")
    assert sorted(p.name for p in out.iterdir()) == ["encoder.json", "tokenizer.json", "vocab.bpe"]
    shutil.rmtree(out)
