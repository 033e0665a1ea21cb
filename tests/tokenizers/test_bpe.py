"""tfgpt.tokenizers.bpe: GPT-2 ids (vs an independent HF reference), training, bytes, save/load, speed."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tokenizers.helpers import ADVERSARIAL, TRICKY_TEXT, UNICODE_TEXT, hf_reference
from tfgpt.errors import TokenizerError
from tfgpt.tokenizers import BPETokenizer, load_tokenizer
from tfgpt.tokenizers.bpe import GPT2_PATTERN


def test_known_gpt2_ids(gpt2: BPETokenizer) -> None:
    assert gpt2.vocab_size == 50257 and gpt2.eot_id == 50256 and gpt2.kind == "gpt2"
    assert gpt2.special_tokens == {"<|endoftext|>": 50256}
    assert gpt2.encode("Hello world<|endoftext|>") == [15496, 995, 50256]
    assert gpt2.encode('.)\n\n"The') == [2014, 198, 198, 1, 464]  # "\n\n" mid-text: two 198s
    assert gpt2.encode("end.\n\n") == [437, 13, 628]  # ... and one 628 at the end
    assert gpt2.encode("") == []


def test_the_verdict_matches_hf_reference(gpt2: BPETokenizer, gpt2_hf, verdict: str) -> None:
    ids = gpt2.encode(verdict)
    assert ids == gpt2_hf.encode(verdict).ids
    assert len(ids) == 5145
    assert gpt2.decode(ids) == verdict


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_adversarial_matches_hf_reference(gpt2: BPETokenizer, gpt2_hf, text: str) -> None:
    ids = gpt2.encode(text)
    assert ids == gpt2_hf.encode(text).ids
    assert gpt2.decode(ids) == text


def test_encode_batch_equals_encode(gpt2: BPETokenizer, verdict: str) -> None:
    texts = [verdict[i : i + 3000] for i in range(0, len(verdict), 3000)] + ADVERSARIAL
    assert gpt2.encode_batch(texts) == [gpt2.encode(t) for t in texts]
    assert gpt2.encode_batch(texts, num_threads=1) == gpt2.encode_batch(texts)


def test_encode_ordinary_ignores_special_tokens(gpt2: BPETokenizer) -> None:
    ids = gpt2.encode_ordinary("a<|endoftext|>")
    assert 50256 not in ids and gpt2.decode(ids) == "a<|endoftext|>"


@pytest.mark.reliability
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(UNICODE_TEXT, TRICKY_TEXT))
def test_property_matches_hf_and_roundtrips(gpt2: BPETokenizer, gpt2_hf, property_examples, text: str) -> None:
    property_examples["GPT-2 BPE: decode(encode(s)) == s, ids == HF tokenizers'"] += 1
    ids = gpt2.encode(text)
    assert ids == gpt2_hf.encode(text).ids
    assert gpt2.decode(ids) == text


def test_bytes_input_is_refused(gpt2: BPETokenizer) -> None:
    with pytest.raises(TokenizerError, match="errors='replace'"):
        gpt2.encode(b"caf\xc3\xa9")  # type: ignore[arg-type]
    with pytest.raises(TokenizerError, match="texts\\[1\\]"):
        gpt2.encode_batch(["ok", b"no"])  # type: ignore[list-item]


def test_decode_replaces_invalid_utf8(gpt2: BPETokenizer) -> None:
    ids = gpt2.encode("é😀")  # several byte-level tokens
    cut = ids[:-1]  # the emoji is now incomplete
    assert gpt2.decode_bytes(cut) == "é😀".encode()[: len(gpt2.decode_bytes(cut))]
    assert gpt2.decode(cut).startswith("é") and gpt2.decode(cut).endswith("\ufffd")
    with pytest.raises(TokenizerError, match="outside the BPE vocabulary"):
        gpt2.decode([50257])


def test_trained_bpe_layout_and_roundtrip(trained_bpe: BPETokenizer, shakespeare: str) -> None:
    tok = trained_bpe
    assert tok.kind == "bpe"
    assert tok.eot_id == tok.vocab_size - 1 and tok.vocab_size <= 600
    assert tok.vocab_size > 500  # enough merges were learned
    # Bytes first (GPT-2's data-gym order), so id 0 is "!" and the 256 single bytes are 0..255.
    assert tok.decode_bytes([0]) == b"!" and len({tok.decode_bytes([i]) for i in range(256)}) == 256
    text = shakespeare[-5000:] + "<|endoftext|>émoji 😀 and 日本語"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < len(shakespeare[-5000:].encode()) * 0.6  # it compresses
    assert tok.encode("<|endoftext|>") == [tok.eot_id]


def test_trained_bpe_matches_hf_reference(trained_bpe: BPETokenizer, tmp_path: Path, shakespeare: str) -> None:
    trained_bpe.save(tmp_path)
    ref = hf_reference(tmp_path, ["<|endoftext|>"])
    for text in [shakespeare[:20_000], *ADVERSARIAL]:
        assert trained_bpe.encode(text) == ref.encode(text).ids


@pytest.mark.reliability
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(UNICODE_TEXT, TRICKY_TEXT))
def test_trained_bpe_property(trained_bpe: BPETokenizer, tmp_path_factory, property_examples, text: str) -> None:
    property_examples["trained byte-level BPE: decode(encode(s)) == s, ids == HF tokenizers'"] += 1
    global _TRAINED_REF
    if "_TRAINED_REF" not in globals():
        d = tmp_path_factory.mktemp("trained")
        trained_bpe.save(d)
        _TRAINED_REF = hf_reference(d, ["<|endoftext|>"])
    ids = trained_bpe.encode(text)
    assert ids == _TRAINED_REF.encode(text).ids
    assert trained_bpe.decode(ids) == text


def test_trained_save_load_roundtrip(trained_bpe: BPETokenizer, tmp_path: Path, verdict: str) -> None:
    trained_bpe.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, BPETokenizer)
    assert loaded.fingerprint() == trained_bpe.fingerprint()
    assert loaded.to_config() == trained_bpe.to_config()
    assert loaded.encode(verdict) == trained_bpe.encode(verdict)
    assert loaded.special_tokens == trained_bpe.special_tokens


def test_train_custom_special_tokens(shakespeare: str) -> None:
    tok = BPETokenizer.train([shakespeare[:30_000]], vocab_size=300, special_tokens=["<|endoftext|>", "<pad>"])
    assert tok.special_tokens == {"<|endoftext|>": 298, "<pad>": 299}
    assert tok.encode("a<pad>")[-1] == 299
    with pytest.raises(TokenizerError, match="too small"):
        BPETokenizer.train(["abc"], vocab_size=200)


@pytest.mark.parametrize("special", ["<|end of text|>", "<|eot|>\n", "\t<x>", "<\u3000>"])
def test_special_token_with_whitespace_is_rejected(special: str, trained_bpe: BPETokenizer, tmp_path: Path) -> None:
    # The in-graph tokenizer joins BPE tokens with spaces: such a token would become id -1 there.
    with pytest.raises(TokenizerError, match="whitespace"):
        BPETokenizer.train(["hello world"] * 5, vocab_size=300, special_tokens=("<|endoftext|>", special))
    # A hand-made tokenizer directory with such a token fails to load, naming it.
    trained_bpe.save(tmp_path)
    encoder = json.loads((tmp_path / "encoder.json").read_text(encoding="utf-8"))
    encoder[special] = encoder.pop("<|endoftext|>")
    (tmp_path / "encoder.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    config = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    config["special_tokens"] = {special: config["special_tokens"].pop("<|endoftext|>")}
    del config["encoder_sha256"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(TokenizerError, match=f"{tmp_path}.*special token {re.escape(repr(special))}.*whitespace"):
        load_tokenizer(tmp_path)


def test_fingerprints_differ(gpt2: BPETokenizer, trained_bpe: BPETokenizer) -> None:
    assert gpt2.fingerprint() != trained_bpe.fingerprint()
    assert len(gpt2.fingerprint()) == 64


def test_encode_speed_smoke(gpt2: BPETokenizer, shakespeare: str) -> None:
    """Not a benchmark: guards against a silent fall-back to a slow path (> 1 MB/s)."""
    text = (shakespeare * 8)[:500_000]
    t0 = time.perf_counter()
    gpt2.encode(text)
    rate = len(text.encode()) / (time.perf_counter() - t0) / 1e6
    assert rate > 1.0, f"{rate:.2f} MB/s"


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
    with pytest.raises(TokenizerError, match=r"vocab\.bpe: content does not match merges_sha256"):
        load_tokenizer(tmp_path)  # the digest tokenizer.json records names the edited file
    config = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    del config["encoder_sha256"], config["merges_sha256"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(TokenizerError, match="disagree"):
        load_tokenizer(tmp_path)  # without digests, the two files are still checked against each other


def test_bpe_truncated_merges_are_named(tmp_path: Path, trained_bpe: BPETokenizer) -> None:
    trained_bpe.save(tmp_path)
    merges = tmp_path / "vocab.bpe"
    merges.write_bytes(merges.read_bytes()[: merges.stat().st_size // 2])
    with pytest.raises(TokenizerError, match=r"vocab\.bpe: content does not match"):
        load_tokenizer(tmp_path)  # was: "encoder.json has tokens no merge produces", naming the directory only


def test_bpe_files_from_another_tokenizer_are_refused(
    tmp_path: Path, trained_bpe: BPETokenizer, shakespeare: str
) -> None:
    # Consistent encoder.json + vocab.bpe of another vocabulary (same size, same special-token ids):
    # only the digests recorded in tokenizer.json catch it.
    other = BPETokenizer.train([shakespeare[len(shakespeare) // 2:]], vocab_size=trained_bpe.vocab_size)
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


def test_gpt2_save_copies_files(tmp_path: Path, gpt2: BPETokenizer, gpt2_dir: Path) -> None:
    gpt2.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.kind == "gpt2" and loaded.vocab_size == 50257 and loaded.eot_id == 50256
    assert loaded.fingerprint() == gpt2.fingerprint()
    # The saved files are GPT-2's files (same content once parsed).
    assert json.loads((tmp_path / "encoder.json").read_text()) == json.loads((gpt2_dir / "encoder.json").read_text())


def test_gpt2_from_env_else_packaged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gpt2: BPETokenizer, trained_bpe: BPETokenizer
) -> None:
    trained_bpe.save(tmp_path)  # not GPT-2's files: the error shows $TFGPT_GPT2_BPE_DIR was read
    monkeypatch.setenv("TFGPT_GPT2_BPE_DIR", str(tmp_path))
    with pytest.raises(TokenizerError, match=re.escape(f"{tmp_path}: not GPT-2's vocabulary")):
        BPETokenizer.gpt2()
    monkeypatch.delenv("TFGPT_GPT2_BPE_DIR")
    default = BPETokenizer.gpt2()  # the copy shipped in tfgpt/assets/gpt2
    assert default.fingerprint() == gpt2.fingerprint() and default.encode("Hello, world!") == [15496, 11, 995, 0]


def test_gpt2_rejects_other_vocab(tmp_path: Path, trained_bpe: BPETokenizer) -> None:
    trained_bpe.save(tmp_path)
    with pytest.raises(TokenizerError, match="not GPT-2"):
        BPETokenizer.gpt2(tmp_path)


def test_atomic_save_leaves_no_temp_files(tmp_path: Path, trained_bpe: BPETokenizer) -> None:
    out = trained_bpe.save(tmp_path / "t")
    assert sorted(p.name for p in out.iterdir()) == ["encoder.json", "tokenizer.json", "vocab.bpe"]
    shutil.rmtree(out)


def test_tokenizer_json_holds_expected_config(tmp_path: Path) -> None:
    # Pinned values: a change here breaks every saved tokenizer dir and data manifest.
    tok = BPETokenizer.train(["low lower lowest " * 20], vocab_size=260)
    expected = {
        "type": "bpe",
        "vocab_size": 260,
        "special_tokens": {"<|endoftext|>": 259},
        "encoder_file": "encoder.json",
        "merges_file": "vocab.bpe",
        "encoder_sha256": "b4d345ba96ca22e0e879fd585ac3f2e192d146486bab1ecf1ff61119fe9b66d1",
        "merges_sha256": hashlib.sha256("l o\nlo w\nĠ low".encode()).hexdigest(),
        "pattern": GPT2_PATTERN,
    }
    assert tok.to_config() == expected
    tok.save(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved == {"format_version": 1, **expected, "fingerprint": tok.fingerprint()}  # checked on load
    assert (tmp_path / "vocab.bpe").read_text(encoding="utf-8") == "#version: 0.2\nl o\nlo w\nĠ low\n"
    encoder = json.loads((tmp_path / "encoder.json").read_text(encoding="utf-8"))
    assert list(encoder.items())[-5:] == [("Ń", 255), ("lo", 256), ("low", 257), ("Ġlow", 258), ("<|endoftext|>", 259)]
    loaded = load_tokenizer(tmp_path)
    assert loaded.to_config() == expected
    assert loaded.encode("lower<|endoftext|>") == [257, 68, 81, 259]
    assert loaded.fingerprint() == "728a41b33b180dfc6b0b1fe2ff57dbcc946736cca4568cb29e178c513dc9de5a"
