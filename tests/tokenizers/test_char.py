"""tfgpt.tokenizers.char: vocabulary, specials, unknown characters, decode, save/load, bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfgpt.assets_path import asset_path
from tfgpt.errors import TokenizerError
from tfgpt.tokenizers import CharTokenizer, load_tokenizer


def test_tinyshakespeare_has_65_symbols() -> None:
    """The whole corpus, as shipped for the demo (the 64 KiB test slice has 59)."""
    shakespeare = asset_path("corpus", "tinyshakespeare.txt").read_text(encoding="utf-8")
    tok = CharTokenizer.train([shakespeare])
    assert tok.vocab_size == 65
    assert tok.special_tokens == {}
    assert tok.eot_id is None
    assert tok.chars[:3] == ["\n", " ", "!"]
    ids = tok.encode(shakespeare[:1000])
    assert tok.decode(ids) == shakespeare[:1000]
    assert max(ids) < 65


def test_special_tokens_after_chars(shakespeare_char: CharTokenizer) -> None:
    tok = shakespeare_char
    assert tok.vocab_size == 60 and tok.eot_id == 59  # 59 characters in the 64 KiB slice, then the special
    ids = tok.encode("Hi<|endoftext|>yo<|endoftext|>")
    assert ids[2] == 59 and ids[-1] == 59 and len(ids) == 6
    assert tok.decode(ids) == "Hi<|endoftext|>yo<|endoftext|>"


def test_partial_special_token_is_characters() -> None:
    tok = CharTokenizer.train(["<|endoftext >"], special_tokens=["<|endoftext|>"])
    assert tok.eot_id not in tok.encode("<|endoftext")
    assert tok.encode("<|endoftext|><|endoftext")[0] == tok.eot_id


def test_train_ignores_special_strings_in_text() -> None:
    tok = CharTokenizer.train(["ab<|endoftext|>ba"], special_tokens=["<|endoftext|>"])
    assert tok.chars == ["a", "b"]
    assert tok.encode("ab<|endoftext|>") == [0, 1, 2]


def test_unknown_character_error_names_char_and_position(shakespeare_char: CharTokenizer) -> None:
    with pytest.raises(TokenizerError) as e:
        shakespeare_char.encode("Hello wörld ✓")
    msg = str(e.value)
    assert "'ö'" in msg and "position 7" in msg and "'✓'" in msg and "position 12" in msg
    assert "--unk-token" in msg


def test_unknown_characters_map_to_unk() -> None:
    tok = CharTokenizer.train(["abc"], unk_token="<unk>")
    assert tok.vocab_size == 4 and tok.unk_id == 3
    assert tok.encode("abzc") == [0, 1, 3, 2]
    assert tok.decode([0, 3]) == "a<unk>"
    assert CharTokenizer.train(["ab?"], unk_token="?").encode("a!") == [1, 0]


def test_bytes_input_is_refused(shakespeare_char: CharTokenizer) -> None:
    with pytest.raises(TokenizerError, match="decode it first"):
        shakespeare_char.encode(b"hello")  # type: ignore[arg-type]


def test_decode_rejects_out_of_range_ids(shakespeare_char: CharTokenizer) -> None:
    with pytest.raises(TokenizerError, match="outside the char vocabulary"):
        shakespeare_char.decode([1, 60])  # vocab_size: the first id outside
    with pytest.raises(TokenizerError):
        shakespeare_char.decode([-1])


def test_empty_training_text_is_an_error() -> None:
    with pytest.raises(TokenizerError, match="empty"):
        CharTokenizer.train([""])


def test_save_load_roundtrip(tmp_path, shakespeare_char: CharTokenizer) -> None:
    shakespeare_char.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, CharTokenizer)
    assert loaded.fingerprint() == shakespeare_char.fingerprint()
    assert loaded.to_config() == shakespeare_char.to_config()
    text = "First Citizen:\n<|endoftext|>Before we proceed"
    assert loaded.encode(text) == shakespeare_char.encode(text)
    assert not list((tmp_path / "tok").glob("*.tmp"))


def test_fingerprint_differs_between_vocabularies() -> None:
    assert CharTokenizer.train(["ab"]).fingerprint() != CharTokenizer.train(["abc"]).fingerprint()
    assert CharTokenizer.train(["ba"]).fingerprint() == CharTokenizer.train(["ab"]).fingerprint()


@pytest.mark.reliability
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40))
def test_roundtrip_on_own_training_text(property_examples, text: str) -> None:
    property_examples["char: decode(encode(s)) == s on its own training text"] += 1
    tok = CharTokenizer.train([text + "x"], special_tokens=["<|endoftext|>"])
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.reliability
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30), st.integers(0, 30))
def test_unknown_characters_refused_or_mapped(property_examples, text: str, at: int) -> None:
    """Any string with a character outside the vocabulary: refused naming it, or each unknown one maps to unk."""
    property_examples["char: an unknown character is refused by name, or maps to unk as configured"] += 1
    vocab = "abc |"
    text = text[:at] + "\u2603" + text[at:]  # a snowman: never in the vocabulary
    unknown = [c for c in text if c not in vocab]
    with pytest.raises(TokenizerError, match=f"^{len(unknown)} character\\(s\\) not in") as e:
        CharTokenizer.train([vocab]).encode(text)
    assert f"{unknown[0]!r} (U+{ord(unknown[0]):04X}) at position {text.index(unknown[0])}" in str(e.value)
    tok = CharTokenizer.train([vocab], unk_token="<unk>")
    ids = tok.encode(text)
    assert len(ids) == len(text) and ids.count(tok.unk_id) == len(unknown)
    assert tok.decode(ids) == "".join(c if c in vocab else "<unk>" for c in text)


def test_char_config_missing_vocab(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(json.dumps({"format_version": 1, "type": "char"}))
    with pytest.raises(TokenizerError, match="vocab"):
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


def test_tokenizer_json_holds_expected_config(tmp_path: Path) -> None:
    # Pinned values: a change here breaks every saved tokenizer dir and data manifest.
    tok = CharTokenizer.train(["hello world"], special_tokens=["<|endoftext|>"], unk_token="?")
    expected = {
        "type": "char",
        "vocab": [" ", "d", "e", "h", "l", "o", "r", "w"],
        "special_tokens": ["<|endoftext|>", "?"],
        "unk_token": "?",
    }
    assert tok.to_config() == expected
    tok.save(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved == {"format_version": 1, **expected, "fingerprint": tok.fingerprint()}  # checked on load
    loaded = load_tokenizer(tmp_path)
    assert (loaded.vocab_size, loaded.eot_id, loaded.unk_id) == (10, 8, 9)
    assert loaded.encode("held!<|endoftext|>") == [3, 2, 4, 1, 9, 8]
    assert loaded.fingerprint() == "eca1d076dc6c3aa4e6a80a7194415577704aff761192bdb73976ae089d8baa0c"
