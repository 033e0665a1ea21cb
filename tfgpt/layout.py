"""Run-dir file names and checkpoint pointers, importable without TensorFlow.

The names below are the only place a run dir's file names are spelled (:mod:`tfgpt.runs`
re-exports them with the loading code). This module needs only the standard library, so the CLI
can check a run dir before TensorFlow's import (:mod:`tfgpt.train.preflight`).

Example:
    >>> pointer_path("runs/x/checkpoints", "latest").name
    'latest.json'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tfgpt.errors import RunDirError

# -- the run-dir layout ---------------------------------------------------------------------------
CONFIG_YAML = "config.yaml"
TOKENIZER_DIR = "tokenizer"
MODEL_KERAS = "model.keras"
METRICS_JSONL = "metrics.jsonl"
SOURCE_JSON = "source.json"  # an imported run: where its weights came from (tfgpt.convert)
LOGS_DIR = "logs"
CHECKPOINTS = "checkpoints"
LATEST_JSON = "latest.json"
BEST_JSON = "best.json"
#: inside one checkpoint dir (``checkpoints/step-NNNNNN/``)
WEIGHTS_H5 = "model.weights.h5"
STATE_NPZ = "train_state.npz"
STATE_JSON = "state.json"
#: the checkpoint pointers by name: ``read_pointer(ckpt_dir, "latest")`` reads ``latest.json``
POINTERS = {"latest": LATEST_JSON, "best": BEST_JSON}


def pointer_path(ckpt_dir: str | os.PathLike, name: str) -> Path:
    """``CKPT_DIR/latest.json`` or ``CKPT_DIR/best.json``; ValueError for another name."""
    if name not in POINTERS:
        raise ValueError(f"checkpoint pointer must be one of {', '.join(POINTERS)}, got {name!r}")
    return Path(ckpt_dir) / POINTERS[name]


def read_pointer(ckpt_dir: str | os.PathLike, name: str = "latest") -> dict[str, Any] | None:
    """Contents of ``latest.json`` / ``best.json`` (``{"step": N, "dir": "step-..."}``), or None if absent."""
    path = pointer_path(ckpt_dir, name)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("dir"), str) or "step" not in data:
        raise RunDirError(f"{path}: expected {{'step': N, 'dir': 'step-...'}}")
    return data
