"""The tokenizer of a ``prepare`` run, made from the corpus where it has to be.

``gpt2`` loads GPT-2's files (``gpt2_dir``, else ``$TFGPT_GPT2_BPE_DIR``, else the packaged copy);
``bpe`` trains a byte-level BPE on the first ``sample_chars`` characters of the cleaned corpus;
``char`` makes one streaming pass collecting every character (so no character is ever unknown) and
adds ``<|endoftext|>`` only when the corpus has more than one document (tinyshakespeare as one
document gives the classic 65). ``unk_token`` adds one more char id, where the characters a later
prompt brings that the corpus lacked are mapped (``tfgpt prepare --unk-token``).

Example:
    >>> import tempfile, pathlib
    >>> from tfgpt.data.sources import source_infos
    >>> src = pathlib.Path(tempfile.mkdtemp()) / "a.txt"; _ = src.write_text("hello")
    >>> corpus = Corpus([src], source_infos([src]))
    >>> corpus_tokenizer(corpus, "char").vocab_size
    4
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator

from tfgpt.data.clean import CleanStats
from tfgpt.data.documents import Corpus, empty_corpus
from tfgpt.data.progress import Progress
from tfgpt.errors import DataError
from tfgpt.tokenizers import END_OF_TEXT, Tokenizer, build_tokenizer


def corpus_tokenizer(corpus: Corpus, kind: str, vocab_size: int | None = None,
                     gpt2_dir: str | os.PathLike | None = None, sample_chars: int = 0,
                     progress: bool = False, unk_token: str | None = None) -> Tokenizer:
    """The ``kind`` tokenizer for ``corpus`` (see the module doc); an empty corpus is a DataError."""
    if kind == "gpt2":
        return build_tokenizer("gpt2", gpt2_dir=gpt2_dir)
    if kind == "char":
        return _char_tokenizer(corpus, progress, unk_token)
    if progress:
        print(f"training a {vocab_size}-token BPE on up to {sample_chars:,} characters...", file=sys.stderr)
    stats = CleanStats()
    texts = _sample(corpus, stats, sample_chars)
    first = next(texts, None)
    if first is None:
        raise empty_corpus(stats)
    return build_tokenizer("bpe", itertools.chain([first], texts), vocab_size=vocab_size)


def _char_tokenizer(corpus: Corpus, progress: bool, unk_token: str | None) -> Tokenizer:
    stats = CleanStats()
    bar = Progress(corpus.total_bytes, progress, "char vocabulary")
    chars: set[str] = set()
    try:
        for piece in corpus.documents(stats, bar.bytes):
            chars.update(piece.text)
    finally:
        bar.close()
    if stats.documents_kept == 0:
        raise empty_corpus(stats)
    if unk_token is not None and unk_token in chars:
        raise DataError(f"--unk-token {unk_token!r} is a character of the corpus: unknown characters would read "
                        f"as it; choose a token the corpus lacks, e.g. '<unk>'")
    specials = (END_OF_TEXT,) if stats.documents_kept > 1 else ()
    return build_tokenizer("char", ["".join(sorted(chars))], special_tokens=specials, unk_token=unk_token)


def _sample(corpus: Corpus, stats: CleanStats, sample_chars: int) -> Iterator[str]:
    """Cleaned text of the kept documents, up to the piece that reaches ``sample_chars`` in all."""
    n = 0
    for piece in corpus.documents(stats):
        yield piece.text
        n += len(piece.text)
        if n >= sample_chars:
            return
