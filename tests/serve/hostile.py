"""Send one hostile request to a running ``tfgpt serve`` and judge its answer; tally the answers by kind.

A good answer is a 200 with a valid body (JSON, or a server-sent event stream ending ``data: [DONE]``)
or a 4xx whose JSON body carries an error message (OpenAI's ``{"error": {"message"}}`` or TF Serving's
``{"error": "..."}``), within :data:`ANSWER_S`. A 5xx, a dropped connection or a late answer is a bad one.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import defaultdict
from typing import Any

import requests

#: Seconds any hostile request may take to be answered (a 200 or a 4xx).
ANSWER_S = 10.0


class Tally:
    """Per kind of request: how many were tried, answered 4xx, 200 or 5xx, and the slowest answer."""

    def __init__(self) -> None:
        self.rows: dict[str, list] = defaultdict(lambda: [0, 0, 0, 0, 0.0])

    def add(self, kind: str, status: int, seconds: float) -> None:
        row = self.rows[kind]
        row[0] += 1
        row[1 if 400 <= status < 500 else 2 if status == 200 else 3] += 1
        row[4] = max(row[4], seconds)

    def table(self) -> list[list]:
        return [[kind, *row[:4], f"{row[4]:.2f}"] for kind, row in sorted(self.rows.items())]


def post(base: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[requests.Response, float]:
    """POST raw ``body`` bytes as JSON; the response and its seconds. A dropped connection raises."""
    start = time.monotonic()
    r = requests.post(base + path, data=body, headers={"content-type": "application/json", **(headers or {})},
                      timeout=ANSWER_S + 5)
    return r, time.monotonic() - start


def judge(r: requests.Response, seconds: float) -> None:
    """Assert ``r`` is a good answer (see the module's docstring)."""
    what = f"{r.request.method} {r.request.path_url} -> {r.status_code} {r.text[:300]!r}"
    assert seconds <= ANSWER_S, f"answered in {seconds:.1f} s > {ANSWER_S} s: {what}"
    assert r.status_code == 200 or 400 <= r.status_code < 500, what
    if r.status_code == 200 and r.headers.get("content-type", "").startswith("text/event-stream"):
        events = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events and events[-1] == "[DONE]", what
        assert all(isinstance(json.loads(e), dict) for e in events[:-1]), what
        return
    body = r.json()
    assert isinstance(body, dict), what
    if r.status_code != 200:
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        assert isinstance(message, str) and message.strip(), what


def send_and_judge(tally: Tally, kind: str, base: str, path: str, body: Any, raw: bool = False,
                   headers: dict[str, str] | None = None) -> requests.Response:
    """POST ``body`` (JSON-encoded unless ``raw``), judge the answer and tally it under ``kind``."""
    data = body if raw else json.dumps(body).encode()
    r, seconds = post(base, path, data, headers)
    tally.add(kind, r.status_code, seconds)
    judge(r, seconds)
    return r


def _recv_head(sock: socket.socket, deadline: float) -> bytes:
    """What the server sends until its headers are complete (body bytes that came along included), it closes,
    or ``deadline``."""
    data = b""
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def raw_exchange(port: int, request: bytes, timeout: float = ANSWER_S) -> bytes:
    """Send raw ``request`` bytes on a fresh connection; what the server answers before closing or ``timeout``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return _recv_head(sock, time.monotonic() + timeout)


def _whole_response(sock: socket.socket, timeout: float = ANSWER_S) -> bytes:
    """One whole response (headers, then Content-Length bytes of body): TCP may split it into several reads."""
    data = _recv_head(sock, time.monotonic() + timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def dripped(port: int, head: bytes, drip: bytes, bound: float, answered_first: bool = False) -> tuple[str, float]:
    """Send ``head`` at once, then ``drip`` one byte a second: how the server ended it ("dropped" or the
    status line it answered, or "held" if neither within ``bound`` s) and after how many seconds.
    ``answered_first``: ``head`` is a whole request, whose answer is read first (a keep-alive connection)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=bound) as sock:
        sock.sendall(head)
        if answered_first:
            first = _whole_response(sock)
            assert first.startswith(b"HTTP/1.1 200"), first[:200]
        sock.setblocking(False)
        for byte in drip:
            if time.monotonic() - start > bound:
                return "held", time.monotonic() - start
            try:
                answer = sock.recv(4096)
                return (answer.split(b"\r\n")[0].decode() if answer else "dropped"), time.monotonic() - start
            except BlockingIOError:
                pass
            except OSError:
                return "dropped", time.monotonic() - start
            try:
                sock.send(bytes([byte]))
            except OSError:
                return "dropped", time.monotonic() - start
            time.sleep(1.0)
    return "held", time.monotonic() - start


class SlowClients:
    """Slow-loris clients (headers, also after a first request on the connection, or a body, one byte a
    second) and ``idle`` connections that send nothing, started at once against ``port`` and left running
    while other requests go on; :meth:`finish` waits (up to ``bound`` s from the start) for the server to
    end them all and says how each ended."""

    HEAD = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n"
    SLOW_GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 64
    DRIPS = {"slow-loris headers": (b"", SLOW_GET),
             "slow-loris body": (HEAD, b'{"prompt": "' + b"a" * 60),
             "slow-loris headers after a keep-alive request": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", SLOW_GET)}

    def __init__(self, port: int, idle: int, bound: float) -> None:
        self.port, self.bound, self.start = port, bound, time.monotonic()
        self.ends: dict[str, tuple[str, float]] = {}
        self.threads = [threading.Thread(target=self._drip, args=(kind,), daemon=True) for kind in self.DRIPS]
        for t in self.threads:
            t.start()
        self.idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(idle)]
        for sock in self.idle:
            sock.setblocking(False)

    def _drip(self, kind: str) -> None:
        head, drip = self.DRIPS[kind]
        self.ends[kind] = dripped(self.port, head, drip, self.bound, answered_first=head.startswith(b"GET"))

    def finish(self) -> tuple[dict[str, tuple[str, float]], int, float]:
        """How each slow client ended, how many idle connections the server closed, and by when (s)."""
        deadline = self.start + self.bound
        open_ = set(range(len(self.idle)))
        while open_ and time.monotonic() < deadline:
            for i in list(open_):
                try:
                    if self.idle[i].recv(1) == b"":
                        open_.discard(i)
                except BlockingIOError:
                    pass
                except OSError:
                    open_.discard(i)
            time.sleep(0.2)
        closed_by = time.monotonic() - self.start
        for sock in self.idle:
            sock.close()
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()) + 5)
        return dict(self.ends), len(self.idle) - len(open_), closed_by
