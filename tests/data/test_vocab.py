"""corpus_tokenizer: the tokenizer a prepare run makes from its corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfgpt.data.documents import Corpus
from tfgpt.data.sources import source_infos
from tfgpt.data.vocab import corpus_tokenizer
from tfgpt.errors import DataError


def _corpus(tmp_path: Path, texts: dict[str, str], **kw) -> Corpus:
    files = []
    for name, text in texts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        files.append(tmp_path / name)
    return Corpus(files, source_infos(files), **kw)


def test_char_vocabulary_is_every_cleaned_character(tmp_path: Path) -> None:
    tok = corpus_tokenizer(_corpus(tmp_path, {"a.txt": "ba\r\nc\x00"}), "char")
    assert tok.vocab_size == 4 and tok.special_tokens == {}  # one document: no end-of-text
    assert tok.decode(list(range(4))) == "\nabc"


def test_char_end_of_text_only_for_several_documents(tmp_path: Path) -> None:
    tok = corpus_tokenizer(_corpus(tmp_path, {"a.txt": "ab", "b.txt": "ba"}), "char")
    assert tok.vocab_size == 3 and tok.special_tokens == {"<|endoftext|>": 2}
    dup = tmp_path / "dup"
    dup.mkdir()
    one = corpus_tokenizer(_corpus(dup, {"a.txt": "ab", "b.txt": "ab"}, dedupe=True), "char")
    assert one.special_tokens == {}  # the duplicate was dropped: one document kept


def test_bpe_trains_on_the_sample_and_gpt2_loads(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, {"a.txt": "low lower lowest " * 40, "b.txt": "zzzz " * 400})
    tok = corpus_tokenizer(corpus, "bpe", vocab_size=262, sample_chars=10)  # the first document only
    assert tok.kind == "bpe" and tok.vocab_size == 262 and tok.eot_id == 261
    assert len(tok.encode("low")) == 1 and len(tok.encode("zzzz")) == 4  # z pairs were never seen
    gpt2 = corpus_tokenizer(corpus, "gpt2")
    assert (gpt2.kind, gpt2.vocab_size, gpt2.eot_id) == ("gpt2", 50257, 50256)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_empty_corpus_refused(tmp_path: Path, kind: str) -> None:
    corpus = _corpus(tmp_path, {"a.txt": " \n", "b.txt": ""})
    with pytest.raises(DataError, match=r"empty corpus: no documents left after cleaning \(2 read, 2 empty"):
        corpus_tokenizer(corpus, kind, vocab_size=300)
