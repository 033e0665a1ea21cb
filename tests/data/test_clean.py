"""Cleaning and document filtering: clean_text, digests, shingles, DocFilter and its counts."""

from __future__ import annotations

import hashlib

from tfgpt.data.clean import CleanStats, DocDigest, DocFilter, clean_text, doc_digest, shingles


def test_clean_text_line_endings_controls_and_nfc() -> None:
    stats = CleanStats()
    assert clean_text("a\r\nb\rc", stats) == ("a\nb\nc", 0)
    assert clean_text("tab\tkept\x00\x07\x1b\x7f\x85gone", stats) == ("tab\tkeptgone", 5)
    assert clean_text("cafe\u0301", stats) == ("caf\u00e9", 0)  # NFC composes e + combining acute
    assert clean_text("caf\u00e9", stats) == ("caf\u00e9", 0)  # already NFC: not counted
    assert clean_text("", stats) == ("", 0)
    assert stats.control_chars_removed == 5 and stats.pieces_renormalized == 1


def test_clean_text_without_stats_and_unicode_kept() -> None:
    # U+2028 and U+00A0 are not category Cc: they stay
    assert clean_text("x\u2028y\u00a0z\x0bw") == ("x\u2028y\u00a0zw", 1)


def test_doc_digest_is_blake2b_16_and_incremental_matches() -> None:
    text = "hello wörld"
    assert doc_digest(text) == hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    assert doc_digest("a").hex() == hashlib.blake2b(b"a", digest_size=16).hexdigest()
    d = DocDigest()
    for part in ("hel", "lo w", "örld"):
        d.update(part)
    assert d.digest() == doc_digest(text)


def test_shingles_word_5_grams_lower_cased() -> None:
    assert shingles("A b C") == [b"a b c"]
    assert shingles("one two three four five six") == [b"one two three four five", b"two three four five six"]
    assert shingles("") == [b""]


def test_check_short_counts_empty_and_short() -> None:
    f = DocFilter(min_chars=4)
    assert [f.check_short(t) for t in ("", "  \n", "abc", " abc ", "abcd")] == [False, False, False, False, True]
    assert (f.stats.dropped_empty, f.stats.dropped_too_short) == (2, 2)


def test_exact_dedupe_only_when_asked() -> None:
    f = DocFilter(dedupe=True)
    keys = [doc_digest(t) for t in ("a", "b", "a", "a")]
    assert [f.check_duplicate(k) for k in keys] == [True, True, False, False]
    assert f.stats.dropped_exact_duplicate == 2
    g = DocFilter(dedupe=False)
    assert [g.check_duplicate(k) for k in keys] == [True, True, True, True]


def test_near_dedupe_drops_a_one_word_edit() -> None:
    base = " ".join(f"word{i}" for i in range(200))
    edited = base.replace("word100", "changed")
    other = " ".join(f"other{i}" for i in range(200))
    f = DocFilter(near_dedupe=True)

    def keep(text: str) -> bool:
        mh = f.new_minhash()
        mh.update_batch(shingles(text))
        return f.check_duplicate(doc_digest(text), mh)

    assert [keep(base), keep(edited), keep(other)] == [True, False, True]
    assert f.stats.dropped_near_duplicate == 1 and f.stats.dropped_exact_duplicate == 0


def test_stats_json_and_summary() -> None:
    s = CleanStats(documents_read=5, documents_kept=2, dropped_empty=1, dropped_too_short=1,
                   dropped_exact_duplicate=1, chars_read=40, chars_kept=20, control_chars_removed=3)
    assert s.to_json() == {
        "documents_read": 5, "documents_kept": 2,
        "dropped": {"empty": 1, "too_short": 1, "exact_duplicate": 1, "near_duplicate": 0},
        "chars_read": 40, "chars_kept": 20, "control_chars_removed": 3, "pieces_renormalized_nfc": 0,
    }
    assert s.summary() == "5 read, 1 empty, 1 too short, 1 exact duplicates, 0 near duplicates"
