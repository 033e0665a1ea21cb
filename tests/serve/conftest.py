"""One tiny SavedModel export for all serve tests, and a real ``tfgpt serve`` (uvicorn) on 127.0.0.1 over it.

The export is built once per session: the unit tests load it in-process (:class:`ExportedModel`), the
HTTP tests start servers on it, and the serving/ client tests run TF Serving bodies through it.
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

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))  # export_tiny_run
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "serving"))  # client.py (the deployment's client)

CAP = 20
MAX_BODY = 4096

#: What each server started by :func:`start_server` wrote to stderr before it answered /healthz, by base URL.
STARTUP: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel export named ``tiny`` of a 2-layer char model (block_size 32); its run is ``../run``."""
    from export_tiny_run import make_tiny_run

    from tfgpt.export import export_run

    root = tmp_path_factory.mktemp("serve")
    run = make_tiny_run(root / "run")
    export_run(run, root / "export", formats="savedmodel", name="tiny")
    return root / "export"


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


@pytest.fixture(scope="session")
def exported_model(tiny_export: Path):
    """:func:`tiny_export` loaded in-process, with the default cap (31 = block_size - 1)."""
    from tfgpt.serve.model import ExportedModel

    return ExportedModel(tiny_export)


@pytest.fixture(scope="session")
def keras_model(tiny_export: Path):
    """The Keras model and tokenizer of :func:`tiny_export`'s run: what the served answers must match."""
    import tfgpt

    return tfgpt.load(tiny_export.parent / "run")


@pytest.fixture(scope="session")
def server(tiny_export: Path) -> Iterator[str]:
    with start_server(tiny_export, "--max-new-tokens-cap", str(CAP), "--max-body-bytes", str(MAX_BODY),
                      "--workers", "4") as base:
        yield base


@pytest.fixture(scope="session")
def special_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export whose char tokenizer has a special token: its in-graph tokenizer uses TF-Text ops."""
    from export_tiny_run import EOT, make_tiny_run

    from tfgpt.export import export_run

    root = tmp_path_factory.mktemp("serve_special")
    run = make_tiny_run(root / "run", special_tokens=[EOT])
    export_run(run, root / "export", formats="savedmodel", name="special")
    return root / "export"


@pytest.fixture(scope="session")
def special_server(special_export: Path) -> Iterator[str]:
    """``tfgpt serve`` over :func:`special_export` in a fresh process (which must register the TF-Text ops)."""
    with start_server(special_export) as base:
        yield base


@pytest.fixture(scope="session")
def startup() -> dict[str, str]:
    """What each server :func:`start_server` started wrote to stderr before it answered (by base URL).
    A fixture, not an import: a test importing ``conftest`` at run time may get another directory's."""
    return STARTUP
