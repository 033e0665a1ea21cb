"""Plain helpers for the serve tests: a real ``tfgpt serve`` (uvicorn) on a free 127.0.0.1 port, and the
limits the session's ``server`` fixture starts it with. Imported as ``tests.serve.helpers`` (not through
``conftest``, which another test directory's conftest could shadow); the fixtures stay in conftest.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests

CAP = 20
MAX_BODY = 4096

#: What each server started by :func:`start_server` wrote to stderr before it answered /healthz, by base URL.
STARTUP: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class Served:
    """A server :func:`serve_process` started: its base URL, the serving Python process's pid, and the last
    lines it wrote to stderr (``log``, drained by a thread so that a chatty server never blocks on it)."""

    base: str
    pid: int
    log: list[str] = dataclasses.field(repr=False)


@contextlib.contextmanager
def start_server(export: Path, *args: str) -> Iterator[str]:
    """``python -m tfgpt serve`` on a free port in a fresh process; yields its base URL, stops it after."""
    with serve_process(export, *args) as served:
        yield served.base


@contextlib.contextmanager
def serve_process(export: Path, *args: str) -> Iterator[Served]:
    """:func:`start_server`, yielding a :class:`Served` (the pid is for RSS readings: :func:`rss_bytes`)."""
    port = free_port()
    cmd = [sys.executable, "-m", "tfgpt", "serve", "--export", str(export), "--port", str(port), *args]
    # `timeout` bounds the server's life even if the test session dies.
    proc = subprocess.Popen(["timeout", "600", *cmd], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, base)
        STARTUP[base] = _read_available(proc.stderr.fileno())
        log = [STARTUP[base]]
        os.set_blocking(proc.stderr.fileno(), True)
        threading.Thread(target=_drain, args=(proc.stderr, log), daemon=True).start()
        yield Served(base, _child_pid(proc.pid), log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_healthy(proc: subprocess.Popen, base: str) -> None:
    """Until ``base``/healthz answers 200 (at most 120 s); a RuntimeError with its stderr if it exits first."""
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start in 120 s")
        time.sleep(0.3)


def _drain(stream, log: list[str], keep: int = 200) -> None:
    """Read ``stream`` until EOF, keeping its last ``keep`` lines in ``log``."""
    for line in stream:
        log.append(line.decode("utf-8", "replace"))
        del log[:-keep]


def _child_pid(pid: int) -> int:
    """The one child of ``pid`` (the server under ``timeout``), or ``pid`` itself if it has none."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (``VmRSS`` in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")

def _read_available(fd: int) -> str:
    """What the pipe ``fd`` holds now, without waiting for more (the fd is left non-blocking)."""
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")
