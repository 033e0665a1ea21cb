"""A quiet command line: TensorFlow's native start-up chatter and library warnings held back.

TensorFlow 2.21 logs from C++ through absl straight to file descriptor 2 ("All log messages before
absl::InitializeLog() ...", oneDNN notes, "Could not find cuda drivers", cuInit) and ignores
``TF_CPP_MIN_LOG_LEVEL`` for most of it. None of it is actionable for a CLI user. So the ``tfgpt``
entry point points fd 2 at a pipe whose reader drops those info/warning records and the known
harmless errors and forwards every other line (a fatal check, a crash message) unchanged, while
Python's own ``sys.stderr`` (errors, progress bars) goes to the terminal directly. Python
warnings raised in tfgpt's own code print as one ``tfgpt: warning: ...`` line; other libraries'
warnings are dropped. ``tfgpt --verbose`` skips all of this.

Example:
    >>> is_noise("I0000 00:00:1796166393.497137   18953 port.cc:153] oneDNN custom operations are on.")
    True
    >>> is_noise("F0000 00:00:1796166393.497137   18953 check.cc:9] Check failed: x"), is_noise("error: bad")
    (False, False)
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, BinaryIO

#: absl's log record prefix: severity letter, date, time, thread id, file:line].
_RECORD = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\]]+\] ")
#: Error records TensorFlow prints on every CPU-only machine; nothing a user can do about them.
_HARMLESS_ERRORS = ("cuInit", "cuda", "oneDNN supports", "Unable to register")
_PACKAGE = str(Path(__file__).resolve().parent)


def is_noise(line: str) -> bool:
    """Whether a native stderr line is start-up chatter (absl info/warning, known harmless errors)."""
    if "absl::InitializeLog()" in line or line.startswith("INFO: Created TensorFlow Lite XNNPACK delegate"):
        return True
    m = _RECORD.match(line)
    if m is None:
        return False
    return m.group(1) in "IW" or (m.group(1) == "E" and any(h in line for h in _HARMLESS_ERRORS))


def _forward(pipe: BinaryIO, out: BinaryIO) -> None:
    for raw in pipe:
        if not is_noise(raw.decode("utf-8", "replace")):
            out.write(raw)
            out.flush()


def filter_native_stderr() -> None:
    """Route fd 2 through :func:`is_noise`; Python's ``sys.stderr`` keeps writing to the terminal."""
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = open(os.dup(terminal), "w", encoding="utf-8", errors="backslashreplace",  # noqa: SIM115
                      buffering=1, closefd=True)
    out = open(terminal, "wb", buffering=0)  # noqa: SIM115
    reader = threading.Thread(target=_forward, args=(open(read_end, "rb"), out), daemon=True)
    reader.start()

    def drain() -> None:
        os.dup2(out.fileno(), 2)  # closes the pipe's last write end: the reader sees EOF
        reader.join(timeout=2)

    atexit.register(drain)


def _show_own_warnings(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                       line: str | None = None) -> None:
    if str(Path(filename).resolve()).startswith(_PACKAGE):
        print(f"tfgpt: warning: {message}", file=sys.stderr)


def quiet_cli() -> None:
    """What ``tfgpt`` does before it runs a command (and before TensorFlow is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    filter_native_stderr()
    warnings.showwarning = _show_own_warnings
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # deprecation notices from TF's own Python code
