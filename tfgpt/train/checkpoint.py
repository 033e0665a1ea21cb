"""Atomic checkpoints with everything exact resume needs.

``RUN/checkpoints/step-000100/`` holds ``model.weights.h5`` (``GPT.save_weights``),
``train_state.npz`` (optimizer variables, dropout RNG states; ``allow_pickle=False``) and
``state.json`` (step, tokens seen, val loss, the model shape). A checkpoint is written into a
hidden temp directory and renamed into place; only then is ``latest.json``
(``{"step": N, "dir": "step-000100"}``) rewritten atomically, so ``latest.json`` always names a
complete checkpoint. ``best.json`` names the checkpoint with the lowest val loss.

Example:
    >>> latest = read_pointer("runs/x/checkpoints", "latest")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfgpt.atomic import write_text_atomic
from tfgpt.errors import ConfigError, RunDirError

WEIGHTS = "model.weights.h5"
STATE_NPZ = "train_state.npz"
STATE_JSON = "state.json"


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def step_of_dir(name: str) -> int | None:
    """The step of a ``step-NNNNNN`` dir name (any number of digits), or None for other names."""
    digits = name.removeprefix("step-")
    return int(digits) if name.startswith("step-") and digits.isascii() and digits.isdigit() else None


def rng_variables(model: keras.Model) -> list[Any]:
    """Model state that is not in ``model.weights``: the dropout seed generators."""
    weight_ids = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weight_ids]


def read_pointer(ckpt_dir: str | os.PathLike, name: str = "latest") -> dict[str, Any] | None:
    """Contents of ``latest.json`` / ``best.json``, or None if absent."""
    path = Path(ckpt_dir) / f"{name}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or "dir" not in data or "step" not in data:
        raise RunDirError(f"{path}: expected {{'step': N, 'dir': 'step-...'}}")
    return data


def write_pointer(ckpt_dir: str | os.PathLike, name: str, data: dict[str, Any]) -> None:
    write_text_atomic(Path(ckpt_dir) / f"{name}.json", json.dumps(data, indent=1) + "\n")


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
        model.save_weights(str(tmp / WEIGHTS))
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
        state = {"step": step, "time": time.time(), **info}
        (tmp / STATE_JSON).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_pointer(ckpt_dir, "latest", {"step": step, "dir": name})
    return final


def restore_checkpoint(
    ckpt_path: str | os.PathLike, model: keras.Model, optimizer: keras.optimizers.Optimizer
) -> dict[str, Any]:
    """Load weights, optimizer and RNG state from a checkpoint dir; returns its ``state.json``.

    The optimizer must be built (``optimizer.build(model.trainable_variables)``).
    """
    ckpt_path = Path(ckpt_path)
    for name in (WEIGHTS, STATE_NPZ, STATE_JSON):
        if not (ckpt_path / name).is_file():
            raise RunDirError(f"checkpoint {ckpt_path} is incomplete: {name} is missing")
    state = json.loads((ckpt_path / STATE_JSON).read_text(encoding="utf-8"))
    try:
        model.load_weights(str(ckpt_path / WEIGHTS))
    except ValueError as e:
        raise ConfigError(f"checkpoint {ckpt_path} does not fit this model: {e}") from None
    with np.load(ckpt_path / STATE_NPZ, allow_pickle=False) as data:
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
    return state


def prune_checkpoints(ckpt_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` step dirs, never the ones latest/best point at."""
    ckpt_dir = Path(ckpt_dir)
    protected = {p["dir"] for p in (read_pointer(ckpt_dir, "latest"), read_pointer(ckpt_dir, "best")) if p}
    numbered = ((step_of_dir(p.name), p) for p in ckpt_dir.glob("step-*") if p.is_dir())
    steps = [p for _, p in sorted((s, p) for s, p in numbered if s is not None)]
    for path in steps[:-keep] if keep > 0 else steps:
        if path.name not in protected:
            shutil.rmtree(path, ignore_errors=True)
    for tmp in ckpt_dir.glob(".step-*.tmp-*"):
        if tmp.is_dir() and not tmp.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(tmp, ignore_errors=True)
