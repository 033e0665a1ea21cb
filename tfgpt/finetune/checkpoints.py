"""The resumable work dir of a fine-tune: ``OUT.partial/`` with a manifest and per-epoch checkpoints.

``manifest.json`` holds the run's arguments (and the data file's SHA-256), so ``--resume`` with
different ones is refused naming the flag. ``checkpoints/epoch-NNNN/state.npz`` holds the raw
value of every model variable and every optimizer variable (``allow_pickle=False``) and
``state.json`` the epoch and its logs. Raw values, not ``save_weights``: Keras writes a LoRA
layer's kernel merged (and re-quantized for int8) and zeroes ``lora_kernel_a/b`` on load, so a
LoRA run restored through ``save_weights`` would stop learning (both LoRA factors zero give zero
gradients). Each checkpoint is written into a temp sibling and renamed; older ones are removed.

Example:
    >>> import tempfile, pathlib
    >>> work = pathlib.Path(tempfile.mkdtemp()) / "spam.partial"
    >>> work.mkdir()
    >>> write_manifest(work, {"lr": 0.001, "epochs": 2})
    >>> try:
    ...     check_manifest(work, {"lr": 0.002, "epochs": 2})
    ... except ConfigError as e:
    ...     print(str(e).split(" in ")[0], str(e).split(")")[0].split("(")[1])
    --resume: --lr differs from the interrupted run 0.001 there, 0.002 now
    >>> latest_epoch(work) is None
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfgpt.atomic import staged_dir, write_text_atomic
from tfgpt.errors import ConfigError, RunDirError
from tfgpt.layout import LOGS_DIR

MANIFEST_JSON = "manifest.json"
CHECKPOINTS_DIR = "checkpoints"
PARTIAL_SUFFIX = ".partial"


def partial_dir(out: str | os.PathLike) -> Path:
    """``OUT.partial``: where a fine-tune into ``OUT`` works until it is renamed into place."""
    out = Path(out)
    return out.parent / f"{out.name}{PARTIAL_SUFFIX}"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (the manifest's record of the data file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(work: Path, args: dict[str, Any]) -> None:
    """Record the run's arguments (JSON) in the work dir."""
    write_text_atomic(work / MANIFEST_JSON, json.dumps(args, indent=1, sort_keys=True) + "\n")


def check_manifest(work: Path, args: dict[str, Any]) -> None:
    """Refuse a resume whose arguments differ from the interrupted run's, naming the first flag."""
    path = work / MANIFEST_JSON
    if not path.is_file():
        raise RunDirError(f"--resume: {path} is missing (not an interrupted fine-tune); delete {work} to start over")
    saved = _read_json(path)
    if not isinstance(saved, dict):
        raise RunDirError(f"{path}: not a fine-tune manifest (a JSON object); delete {work} to start over")
    for key in sorted(set(saved) | set(args)):
        if saved.get(key) != args.get(key):
            flag = "--data (its contents)" if key == "data_sha256" else f"--{key.replace('_', '-')}"
            raise ConfigError(f"--resume: {flag} differs from the interrupted run in {work} "
                              f"({saved.get(key)!r} there, {args.get(key)!r} now); rerun with the same arguments "
                              "or delete it")


def _epoch_dirs(work: Path) -> list[tuple[int, Path]]:
    root = work / CHECKPOINTS_DIR
    found = [(int(p.name[6:]), p) for p in root.glob("epoch-*") if p.is_dir() and p.name[6:].isdigit()]
    return sorted(found)


def latest_epoch(work: Path) -> int | None:
    """The number of epochs the newest checkpoint has finished, or None."""
    dirs = _epoch_dirs(work)
    return dirs[-1][0] if dirs else None


def _variables(model: keras.Model, optimizer: Any = None) -> list[Any]:
    """What a checkpoint holds: the model's variables (weights, LoRA, int8 scales, RNG state), then
    the optimizer's (step count, moments, gradient accumulators); ``optimizer`` defaults to the
    model's own (DPO saves its policy with the optimizer of the wrapper that trains it)."""
    return list(model.variables) + list((optimizer or model.optimizer).variables)


def _shape_key(v: Any) -> str:
    """A variable's path without Keras's per-process ``_N`` name suffixes, plus its shape: the same
    variable of a model rebuilt in another process (or twice in one) has the same key."""
    return f"{re.sub(r'_[0-9]+', '', v.path)}{list(v.shape)}"


def save_epoch(work: Path, model: keras.Model, epoch: int, logs: dict[str, Any], optimizer: Any = None) -> None:
    """Write ``checkpoints/epoch-NNNN`` (``epoch`` epochs done) atomically; drop the older ones."""
    root = work / CHECKPOINTS_DIR
    root.mkdir(exist_ok=True)
    with staged_dir(root / f"epoch-{epoch:04d}") as tmp:
        variables = _variables(model, optimizer)
        arrays = {f"v{i}": np.asarray(keras.ops.convert_to_numpy(v)) for i, v in enumerate(variables)}
        arrays["keys"] = np.array([_shape_key(v) for v in variables], dtype=np.str_)
        with open(tmp / "state.npz", "wb") as f:
            np.savez(f, **arrays)
        (tmp / "state.json").write_text(json.dumps({"epoch": epoch, "logs": logs}) + "\n", encoding="utf-8")
    for n, path in _epoch_dirs(work):
        if n < epoch:
            shutil.rmtree(path, ignore_errors=True)


