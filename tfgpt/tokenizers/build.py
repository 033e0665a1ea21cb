"""Make a tokenizer from its kind string: the one place that switches on "char" / "bpe" / "gpt2".

``tfgpt prepare`` and anything else that starts from a ``--tokenizer`` choice call
:func:`build_tokenizer`; loading a saved one is :func:`tfgpt.tokenizers.load_tokenizer`.

Example:
    >>> tok = build_tokenizer("char", ["hello"])
    >>> tok.vocab_size, tok.encode("hole")
    (4, [1, 3, 2, 0])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from tfgpt.errors import TokenizerError
from tfgpt.tokenizers.base import END_OF_TEXT, Tokenizer
from tfgpt.tokenizers.bpe import BPETokenizer
from tfgpt.tokenizers.char import CharTokenizer

#: The tokenizer kinds, as ``tokenizer.json``'s ``type`` and ``tfgpt prepare --tokenizer`` name them.
KINDS = ("char", "bpe", "gpt2")


def build_tokenizer(
    kind: str,
    texts: Iterable[str] | None = None,
    vocab_size: int | None = None,
    special_tokens: Sequence[str] | None = None,
    gpt2_dir: str | os.PathLike | None = None,
    unk_token: str | None = None,
) -> Tokenizer:
    """Make a tokenizer of ``kind`` ("char", "bpe", "gpt2"), training on ``texts`` where needed.

    ``gpt2`` loads GPT-2's files from ``gpt2_dir`` (default ``$TFGPT_GPT2_BPE_DIR``, else the copy
    shipped in the package); ``bpe`` needs ``vocab_size``. ``special_tokens`` defaults to none for
    char (tinyshakespeare → 65 ids) and ``("<|endoftext|>",)`` for bpe. ``unk_token`` (char only) is
    where characters outside the vocabulary go; byte-level bpe and gpt2 have no unknown characters.

    Example:
        >>> build_tokenizer("gpt2").vocab_size
        50257
        >>> build_tokenizer("bpe", ["abab " * 50], vocab_size=260).special_tokens
        {'<|endoftext|>': 259}
        >>> build_tokenizer("char", ["hello"], unk_token="<unk>").encode("help!")
        [1, 0, 2, 4, 4]
    """
    if unk_token is not None and kind != "char":
        raise TokenizerError(f"unk_token applies to the char tokenizer only: a byte-level {kind} tokenizer "
                             f"has no unknown characters")
    if kind == "gpt2":
        return BPETokenizer.gpt2(gpt2_dir)
    if kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")
    if texts is None:
        raise TokenizerError(f"a {kind} tokenizer needs training texts")
    if kind == "char":
        return CharTokenizer.train(texts, special_tokens=special_tokens or (), unk_token=unk_token)
    if not vocab_size:
        raise TokenizerError("a bpe tokenizer needs vocab_size")
    specials = (END_OF_TEXT,) if special_tokens is None else special_tokens
    return BPETokenizer.train(texts, vocab_size=vocab_size, special_tokens=specials)
