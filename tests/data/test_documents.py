"""kept_pieces / Corpus: which documents prepare keeps, and how long ones pass through."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfgpt.data.clean import CleanStats, DocFilter, doc_digest
from tfgpt.data.documents import Corpus, DocPiece, empty_corpus, kept_pieces
from tfgpt.data.sources import Piece, source_infos


def _long(pieces: list[str]) -> list[Piece]:
    """One document cut into ``pieces`` as sources would (first .. last)."""
    n = len(pieces)
    return [Piece(0, t, i == 0, i == n - 1) for i, t in enumerate(pieces)]


def test_whole_documents_cleaned_and_filtered() -> None:
    f = DocFilter(min_chars=3, dedupe=True)
    pieces = [Piece(0, "ab\r\ncd", True, True), Piece(0, "x", True, True), Piece(1, "ab\ncd", True, True),
              Piece(1, "\x00\x01", True, True)]
    out = list(kept_pieces(iter(pieces), f))
    assert out == [DocPiece(doc_digest("ab\ncd"), "ab\ncd", True, True)]
    s = f.stats
    assert (s.documents_read, s.documents_kept, s.dropped_too_short, s.dropped_exact_duplicate,
            s.dropped_empty) == (4, 1, 1, 1, 1)
    assert (s.chars_read, s.chars_kept, s.control_chars_removed) == (11, 5, 2)


def test_long_document_streams_without_dedupe() -> None:
    f = DocFilter()
    out = list(kept_pieces(iter(_long(["one\r\n", "two\n", "three"])), f))
    key = doc_digest("one\n")  # the split key is the digest of the first (cleaned) piece
    assert out == [DocPiece(key, "one\n", True, False), DocPiece(key, "two\n", False, False),
                   DocPiece(key, "three", False, True)]
    assert (f.stats.documents_kept, f.stats.chars_kept) == (1, 13)


def test_long_documents_spooled_for_dedupe(tmp_path: Path) -> None:
    f = DocFilter(dedupe=True)
    doc = ["alpha\n", "beta\n", "gamma"]
    pieces = _long(doc) + _long(doc) + _long(["alpha\n", "delta"])
    out = list(kept_pieces(iter(pieces), f, spool_dir=tmp_path))
    k1, k2 = doc_digest("alpha\n"), doc_digest("alpha\n")
    # a spooled document is replayed, then closed by an empty last piece
    assert out == [DocPiece(k1, "alpha\n", True, False), DocPiece(k1, "beta\n", False, False),
                   DocPiece(k1, "gamma", False, False), DocPiece(k1, "", False, True),
                   DocPiece(k2, "alpha\n", True, False), DocPiece(k2, "delta", False, False),
                   DocPiece(k2, "", False, True)]
    assert (f.stats.documents_read, f.stats.documents_kept, f.stats.dropped_exact_duplicate) == (3, 2, 1)
    assert f.stats.chars_kept == 16 + 11
    assert list(tmp_path.iterdir()) == []  # spool files are anonymous and closed


def test_corpus_reads_files_each_pass(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello\n")
    (tmp_path / "b.jsonl").write_text('{"body": "x"}\n{"body": "hello\\n"}\n')
    files = [tmp_path / "a.txt", tmp_path / "b.jsonl"]
    corpus = Corpus(files, source_infos(files), text_field="body", min_chars=2, dedupe=True)
    assert corpus.total_bytes == 6 + 14 + 20
    for _ in range(2):
        stats = CleanStats()
        seen: list[int] = []
        assert [p.text for p in corpus.documents(stats, seen.append)] == ["hello\n"]
        assert sum(seen) == 40 and (stats.documents_read, stats.dropped_too_short) == (3, 1)
    assert [i.documents for i in corpus.infos] == [1, 2]


def test_empty_corpus_error_names_the_counts() -> None:
    stats = CleanStats(documents_read=2, dropped_empty=2)
    with pytest.raises(Exception, match=r"empty corpus: no documents left after cleaning \(2 read, 2 empty"):
        raise empty_corpus(stats)
