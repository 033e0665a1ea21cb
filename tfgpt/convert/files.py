"""What the GPT-2 readers share: the :class:`Checkpoint` they return, file digests, and the pickle refusal.

Pickle-based weight files (``pytorch_model.bin``, ``*.pt``, ``*.pth``, ``*.pkl``, ``*.ckpt``...)
can run arbitrary code when loaded, so tfgpt never opens one: the readers refuse them by name
and point at safetensors, which holds the same tensors as plain data.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "pytorch_model.bin").write_bytes(b"...")
    >>> try:
    ...     refuse_pickle(d)
    ... except ConvertError as e:
    ...     print("pickle" in str(e), "model.safetensors" in str(e))
    True True
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from tfgpt.errors import ConvertError

#: Suffixes of pickle-based files (PyTorch, Lightning, joblib): refused, never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


@dataclasses.dataclass
class Checkpoint:
    """A GPT-2 read from disk: the built model, the layout, and what was read.

    Attributes:
        layout: "hf-safetensors", "hf-safetensors-sharded", "openai-tf-checkpoint" or "keras-hub-preset".
        model: the tfgpt ``GPT`` holding the weights.
        files: every file the weights and hyper-parameters came from.
        hyperparameters: the hyper-parameters as the file states them (config.json / hparams.json).
        root: the directory that was read (``files`` are recorded relative to it).
        weights_file: the file named in errors about the weights (the first shard, the checkpoint prefix).
    """

    layout: str
    model: Any
    files: list[Path]
    hyperparameters: dict[str, Any]
    root: Path
    weights_file: Path


def pickle_files(directory: str | os.PathLike) -> list[Path]:
    """The pickle-based files directly in ``directory`` (or ``directory`` itself if it is one)."""
    path = Path(directory)
    if path.is_file():
        return [path] if path.suffix.lower() in PICKLE_SUFFIXES else []
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)


def refuse_pickle(directory: str | os.PathLike) -> None:
    """Raise :class:`ConvertError` if ``directory`` holds (or is) a pickle-based weights file."""
    found = pickle_files(directory)
    if found:
        raise ConvertError(
            f"{found[0]}: a pickle-based file, which can run arbitrary code when loaded: tfgpt never opens "
            "pickle. Convert it to safetensors (model.safetensors; e.g. in PyTorch, "
            "model.save_pretrained(dir, safe_serialization=True)) and import that directory"
        )


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in ``chunk``-byte pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | os.PathLike, root: str | os.PathLike) -> dict[str, Any]:
    """``{"path": relative to root, "sha256", "size_bytes"}`` of one file read (for ``source.json``)."""
    path = Path(path)
    try:
        rel = str(path.resolve().relative_to(Path(root).resolve()))
    except ValueError:
        rel = str(path.resolve())
    return {"path": rel, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def one_line(error: BaseException) -> str:
    """``TypeName: message`` of an error from a library, on one line (their messages span several)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
