"""Atomic checkpoints with everything exact resume needs, and their one owner.

``RUN/checkpoints/step-000100/`` holds ``model.weights.h5`` (``GPT.save_weights``),
``train_state.npz`` (optimizer variables, dropout RNG states; ``allow_pickle=False``) and
``state.json`` (step, tokens seen, val loss, the model shape, the sha256 of the other two files and of
its own content, checked on restore: a damaged checkpoint is refused by name, never trained on). A
checkpoint is written into a hidden temp directory and renamed into place; only then is ``latest.json``
(``{"step": N, "dir": "step-000100"}``) rewritten atomically, so ``latest.json`` always names a
complete checkpoint. ``best.json`` names the checkpoint with the lowest val loss.

:class:`Checkpoints` owns a run's checkpoint dir: it restores, saves once per step, keeps the
best val loss and the ``latest``/``best`` pointers, and prunes. Training and the monitor go
through it; nothing else writes there. File names come from :mod:`tfgpt.runs`.

Example:
    >>> ckpts = Checkpoints("runs/x/checkpoints", keep=3)  # doctest: +SKIP
    >>> ckpts.latest()  # doctest: +SKIP
    {'step': 500, 'dir': 'step-000500'}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfgpt.atomic import write_text_atomic
from tfgpt.errors import ConfigError, RunDirError, TfgptError
from tfgpt.runs import (
    DIGESTS_KEY,
    SELF_DIGEST_KEY,
    STATE_JSON,
    STATE_NPZ,
    WEIGHTS_H5,
    check_checkpoint_files,
    file_digest,
    pointer_path,
    read_checkpoint_state,
    read_pointer,
    state_digest,
)

__all__ = [
    "Checkpoints", "Resumed", "prune_checkpoints", "read_pointer", "restore_checkpoint", "rng_variables",
    "remove_stale_pointer_temps", "save_checkpoint", "step_dir_name", "step_of_dir", "write_pointer",
]

STEP_PREFIX = "step-"
#: Test-only: seconds each checkpoint write sleeps after its weights file and before the rest, so that a
#: crash test can kill a run in the middle of a write (the hidden temp dir holds only the weights then).
PAUSE_ENV = "TFGPT_TEST_CHECKPOINT_PAUSE"
#: Pointer temp files older than this are a killed write's (a live write renames its temp within milliseconds).
POINTER_TEMP_AGE_S = 60.0


def step_dir_name(step: int) -> str:
    """``step-000100`` for step 100 (six digits at least, so names sort by step up to a million)."""
    return f"{STEP_PREFIX}{step:06d}"


def step_of_dir(name: str) -> int | None:
    """The step of a ``step-NNNNNN`` dir name (any number of digits), or None for other names."""
    digits = name.removeprefix(STEP_PREFIX)
    return int(digits) if name.startswith(STEP_PREFIX) and digits.isascii() and digits.isdigit() else None


def rng_variables(model: keras.Model) -> list[Any]:
    """Model state that is not in ``model.weights``: the dropout seed generators."""
    weight_ids = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weight_ids]


def write_pointer(ckpt_dir: str | os.PathLike, name: str, data: dict[str, Any]) -> None:
    """Rewrite the ``latest`` or ``best`` pointer atomically."""
    write_text_atomic(pointer_path(ckpt_dir, name), json.dumps(data, indent=1) + "\n")


def save_checkpoint(
    ckpt_dir: str | os.PathLike,
    step: int,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    info: dict[str, Any],
) -> Path:
    """Write ``step-NNNNNN/`` atomically, then point ``latest.json`` at it."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = step_dir_name(step)
    final = ckpt_dir / name
    tmp = ckpt_dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.save_weights(str(tmp / WEIGHTS_H5))
        if os.environ.get(PAUSE_ENV):
            time.sleep(float(os.environ[PAUSE_ENV]))
        arrays: dict[str, np.ndarray] = {}
        opt_vars = list(optimizer.variables)
        for i, v in enumerate(opt_vars):
            arrays[f"opt_{i}"] = np.asarray(keras.ops.convert_to_numpy(v))
        arrays["opt_paths"] = np.array([v.path for v in opt_vars], dtype=np.str_)
        rngs = rng_variables(model)
        for i, v in enumerate(rngs):
            arrays[f"rng_{i}"] = np.asarray(keras.ops.convert_to_numpy(v))
        arrays["rng_paths"] = np.array([v.path for v in rngs] or [""], dtype=np.str_)[: len(rngs)]
        with open(tmp / STATE_NPZ, "wb") as f:
            np.savez(f, **arrays)
        digests = {name: file_digest(tmp / name) for name in (WEIGHTS_H5, STATE_NPZ)}  # checked on restore
        state = {"step": step, "time": time.time(), **info, DIGESTS_KEY: digests}
        state[SELF_DIGEST_KEY] = state_digest(state)
        (tmp / STATE_JSON).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        doomed = _hide(final) if final.exists() else None  # never a visible, half-deleted step dir
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if doomed is not None:
        shutil.rmtree(doomed, ignore_errors=True)
    write_pointer(ckpt_dir, "latest", {"step": step, "dir": name})
    return final


