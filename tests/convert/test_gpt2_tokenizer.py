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
