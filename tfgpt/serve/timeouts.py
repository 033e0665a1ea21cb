"""Bounds on how long a client may take to send a request, so that slow or idle clients cannot hold the server.

uvicorn's h11 protocol only times out a connection that is idle *after* a response (``timeout_keep_alive``):
a client that connects and sends nothing, or sends its headers one byte a second (slow-loris), holds a
connection (a file descriptor and a buffer) forever. :class:`TimedH11Protocol` closes a connection whose
request line and headers are not complete ``HEADER_TIMEOUT_S`` after it opened or after its last
response; :data:`tfgpt.serve.jsonio.BODY_TIMEOUT_S` bounds the body (:func:`~tfgpt.serve.jsonio.read_json`
answers 408).

Example:
    >>> uvicorn.run(app, http=TimedH11Protocol)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a client has to send a request's line and headers (from connecting, or from the last response).
HEADER_TIMEOUT_S = 10.0


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose headers take over :data:`HEADER_TIMEOUT_S`."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the next request's headers get the same bound (keep-alive included)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        timer: Any = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        """Drop the connection if it is still waiting for a request's headers."""
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
