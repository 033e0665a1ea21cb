"""The one error the server turns into a 4xx reply: :class:`BadRequest`, with its HTTP status.

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
