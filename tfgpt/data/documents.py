"""The documents ``tfgpt prepare`` keeps: read pieces → clean → drop empty, short and duplicate ones.

:class:`Corpus` re-reads its inputs on every pass (vocabulary, then tokenisation), so memory stays
flat whatever the corpus size. A document longer than one piece is streamed through when nothing
depends on its end; with de-duplication on it is spooled to a temp file until its last piece
decides whether it is a duplicate.

Example:
    >>> f = DocFilter(min_chars=1, dedupe=True)
    >>> pieces = [Piece(0, "a\\r\\nb", True, True), Piece(0, "a\\nb", True, True), Piece(0, " ", True, True)]
    >>> [p.text for p in kept_pieces(iter(pieces), f)], f.stats.dropped_exact_duplicate, f.stats.dropped_empty
    (['a\\nb'], 1, 1)
"""

from __future__ import annotations

import dataclasses
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from tfgpt.data.clean import CleanStats, DocDigest, DocFilter, clean_text, doc_digest, shingles
from tfgpt.data.sources import Piece, SourceInfo, iter_pieces
from tfgpt.errors import DataError


class DocPiece(NamedTuple):
    """A cleaned piece of a kept document. ``key`` (16 bytes) is the digest of the document's first
    piece: the train/val split key. A spooled document ends with an empty piece whose ``last`` is set."""

    key: bytes
    text: str
    first: bool
    last: bool


def empty_corpus(stats: CleanStats) -> DataError:
    """The error for a corpus with no document left after cleaning."""
    return DataError(f"empty corpus: no documents left after cleaning ({stats.summary()})")


@dataclasses.dataclass
class Corpus:
    """The input files and the document filter settings of one ``prepare`` run."""

    files: list[Path]
    infos: list[SourceInfo]
    text_field: str = "text"
    min_chars: int = 1
    dedupe: bool = False
    near_dedupe: bool = False
    spool_dir: str | os.PathLike | None = None

    @property
    def total_bytes(self) -> int:
        return sum(i.bytes for i in self.infos)

    def documents(self, stats: CleanStats, on_bytes: Callable[[int], None] | None = None) -> Iterator[DocPiece]:
        """One pass over the kept documents; ``stats`` counts what was read and dropped."""
        filt = DocFilter(min_chars=self.min_chars, dedupe=self.dedupe, near_dedupe=self.near_dedupe, stats=stats)
        pieces = iter_pieces(self.files, self.infos, text_field=self.text_field, on_bytes=on_bytes)
        return kept_pieces(pieces, filt, spool_dir=self.spool_dir)


def kept_pieces(
    pieces: Iterator[Piece],
    filt: DocFilter,
    spool_dir: str | os.PathLike | None = None,
) -> Iterator[DocPiece]:
    """Clean pieces and drop filtered documents; yield :class:`DocPiece` s of the kept ones.

    Example:
        >>> f = DocFilter(min_chars=1)
        >>> [t for _, t, _, _ in kept_pieces(iter([Piece(0, "a\\r\\nb", True, True)]), f)]
        ['a\\nb']
    """
    stats = filt.stats
    doc: _StreamedDoc | _SpooledDoc | None = None
    for _src, raw, first, last in pieces:
        text, _ = clean_text(raw, stats)
        if first:
            stats.documents_read += 1
        stats.chars_read += len(text)
        if first and last:
            key = _keep_whole(text, filt)
            if key is not None:
                yield DocPiece(key, text, True, True)
            continue
        if first:
            needs_end = filt.dedupe or filt.near_dedupe
            doc = _SpooledDoc(doc_digest(text), filt, spool_dir) if needs_end else _StreamedDoc(doc_digest(text), stats)
        assert doc is not None
        yield from doc.add(text, first, last)
        if last:
            doc = None


def _keep_whole(text: str, filt: DocFilter) -> bytes | None:
    """The split key of a one-piece document, or None when the filter drops it."""
    if not filt.check_short(text):
        return None
    key = doc_digest(text)
    minhash = None
    if filt.near_dedupe:
        minhash = filt.new_minhash()
        minhash.update_batch(shingles(text))
    if not filt.check_duplicate(key, minhash):
        return None
    filt.stats.documents_kept += 1
    filt.stats.chars_kept += len(text)
    return key


class _StreamedDoc:
    """A long document passed through piece by piece (nothing is decided at its end)."""

    def __init__(self, key: bytes, stats: CleanStats) -> None:
        self.key = key
        self.stats = stats
        stats.documents_kept += 1

    def add(self, text: str, first: bool, last: bool) -> Iterator[DocPiece]:
        self.stats.chars_kept += len(text)
        yield DocPiece(self.key, text, first, last)


class _SpooledDoc:
    """A long document held in a temp file until its last piece tells whether it is a duplicate."""

    def __init__(self, key: bytes, filt: DocFilter, spool_dir: str | os.PathLike | None) -> None:
        self.key = key
        self.filt = filt
        self.digest = DocDigest()
        self.minhash: Any = filt.new_minhash() if filt.near_dedupe else None
        self.chars = 0
        self.spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 (closed by _replay)

    def add(self, text: str, first: bool, last: bool) -> Iterator[DocPiece]:
        self.digest.update(text)
        if self.minhash is not None:
            self.minhash.update_batch(shingles(text))
        data = text.encode("utf-8", "surrogatepass")
        self.spool.write(struct.pack("<Q", len(data)) + data)
        self.chars += len(text)
        if last:
            yield from self._replay()

    def _replay(self) -> Iterator[DocPiece]:
        with self.spool:
            if not self.filt.check_duplicate(self.digest.digest(), self.minhash):
                return
            self.filt.stats.documents_kept += 1
            self.filt.stats.chars_kept += self.chars
            self.spool.seek(0)
            first = True
            while head := self.spool.read(8):
                (n,) = struct.unpack("<Q", head)
                yield DocPiece(self.key, self.spool.read(n).decode("utf-8", "surrogatepass"), first, False)
                first = False
            # the closing marker: an empty last piece carries the end-of-document flag
            yield DocPiece(self.key, "", False, True)