def restore_checkpoint(
    ckpt_path: str | os.PathLike, model: keras.Model, optimizer: keras.optimizers.Optimizer
) -> dict[str, Any]:
    """Load weights, optimizer and RNG state from a checkpoint dir; returns its ``state.json``.

    The optimizer must be built (``optimizer.build(model.trainable_variables)``). Each file's sha256 is
    checked against ``state.json``'s record first; a damaged file raises RunDirError naming it.
    """
    ckpt_path = Path(ckpt_path)
    for name in (WEIGHTS_H5, STATE_NPZ, STATE_JSON):
        if not (ckpt_path / name).is_file():
            raise RunDirError(f"checkpoint {ckpt_path} is incomplete: {name} is missing")
    state = read_checkpoint_state(ckpt_path)
    check_checkpoint_files(ckpt_path, (WEIGHTS_H5, STATE_NPZ), state)
    try:
        model.load_weights(str(ckpt_path / WEIGHTS_H5))
    except OSError as e:  # h5py: truncated, empty, not HDF5
        raise RunDirError(f"{ckpt_path / WEIGHTS_H5}: not a readable weights file ({_first_line(e)})") from None
    except ValueError as e:
        raise ConfigError(f"checkpoint {ckpt_path} does not fit this model: {e}") from None
    try:
        with np.load(ckpt_path / STATE_NPZ, allow_pickle=False) as data:
            _restore_arrays(ckpt_path, data, model, optimizer)
    except TfgptError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise RunDirError(f"{ckpt_path / STATE_NPZ}: not a readable optimizer state, the file is empty, truncated "
                          f"or corrupt ({_first_line(e)})") from None
    return state


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _restore_arrays(ckpt_path: Path, data: Any, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    """Assign the optimizer variables and dropout RNG states saved in ``train_state.npz`` (``data``)."""
    opt_vars = list(optimizer.variables)
    n_saved = sum(1 for k in data.files if k.startswith("opt_") and k != "opt_paths")
    if n_saved != len(opt_vars):
        raise ConfigError(
            f"checkpoint {ckpt_path} has {n_saved} optimizer variables, this optimizer has {len(opt_vars)}: "
            "the model shape or the optimizer changed"
        )
    for i, v in enumerate(opt_vars):
        value = data[f"opt_{i}"]
        if tuple(value.shape) != tuple(v.shape):
            raise ConfigError(f"checkpoint {ckpt_path}: optimizer variable {v.path} has shape "
                              f"{tuple(value.shape)}, expected {tuple(v.shape)}")
        v.assign(value)
    rngs = rng_variables(model)
    for i, v in enumerate(rngs):
        if f"rng_{i}" in data.files:
            v.assign(data[f"rng_{i}"])


def _hide(path: Path) -> Path:
    """Rename a step dir to a hidden ``.step-N.del-PID`` (atomic), so that a kill while it is being deleted
    leaves no visible, incomplete ``step-N``; returns the new path, for ``shutil.rmtree``."""
    doomed = path.parent / f".{path.name}.del-{os.getpid()}"
    shutil.rmtree(doomed, ignore_errors=True)  # a leftover of an earlier process with this pid
    os.rename(path, doomed)
    return doomed


def remove_stale_pointer_temps(ckpt_dir: str | os.PathLike, min_age_s: float = POINTER_TEMP_AGE_S) -> None:
    """Remove the temp files of ``latest.json``/``best.json`` writes a kill cut off (``.latest.json.<hex>.tmp``,
    see :mod:`tfgpt.atomic`; their names hold no pid) older than ``min_age_s``."""
    now = time.time()
    for name in ("latest", "best"):
        pointer = pointer_path(ckpt_dir, name)
        for stale in pointer.parent.glob(f".{pointer.name}.*.tmp*"):
            try:
                if now - stale.stat().st_mtime >= min_age_s:
                    stale.unlink()
            except FileNotFoundError:
                pass


def prune_checkpoints(ckpt_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` step dirs, never the ones latest/best point at, and what killed
    writes and deletes left: other pids' temp dirs, hidden ``.step-N.del-PID`` dirs, old pointer temps."""
    ckpt_dir = Path(ckpt_dir)
    protected = {p["dir"] for p in (read_pointer(ckpt_dir, "latest"), read_pointer(ckpt_dir, "best")) if p}
    numbered = ((step_of_dir(p.name), p) for p in ckpt_dir.glob(f"{STEP_PREFIX}*") if p.is_dir())
    steps = [p for _, p in sorted((s, p) for s, p in numbered if s is not None)]
    for path in steps[:-keep] if keep > 0 else steps:
        if path.name not in protected:
            shutil.rmtree(_hide(path), ignore_errors=True)
    for tmp in ckpt_dir.glob(f".{STEP_PREFIX}*.tmp-*"):
        if tmp.is_dir() and not tmp.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(tmp, ignore_errors=True)
    for doomed in ckpt_dir.glob(f".{STEP_PREFIX}*.del-*"):
        if doomed.is_dir():
            shutil.rmtree(doomed, ignore_errors=True)
    remove_stale_pointer_temps(ckpt_dir)


@dataclasses.dataclass(frozen=True)
class Resumed:
    """Where a restored run stands: its optimizer step and best val loss so far."""

    step: int
    best_val: float | None


class Checkpoints:
    """The one owner of a run's ``checkpoints/`` dir (see the module docstring).

    Args:
        ckpt_dir: ``RUN/checkpoints``.
        model, optimizer: what is saved and restored (the optimizer built).
        keep: how many recent step dirs to keep (the best and the latest are kept as well).
        chief: whether this process writes (other workers only restore and read).
        info: extra fields for each checkpoint's ``state.json``.
    """

    def __init__(self, ckpt_dir: str | os.PathLike, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 keep: int, chief: bool = True, info: dict[str, Any] | None = None) -> None:
        self.dir = Path(ckpt_dir)
        self.model = model
        self.optimizer = optimizer
        self.keep = keep
        self.chief = chief
        self.info = dict(info or {})
        self.best_val: float | None = None
        self._saved_step: int | None = None

    def latest(self) -> dict[str, Any] | None:
        return read_pointer(self.dir, "latest")

    def best(self) -> dict[str, Any] | None:
        return read_pointer(self.dir, "best")

    def restore(self) -> Resumed:
        """Load the latest checkpoint into the model and optimizer; RunDirError if there is none."""
        latest = self.latest()
        if latest is None:
            raise RunDirError(f"--resume: {pointer_path(self.dir, 'latest')} not found (no checkpoint yet)")
        state = restore_checkpoint(self.dir / latest["dir"], self.model, self.optimizer)
        step = int(keras.ops.convert_to_numpy(self.optimizer.iterations))
        if step != int(state["step"]):
            raise RunDirError(f"checkpoint {latest['dir']}: optimizer step {step} != {state['step']}")
        best = self._best_after_restore(latest, state)
        self.best_val = best.get("val_loss") if best else state.get("best_val_loss")
        if self.chief:
            remove_stale_pointer_temps(self.dir, min_age_s=0.0)  # the only writer, and it is not writing now
        return Resumed(step, self.best_val)

    def _best_after_restore(self, latest: dict[str, Any], state: dict[str, Any]) -> dict[str, Any] | None:
        """``best.json``, first pointed at the restored checkpoint if that holds a lower val loss: a kill between
        :meth:`offer_best`'s checkpoint (and ``latest.json``) and its ``best.json`` left best.json stale."""
        best = self.best()
        val = state.get("val_loss")
        if not isinstance(val, (int, float)) or not math.isfinite(val):
            return best
        if best is None or not isinstance(best.get("val_loss"), (int, float)) or val < best["val_loss"]:
            best = {"step": int(state["step"]), "dir": latest["dir"], "val_loss": float(val)}
            if self.chief:
                write_pointer(self.dir, "best", best)
        return best

    def save(self, step: int, tokens: int) -> None:
        """Checkpoint at ``step`` (once per step), then prune to the last ``keep`` plus the best."""
        if self.chief:
            self._write(step, tokens)
            prune_checkpoints(self.dir, self.keep)

    def offer_best(self, step: int, tokens: int, val_loss: float | None) -> bool:
        """If ``val_loss`` is finite and the lowest so far: checkpoint ``step`` and point ``best.json`` at it."""
        if val_loss is None or not math.isfinite(val_loss) or (self.best_val is not None and val_loss >= self.best_val):
            return False
        self.best_val = val_loss
        if self.chief:
            self._write(step, tokens, val_loss)
            write_pointer(self.dir, "best", {"step": step, "dir": step_dir_name(step), "val_loss": val_loss})
            prune_checkpoints(self.dir, self.keep)
        return True

    def _write(self, step: int, tokens: int, val_loss: float | None = None) -> None:
        if self._saved_step == step:
            return
        info = {**self.info, "tokens": tokens, "best_val_loss": self.best_val}
        if val_loss is not None:
            info["val_loss"] = val_loss
        save_checkpoint(self.dir, step, self.model, self.optimizer, info)
        self._saved_step = step

    def where(self) -> str:
        """For error messages: which checkpoint is the latest good one."""
        latest = self.latest()
        return f"the latest good checkpoint is {latest['dir']}" if latest else "no checkpoint was written"
