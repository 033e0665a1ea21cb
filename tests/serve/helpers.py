"""Plain helpers for the serve tests: a real ``tfgpt serve`` (uvicorn) on a free 127.0.0.1 port, and the
limits the session's ``server`` fixture starts it with. Imported as ``tests.serve.helpers`` (not through
``conftest``, which another test directory's conftest could shadow); the fixtures stay in conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
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


@contextlib.contextmanager
def start_server(export: Path, *args: str) -> Iterator[str]:
    """``python -m tfgpt serve`` on a free port in a fresh process; yields its base URL, stops it after."""
    port = free_port()
    cmd = [sys.executable, "-m", "tfgpt", "serve", "--export", str(export), "--port", str(port), *args]
    # `timeout` bounds the server's life even if the test session dies.
    proc = subprocess.Popen(["timeout", "600", *cmd], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in 120 s")
            time.sleep(0.3)
        STARTUP[base] = _read_available(proc.stderr.fileno())
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _read_available(fd: int) -> str:
    """What the pipe ``fd`` holds now, without waiting for more (the fd is left non-blocking)."""
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")
