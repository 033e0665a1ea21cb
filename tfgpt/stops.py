"""Stop strings: a completion ends before the first one (``generate``, the TFLite runner and ``serve``).

Standard library only, so any module may import it.

A non-streamed completion is cut at the earliest stop string (:func:`cut_at_stop`). A stream is
scanned as it grows (:class:`StopScanner`): text that might be the start of a stop string is held
back until the next piece shows whether it is, so no text past a stop string is ever sent, and
the pieces sent join to what :func:`cut_at_stop` gives for the whole text.

Example:
    >>> cut_at_stop("Hi there.\\nYou: and", ["\\nYou:"])
    ('Hi there.', True)
    >>> scan = StopScanner(["\\nYou:"])
    >>> scan.feed("Hi there.\\nY"), scan.feed("ou: and"), scan.stopped
    ('Hi there.', '', True)
"""

from __future__ import annotations

from collections.abc import Sequence


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to (not including) its earliest stop string, and whether one was found.

    Example:
        >>> cut_at_stop("a.b!c", [".", "!"]), cut_at_stop("abc", ["x", ""])
        (('a', True), ('abc', False))
    """
    found = [at for at in (text.find(s) for s in stops if s) if at >= 0]
    return (text[: min(found)], True) if found else (text, False)


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of ``text`` may be the start of a stop string (the longest such end).

    Example:
        >>> held_back("Hi.\\nYo", ["\\nYou:"]), held_back("Hi.", ["\\nYou:"])
        (3, 0)
    """
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


class StopScanner:
    """A growing text with its stop strings: :meth:`feed` a piece, get the text that is safe to send.

    Once a stop string has appeared, :attr:`stopped` is True and nothing more is sent; at the end of
    a text that never stopped, :meth:`flush` sends what was held back.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add ``piece``; the new text to send (possibly empty)."""
        if self.stopped:
            return ""
        self.text, self.stopped = cut_at_stop(self.text + piece, self.stops)
        upto = len(self.text) if self.stopped else len(self.text) - held_back(self.text, self.stops)
        out = self.text[self.sent : max(upto, self.sent)]
        self.sent = max(upto, self.sent)
        return out

    def flush(self) -> str:
        """What is still held back, to send when the text ends without a stop string.

        Example:
            >>> scan = StopScanner(["###"])
            >>> scan.feed("done #"), scan.flush()
            ('done ', '#')
        """
        out = self.text[self.sent :]
        self.sent = len(self.text)
        return out
