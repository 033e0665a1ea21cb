"""tfgpt.stops: a completion cut at its first stop string, and a stream that never sends past one."""

from __future__ import annotations

import itertools

import pytest

from tfgpt.stops import StopScanner, cut_at_stop, held_back


def test_the_earliest_stop_string_wins_and_empty_ones_are_ignored():
    assert cut_at_stop("one. two! three", ["!", "."]) == ("one", True)
    assert cut_at_stop("one", ["", "x"]) == ("one", False)
    assert cut_at_stop("", ["x"]) == ("", False)


def test_held_back_is_the_longest_end_that_starts_a_stop_string():
    assert held_back("ab##", ["###"]) == 2
    assert held_back("ab#", ["###", "#!"]) == 1
    assert held_back("abc", ["###"]) == 0
    assert held_back("ab", []) == 0


@pytest.mark.parametrize("text", ["Hi there.\nYou: more\nYou: again", "no stop here at all", "\nYou:", "ab\nYo"])
def test_any_split_of_a_text_streams_to_the_cut_text(text):
    """Whatever pieces the text arrives in, the sent pieces join to cut_at_stop's text; nothing past a stop."""
    stops = ["\nYou:", "zz"]
    expected, stopped = cut_at_stop(text, stops)
    for a, b in itertools.combinations(range(len(text) + 1), 2):
        scan = StopScanner(stops)
        sent = [scan.feed(p) for p in (text[:a], text[a:b], text[b:])]
        if not scan.stopped:
            sent.append(scan.flush())
        assert "".join(sent) == expected and scan.stopped == stopped, (a, b)


def test_nothing_is_sent_after_the_stop():
    scan = StopScanner(["."])
    assert (scan.feed("a.b"), scan.feed("cd"), scan.stopped) == ("a", "", True)
