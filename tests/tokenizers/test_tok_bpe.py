"""BPETokenizer: GPT-2 ids (vs an independent HF reference), training, bytes, save/load, speed."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from conftest import ADVERSARIAL, TRICKY_PIECES, hf_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfgpt.errors import TokenizerError
from tfgpt.tokenizers import BPETokenizer, load_tokenizer

#: Random text without surrogates or code points unassigned in this Python's Unicode tables
#: (libraries built on newer Unicode versions may classify those differently).
UNICODE_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs", "Cn")), max_size=60)
#: Text biased towards whitespace, contractions, digits and special tokens.
TRICKY_TEXT = st.lists(
    st.sampled_from(TRICKY_PIECES),
    max_size=25,
).map("".join)


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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(UNICODE_TEXT, TRICKY_TEXT))
def test_property_matches_hf_and_roundtrips(gpt2: BPETokenizer, gpt2_hf, text: str) -> None:
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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(UNICODE_TEXT, TRICKY_TEXT))
def test_trained_bpe_property(trained_bpe: BPETokenizer, tmp_path_factory, text: str) -> None:
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
    text = shakespeare[:500_000]
    t0 = time.perf_counter()
    gpt2.encode(text)
    rate = len(text.encode()) / (time.perf_counter() - t0) / 1e6
    assert rate > 1.0, f"{rate:.2f} MB/s"