def restore_epoch(work: Path, model: keras.Model, optimizer: Any = None) -> tuple[int, dict[str, Any]]:
    """Load the newest checkpoint into a compiled ``model`` (its optimizer is built here);
    returns ``(epochs done, that epoch's logs)``."""
    epoch = latest_epoch(work)
    if epoch is None:
        return 0, {}
    path = work / CHECKPOINTS_DIR / f"epoch-{epoch:04d}"
    state = _read_json(path / "state.json")
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) or "logs" not in state:
        raise RunDirError(f"{path / 'state.json'}: not a checkpoint state (no epoch and logs); {_DELETE_HINT}")
    (optimizer or model.optimizer).build(model.trainable_variables)
    variables = _variables(model, optimizer)
    try:
        with np.load(path / "state.npz", allow_pickle=False) as data:
            if [str(k) for k in data["keys"]] != [_shape_key(v) for v in variables]:
                raise ConfigError(f"{path}: the checkpoint's variables do not match this model "
                                  "(changed code or flags?)")
            for i, v in enumerate(variables):
                v.assign(data[f"v{i}"])
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, ConfigError):
            raise
        detail = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}" if str(e).strip() else type(e).__name__
        raise RunDirError(f"{path / 'state.npz'}: not a readable checkpoint, the file is empty, truncated or "
                          f"corrupt ({detail}); {_DELETE_HINT}") from None
    return state["epoch"], state["logs"]


_DELETE_HINT = "delete that checkpoint dir to resume from the one before, or the .partial dir to start over"


def _read_json(path: Path) -> Any:
    """``json.loads`` of a work-dir file; a damaged one raises RunDirError naming it, not a traceback."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunDirError(f"{path}: not readable JSON, the file is empty, truncated or corrupt "
                          f"({type(e).__name__})") from None


def clear_work(work: Path) -> None:
    """Remove the checkpoints and manifest once the finished output is written beside them."""
    shutil.rmtree(work / CHECKPOINTS_DIR, ignore_errors=True)
    (work / MANIFEST_JSON).unlink(missing_ok=True)


def truncate_csv(path: Path, epochs_done: int) -> None:
    """Keep a CSVLogger file's header and its first ``epochs_done`` rows (a resumed run re-logs the rest)."""
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        write_text_atomic(path, "".join(lines[: 1 + epochs_done]) if epochs_done else "")


def check_work(out: Path, resume: bool) -> Path:
    """``OUT.partial``; refuse a leftover partial run without ``resume``, and ``resume`` without one."""
    work = partial_dir(out)
    if resume and not work.is_dir():
        raise RunDirError(f"--resume: no interrupted run to continue ({work} not found)")
    if not resume and work.exists():
        raise ConfigError(f"{work} holds an interrupted run: pass --resume to continue it, or delete it")
    return work


def start_work(work: Path, resume: bool, manifest: dict[str, Any]) -> None:
    """Check the manifest of a resumed run, or create ``OUT.partial`` with one and ``logs/`` (atomically)."""
    if resume:
        check_manifest(work, manifest)
        return
    with staged_dir(work) as stage:
        (stage / LOGS_DIR).mkdir()
        write_manifest(stage, manifest)


def finish_work(work: Path, out: Path) -> None:
    """Drop the checkpoints and manifest of a finished ``work`` dir and rename it to ``out``."""
    clear_work(work)
    if out.exists():
        out.rmdir()  # checked empty before training
    os.replace(work, out)


@contextmanager
def keeps_finished_epochs(work: Path) -> Iterator[None]:
    """On any exception (a crash, Ctrl-C, SIGTERM's KeyboardInterrupt) say how to continue, and re-raise."""
    try:
        yield
    except BaseException:
        print(f"{work} keeps the finished epochs: rerun with the same arguments and --resume to continue",
              file=sys.stderr)
        raise


def run_epochs(work: Path, model: keras.Model, epochs: int, fit_epoch: Callable[[int], dict[str, Any]],
               optimizer: Any = None) -> tuple[int, dict[str, Any]]:
    """Restore the newest checkpoint, then ``fit_epoch(e)`` for each epoch left, checkpointing after each.

    ``logs/metrics.csv`` is cut back to the restored epochs (a CSVLogger appends the rest). Returns
    ``(epochs restored, the last epoch's logs)``; a resume says (on stderr) where it starts.
    """
    done, last = restore_epoch(work, model, optimizer)
    if done:
        print(f"resuming {work} after epoch {done} of {epochs} "
              f"({work / CHECKPOINTS_DIR / f'epoch-{done:04d}'})", file=sys.stderr)
    truncate_csv(work / LOGS_DIR / "metrics.csv", done)
    for epoch in range(done, epochs):
        last = fit_epoch(epoch)
        save_epoch(work, model, epoch + 1, last, optimizer)
    return done, last


def remembered(work: Path, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()``, kept in ``checkpoints/NAME.json`` so a resumed run reuses it (e.g. the starting
    model's scores, measured once before training); removed with the checkpoints."""
    path = work / CHECKPOINTS_DIR / f"{name}.json"
    if path.is_file():
        return _read_json(path)
    value = compute()
    path.parent.mkdir(exist_ok=True)
    write_text_atomic(path, json.dumps(value) + "\n")
    return value
