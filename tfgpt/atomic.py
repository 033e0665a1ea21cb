"""Atomic writes: write a temp sibling, then rename it over the target (readers never see half a file).

The temp file is created with the umask's mode, as ``open(path, "w")`` would: ``tempfile.mkstemp``
makes files owner-only (0600), and the files of a run or an export are read by other users' processes
(TF Serving, a file server, a teammate's notebook) once renamed into place.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> run = Path(tempfile.mkdtemp())
    >>> write_text_atomic(run / "config.yaml", "model: {}\\n")
    >>> (run / "config.yaml").read_text()
    'model: {}\\n'
    >>> with replacing(run / "model.keras", suffix=".keras") as tmp:  # e.g. model.save(tmp)
    ...     _ = tmp.write_bytes(b"weights")
    >>> sorted(p.name for p in run.iterdir())  # no temp file left beside them
    ['config.yaml', 'model.keras']
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _create_unique(parent: Path, prefix: str, suffix: str, create: Callable[[Path], Any]) -> Path:
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            create(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"could not create a unique {prefix}*{suffix} in {parent}")


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new, uniquely named dir in ``parent`` with the umask's mode (``tempfile.mkdtemp``'s is 0700)."""
    return _create_unique(Path(parent), prefix, "", Path.mkdir)


def _temp_sibling(path: Path, suffix: str) -> Path:
    """Create an empty, uniquely named hidden file next to ``path`` (mode 0666 less the umask)."""
    return _create_unique(
        path.parent, f".{path.name}.", f".tmp{suffix}",
        lambda p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)),
    )


@contextmanager
def replacing(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path next to ``path``; when the block succeeds it replaces ``path``, else it is removed.

    ``suffix`` ends the temp name (writers such as ``keras.Model.save`` check the extension).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def staged_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temp dir beside ``out``; when the block succeeds it becomes ``out``, else it is removed.

    An ``out`` that exists (an empty dir, or a previous export) is replaced only once the new one is
    complete, so a failed or interrupted run never leaves half an output, or none, where it was.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> with staged_dir(root / "run2") as stage:
        ...     _ = (stage / "config.yaml").write_text("model: {}\\n")
        >>> sorted(p.name for p in root.iterdir()), (root / "run2" / "config.yaml").is_file()
        (['run2'], True)
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = make_temp_dir(out.parent, f".{out.name}.")
    try:
        yield stage
        swap_into_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def swap_into_place(stage: Path, out: Path) -> None:
    """Rename ``stage`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    if not out.exists():
        os.replace(stage, out)
        return
    old = make_temp_dir(out.parent, f".{out.name}.old.")
    os.replace(out, old / "x")
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))
