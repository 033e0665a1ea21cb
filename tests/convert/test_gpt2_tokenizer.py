"""Which tokenizer an import takes: files beside the weights (three spellings), --tokenizer DIR, or gpt2."""

from __future__ import annotations

import json

import pytest

from tests.convert.gpt2_files import tiny_tokenizer, write_tokenizer
from tfgpt.assets_path import gpt2_vocab_dir
from tfgpt.convert.gpt2_tokenizer import find_tokenizer, load_pair, tokenizer_files
from tfgpt.errors import ConvertError

TEXT = "I had always thought Jack Gisburn"


@pytest.mark.parametrize("names", [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe"),
                                   ("assets/tokenizer/vocabulary.json", "assets/tokenizer/merges.txt")])
def test_pairs_beside_the_weights(tmp_path, names):
    tok = tiny_tokenizer()
    (tmp_path / names[0]).parent.mkdir(parents=True, exist_ok=True)
    write_tokenizer(tmp_path, tok, names)
    assert tokenizer_files(tmp_path) == (tmp_path / names[0], tmp_path / names[1])
    found = find_tokenizer(tmp_path, None)
    assert found.how == "beside the weights" and found.files == [tmp_path / n for n in names]
    assert (found.tokenizer.kind, found.tokenizer.vocab_size) == ("bpe", tok.vocab_size)
    assert found.tokenizer.encode(TEXT) == tok.encode(TEXT)


def test_gpt2_choice_and_default(tmp_path):
    found = find_tokenizer(tmp_path, "gpt2")
    assert (found.how, found.tokenizer.kind, found.files) == (
        "packaged gpt2", "gpt2", [gpt2_vocab_dir() / "encoder.json", gpt2_vocab_dir() / "vocab.bpe"])
    assert find_tokenizer(tmp_path, None).how == "packaged gpt2"  # nothing beside
    write_tokenizer(tmp_path, found.tokenizer)  # GPT-2's own files under HF names are recognised as gpt2
    beside = find_tokenizer(tmp_path, None)
    assert (beside.how, beside.tokenizer.kind) == ("beside the weights", "gpt2")
    assert beside.tokenizer.encode("Hello world") == [15496, 995]


def test_tokenizer_dir_errors(tmp_path):
    (tmp_path / "t").mkdir()
    with pytest.raises(ConvertError, match=r"t: no tokenizer files \(expected vocab.json \+ merges.txt"):
        find_tokenizer(tmp_path, tmp_path / "t")
    (tmp_path / "t" / "vocab.json").write_text("[1, 2]")
    (tmp_path / "t" / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ConvertError, match=r"vocab.json: expected a JSON object"):
        find_tokenizer(tmp_path, tmp_path / "t")
    (tmp_path / "t" / "vocab.json").write_text(json.dumps({"a": 0, "zz": 1}))
    with pytest.raises(ConvertError, match=r"vocab.json \+ merges.txt: encoder.json and vocab.bpe disagree"):
        load_pair(tmp_path / "t" / "vocab.json", tmp_path / "t" / "merges.txt")


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_merges_are_refused_not_taken_as_special_tokens(tmp_path, keep):
    """A merges file cut short leaves vocabulary entries no merge produces; they were taken as special
    tokens (and the import went on with another tokenizer). Only <|...|>-like entries may be special."""
    write_tokenizer(tmp_path, tiny_tokenizer())
    merges = tmp_path / "merges.txt"
    lines = merges.read_text(encoding="utf-8").splitlines(keepends=True)
    merges.write_text("".join(lines[: max(1, int(len(lines) * keep))]), encoding="utf-8")  # whole lines: valid UTF-8
    with pytest.raises(ConvertError, match=r"merges\.txt: no merge produces .* truncated"):
        load_pair(tmp_path / "vocab.json", merges)
