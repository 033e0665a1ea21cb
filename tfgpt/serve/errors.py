"""The one error the server turns into a 4xx reply: :class:`BadRequest`, with its HTTP status; and
:func:`utf8_safe`, which makes its message encodable whatever request text it quotes.

Example:
    >>> e = BadRequest("request body is larger than 4096 bytes", status=413)
    >>> e.status, str(e)
    (413, 'request body is larger than 4096 bytes')
"""

from __future__ import annotations

from tfgpt.errors import ExportError


class BadRequest(ExportError):
    """A request the server rejects with HTTP 400 (or ``status``); its message is the reply's ``error``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def utf8_safe(text: str) -> str:
    """``text`` with lone surrogates (JSON's ``"\\ud800"``, which ``json.loads`` accepts) written as ``\\ud800``,
    so that a message quoting a request's field names or values can be encoded as UTF-8 for the reply.

    Example:
        >>> print(utf8_safe("unknown field(s) " + chr(0xD800)))
        unknown field(s) \\ud800
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
