"""build_tokenizer: one tokenizer builder for the kind strings "char", "bpe", "gpt2"."""

from __future__ import annotations

import pytest

from tfgpt.errors import TokenizerError
from tfgpt.tokenizers import BPETokenizer, CharTokenizer, build_tokenizer
from tfgpt.tokenizers.build import KINDS


def test_kinds() -> None:
    assert KINDS == ("char", "bpe", "gpt2")


def test_char_sorted_characters_and_specials() -> None:
    tok = build_tokenizer("char", ["hello", "world"])
    assert isinstance(tok, CharTokenizer) and tok.kind == "char"
    assert tok.vocab_size == 7 and tok.encode("dehlorw") == [0, 1, 2, 3, 4, 5, 6]
    assert tok.special_tokens == {}
    eot = build_tokenizer("char", ["ba"], special_tokens=["<|endoftext|>"])
    assert eot.special_tokens == {"<|endoftext|>": 2} and eot.encode("ab<|endoftext|>") == [0, 1, 2]


def test_bpe_vocab_size_and_default_end_of_text() -> None:
    tok = build_tokenizer("bpe", ["the cat sat on the mat " * 30], vocab_size=262)
    assert isinstance(tok, BPETokenizer) and tok.kind == "bpe"
    assert tok.vocab_size == 262 and tok.special_tokens == {"<|endoftext|>": 261}
    assert tok.decode(tok.encode("the mat")) == "the mat" and len(tok.encode("the mat")) < 7
    none = build_tokenizer("bpe", ["abab " * 50], vocab_size=260, special_tokens=())
    assert none.special_tokens == {} and none.eot_id is None


def test_gpt2_packaged_vocabulary() -> None:
    tok = build_tokenizer("gpt2")
    assert (tok.kind, tok.vocab_size, tok.eot_id) == ("gpt2", 50257, 50256)
    assert tok.encode("Hello, world!") == [15496, 11, 995, 0]


@pytest.mark.parametrize(("args", "message"), [
    (("sentencepiece", ["x"]), "unknown tokenizer kind 'sentencepiece'; expected one of char, bpe, gpt2"),
    (("char",), "a char tokenizer needs training texts"),
    (("bpe",), "a bpe tokenizer needs training texts"),
    (("bpe", ["x"]), "a bpe tokenizer needs vocab_size"),
])
def test_errors(args: tuple, message: str) -> None:
    with pytest.raises(TokenizerError, match=message):
        build_tokenizer(*args)
