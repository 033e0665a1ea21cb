"""Cleaning and filtering documents before tokenisation.

:func:`clean_text` normalises one piece of text: line endings to ``\\n``, control characters
(Unicode category Cc except ``\\n`` and ``\\t``) removed, Unicode NFC. :class:`DocFilter` decides
which documents to keep: too short (fewer than ``min_chars`` characters once stripped), exact duplicates
(blake2b of the cleaned text) and, optionally, near duplicates (MinHash over word 5-grams with
``datasketch``'s LSH index). Counts of everything dropped are kept in :class:`CleanStats`.

Note: de-duplication remembers one 16-byte digest (and, for near-dup, one MinHash signature) per
kept document, so its memory grows with the number of documents, not their size.

Example:
    >>> clean_text("caf\\u0065\\u0301\\r\\nbar\\x00")
    ('café\\nbar', 1)
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from typing import Any

_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
NEAR_DUP_THRESHOLD = 0.8
NEAR_DUP_NUM_PERM = 128
SHINGLE_WORDS = 5


@dataclasses.dataclass
class CleanStats:
    """What cleaning saw and dropped (written to the manifest's ``cleaning`` section)."""

    documents_read: int = 0
    documents_kept: int = 0
    dropped_empty: int = 0
    dropped_too_short: int = 0
    dropped_exact_duplicate: int = 0
    dropped_near_duplicate: int = 0
    chars_read: int = 0
    chars_kept: int = 0
    control_chars_removed: int = 0
    pieces_renormalized: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "documents_read": self.documents_read,
            "documents_kept": self.documents_kept,
            "dropped": {
                "empty": self.dropped_empty,
                "too_short": self.dropped_too_short,
                "exact_duplicate": self.dropped_exact_duplicate,
                "near_duplicate": self.dropped_near_duplicate,
            },
            "chars_read": self.chars_read,
            "chars_kept": self.chars_kept,
            "control_chars_removed": self.control_chars_removed,
            "pieces_renormalized_nfc": self.pieces_renormalized,
        }

    def summary(self) -> str:
        return (
            f"{self.documents_read} read, {self.dropped_empty} empty, {self.dropped_too_short} too short, "
            f"{self.dropped_exact_duplicate} exact duplicates, {self.dropped_near_duplicate} near duplicates"
        )


def clean_text(text: str, stats: CleanStats | None = None) -> tuple[str, int]:
    """Normalise line endings, drop control characters (keeping ``\\n`` and ``\\t``), apply NFC.

    Returns the cleaned text and the number of control characters removed.

    Example:
        >>> clean_text("a\\r\\nb\\x07")
        ('a\\nb', 1)
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    removed = 0
    if _CTRL_RE.search(text):
        text, removed = _CTRL_RE.subn("", text)
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
        if stats is not None:
            stats.pieces_renormalized += 1
    if stats is not None:
        stats.control_chars_removed += removed
    return text, removed


def doc_digest(text: str) -> bytes:
    """16-byte blake2b digest of cleaned text (the exact-duplicate key)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class DocDigest:
    """Incremental :func:`doc_digest` over the pieces of a long document."""

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)

    def update(self, text: str) -> None:
        self._h.update(text.encode("utf-8", "surrogatepass"))

    def digest(self) -> bytes:
        return self._h.digest()


def shingles(text: str) -> list[bytes]:
    """Word 5-gram shingles of lower-cased text (the whole text when it has fewer words)."""
    words = text.lower().split()
    if len(words) < SHINGLE_WORDS:
        return [" ".join(words).encode("utf-8", "surrogatepass")]
    return [
        " ".join(words[i : i + SHINGLE_WORDS]).encode("utf-8", "surrogatepass")
        for i in range(len(words) - SHINGLE_WORDS + 1)
    ]


class DocFilter:
    """Keeps or drops whole documents; counts why.

    Example:
        >>> f = DocFilter(min_chars=3, dedupe=True)
        >>> f.check_short("hi"), f.check_short("hello")
        (False, True)
    """

    def __init__(self, min_chars: int = 1, dedupe: bool = False, near_dedupe: bool = False,
                 stats: CleanStats | None = None) -> None:
        self.min_chars = min_chars
        self.dedupe = dedupe
        self.near_dedupe = near_dedupe
        self.stats = stats if stats is not None else CleanStats()
        self._seen: set[bytes] = set()
        self._lsh = None
        self._n = 0
        if near_dedupe:
            from datasketch import MinHashLSH

            self._lsh = MinHashLSH(threshold=NEAR_DUP_THRESHOLD, num_perm=NEAR_DUP_NUM_PERM)

    def check_short(self, text: str) -> bool:
        """False (and counted) when a whole document is empty or shorter than ``min_chars``."""
        n = len(text.strip())  # strip() returns the same object when there is nothing to strip
        if n == 0:
            self.stats.dropped_empty += 1
            return False
        if n < self.min_chars:
            self.stats.dropped_too_short += 1
            return False
        return True

    def new_minhash(self) -> Any:
        from datasketch import MinHash

        return MinHash(num_perm=NEAR_DUP_NUM_PERM, seed=1)

    def check_duplicate(self, digest: bytes, minhash: Any = None) -> bool:
        """False (and counted) for an exact or near duplicate of a kept document; else remembers it."""
        if self.dedupe:
            if digest in self._seen:
                self.stats.dropped_exact_duplicate += 1
                return False
            self._seen.add(digest)
        if self._lsh is not None and minhash is not None:
            if self._lsh.query(minhash):
                self.stats.dropped_near_duplicate += 1
                return False
            self._lsh.insert(str(self._n), minhash)
            self._n += 1
        return True
