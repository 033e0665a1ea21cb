"""Run directories: where a trained model lives, its file names, and loading one back.

A run dir holds ``config.yaml`` (a ``model:`` section with the GPTConfig fields, plus training
sections), ``tokenizer/``, ``metrics.jsonl``, TensorBoard ``logs/``, and weights: ``model.keras``
and/or checkpoints under ``checkpoints/`` (``latest.json`` names the newest complete one, holding
``model.weights.h5``; ``best.json`` the one with the lowest val loss). The names are spelled once,
in :mod:`tfgpt.layout` (no TensorFlow), and re-exported here; training, eval and export import them.

Layering: this module imports :mod:`tfgpt.train.config` (pure dataclasses) and nothing else of
``tfgpt.train``; ``tfgpt.train.*`` imports this module, never the other way round.

Example:
    >>> model, tokenizer = tfgpt.load("runs/shakespeare")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import keras

from tfgpt.atomic import replacing
from tfgpt.config import GPTConfig, load_model_config, save_model_config
from tfgpt.data.shards import file_sha256 as file_digest  # noqa: F401  (also tfgpt.runs.file_digest)
from tfgpt.errors import ConfigError, RunDirError, TfgptError
from tfgpt.layout import (  # noqa: F401  (the run-dir names live in layout.py; importers use tfgpt.runs)
    BEST_JSON,
    CHECKPOINTS,
    CONFIG_YAML,
    LATEST_JSON,
    LOGS_DIR,
    METRICS_JSONL,
    MODEL_KERAS,
    POINTERS,
    SOURCE_JSON,
    STATE_JSON,
    STATE_NPZ,
    TOKENIZER_DIR,
    WEIGHTS_H5,
    pointer_path,
    read_pointer,
)
from tfgpt.model import GPT
from tfgpt.train.config import DataConfig, TrainConfig, resolve_config


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The weights file of the newest complete checkpoint, or None."""
    ckpt_dir = Path(run_dir) / CHECKPOINTS
    info = read_pointer(ckpt_dir, "latest")
    if info is None:
        return None
    pointer, weights = ckpt_dir / LATEST_JSON, ckpt_dir / info["dir"] / WEIGHTS_H5
    if not weights.is_file():
        raise RunDirError(f"{pointer} names {weights}, which does not exist")
    return weights


def weights_path(run_dir: str | os.PathLike, checkpoint: str | None = None) -> Path:
    """Which weights :func:`load` uses: ``checkpoint`` if given, else the newer of model.keras
    and the latest checkpoint."""
    run = Path(run_dir)
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_absolute() and not path.exists():
            path = run / CHECKPOINTS / checkpoint
        if path.is_dir():
            path = path / WEIGHTS_H5
        if not path.is_file():
            raise RunDirError(f"checkpoint not found: {path}")
        return path
    candidates = [p for p in (run / MODEL_KERAS, latest_checkpoint(run)) if p is not None and p.is_file()]
    if not candidates:
        raise RunDirError(
            f"{run} holds no weights: expected {MODEL_KERAS} or {CHECKPOINTS}/{LATEST_JSON} (train first)"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime_ns)


def weights_step(run_dir: str | os.PathLike, path: str | os.PathLike) -> int | None:
    """The training step of the weights at ``path`` (as :func:`weights_path` returns), None if unknown.

    A checkpoint's step is in its ``state.json``. Training writes ``model.keras`` right after its
    final checkpoint, so a run's ``model.keras`` has the latest checkpoint's step.
    """
    path = Path(path)
    if path.resolve() == (Path(run_dir) / MODEL_KERAS).resolve():
        path = latest_checkpoint(run_dir)
        if path is None:
            return None
    if path.name != WEIGHTS_H5 or not (path.parent / STATE_JSON).is_file():
        return None
    return int(read_checkpoint_state(path.parent)["step"])


#: ``state.json``'s key for the sha256 of each file beside it, written with the checkpoint.
DIGESTS_KEY = "sha256"
#: ``state.json``'s key for the sha256 of its own content (:func:`state_digest`): a changed digit is caught too.
SELF_DIGEST_KEY = "state_sha256"


def state_digest(state: dict[str, Any]) -> str:
    """The sha256 of a checkpoint state's canonical JSON (sorted keys, compact), its own digest left out."""
    body = {k: v for k, v in state.items() if k != SELF_DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def read_checkpoint_state(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint dir's ``state.json`` (an object with an integer ``step``); RunDirError naming it otherwise."""
    path = Path(ckpt_dir) / STATE_JSON
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunDirError(f"{path}: unreadable checkpoint state, the file is empty, truncated or corrupt "
                          f"({type(e).__name__}: {detail})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or isinstance(state["step"], bool):
        raise RunDirError(f"{path}: not a checkpoint state (expected an object with an integer 'step')")
    if SELF_DIGEST_KEY in state and state[SELF_DIGEST_KEY] != state_digest(state):
        raise RunDirError(f"{path} is corrupt: its content does not match its {SELF_DIGEST_KEY} (edited or damaged)")
    return state


def check_checkpoint_files(ckpt_dir: str | os.PathLike, names: tuple[str, ...], state: dict[str, Any]) -> None:
    """Raise RunDirError naming the first of ``names`` whose sha256 differs from the one ``state.json``
    recorded when the checkpoint was written (checkpoints from before digests were recorded are not checked)."""
    recorded = state.get(DIGESTS_KEY)
    if recorded is None:
        return
    ckpt_dir = Path(ckpt_dir)
    if not isinstance(recorded, dict):
        raise RunDirError(f"{ckpt_dir / STATE_JSON}: {DIGESTS_KEY!r} must be an object of file name -> sha256")
    for name in names:
        if recorded.get(name) is None:
            raise RunDirError(f"{ckpt_dir / STATE_JSON} records no sha256 of {name}")
        if file_digest(ckpt_dir / name) != recorded[name]:
            raise RunDirError(f"{ckpt_dir / name} is corrupt: its sha256 differs from the one {STATE_JSON} recorded "
                              "when the checkpoint was written")


def load_run_model(
    run_dir: str | os.PathLike, checkpoint: str = "final"
) -> tuple[GPT, tuple[GPTConfig, TrainConfig, DataConfig], int | None, Path]:
    """The GPT of a run, its configs, its step (None if unknown) and the weights file loaded.

    ``checkpoint``: "final" (the weights :func:`tfgpt.load` uses: the newer of ``model.keras`` and
    the latest checkpoint), "latest", "best", a step dir name, or a checkpoint dir or weights file path.

    Example:
        >>> model, (m, t, d), step, path = load_run_model("runs/x", "best")  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_YAML).is_file():
        raise RunDirError(f"{run_dir} is not a run dir (no {CONFIG_YAML})")
    cfgs = resolve_config(run_dir / CONFIG_YAML, run_sections=True)
    if checkpoint in POINTERS:
        pointer = read_pointer(run_dir / CHECKPOINTS, checkpoint)
        if pointer is None:
            raise RunDirError(f"{run_dir}: no {checkpoint} checkpoint ({CHECKPOINTS}/{POINTERS[checkpoint]} not found)")
        checkpoint = str(pointer["dir"])
    path = weights_path(run_dir, None if checkpoint == "final" else checkpoint)
    model = load_weights_file(path, cfgs[0], run_dir / CONFIG_YAML)
    return model, cfgs, weights_step(run_dir, path), path


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """Raise a clear RunDirError unless ``run_dir`` has config.yaml and tokenizer/."""
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"run directory not found: {run}")
    missing = [name for name in (CONFIG_YAML, TOKENIZER_DIR) if not (run / name).exists()]
    if missing:
        raise RunDirError(f"{run} is not a complete run directory: missing {', '.join(missing)}")
    return run


def load_model(run_dir: str | os.PathLike, checkpoint: str | None = None) -> GPT:
    """The GPT model of a run, with its trained weights."""
    run = check_run_dir(run_dir)
    try:
        config = load_model_config(run / CONFIG_YAML)
    except ConfigError as e:
        raise RunDirError(str(e)) from None
    return load_weights_file(weights_path(run, checkpoint), config, run / CONFIG_YAML)


def load_weights_file(path: str | os.PathLike, config: GPTConfig, config_path: str | os.PathLike) -> GPT:
    """A GPT of ``config`` from a ``.keras`` file or a weights file; errors name the file."""
    path = Path(path)
    try:
        if path.name.endswith(".keras"):
            if path.is_file() and not zipfile.is_zipfile(path):  # keras would say "File not found"
                raise RunDirError(f"{path} is not a .keras archive (zip): the file is empty, truncated or corrupt")
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
            if not isinstance(model, GPT):
                raise RunDirError(f"{path} holds a {type(model).__name__}, not a tfgpt GPT model")
            if model.config != config:
                raise RunDirError(f"{path} does not match the model in {config_path}")
            return model
        if path.name == WEIGHTS_H5 and (path.parent / STATE_JSON).is_file():  # a checkpoint: check its digest
            check_checkpoint_files(path.parent, (WEIGHTS_H5,), read_checkpoint_state(path.parent))
        model = GPT(config)
        model.build((None, None))
        model.load_weights(path)
        return model
    except TfgptError:
        raise
    except Exception as e:  # noqa: BLE001 - keras/h5py raise many types; name the file instead
        if "safe_mode" in str(e):  # keras refused code in the file; its advice to turn the guard off is not ours
            raise RunDirError(f"{path} was refused: it holds Python code (a Lambda layer's function), which "
                              f"tfgpt never runs; .keras files are loaded with safe_mode=True only") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise RunDirError(f"could not load weights from {path}: {type(e).__name__}: {first}") from None


def load(run_dir: str | os.PathLike, checkpoint: str | None = None) -> tuple[GPT, Any]:
    """``(model, tokenizer)`` of a run directory.

    Example:
        >>> model, tokenizer = load("runs/shakespeare")  # doctest: +SKIP
        >>> tfgpt.generate(model, tokenizer, "ROMEO:")  # doctest: +SKIP
    """
    from tfgpt.tokenizers import load_tokenizer

    run = check_run_dir(run_dir)
    tokenizer = load_tokenizer(run / TOKENIZER_DIR)
    model = load_model(run, checkpoint)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise RunDirError(
            f"{run}: tokenizer has {tokenizer.vocab_size} tokens but the model only {model.config.vocab_size}"
        )
    return model, tokenizer


def save_keras_atomic(model: GPT, path: str | os.PathLike) -> Path:
    """``model.save`` to a temp file in the same directory, then rename over ``path``."""
    with replacing(path, suffix=".keras") as tmp:
        model.save(tmp)
    return Path(path)


def save_run(
    run_dir: str | os.PathLike, model: GPT, tokenizer: Any, sections: dict[str, Any] | None = None
) -> Path:
    """Write a complete run dir (config.yaml, tokenizer/, model.keras) for ``model``.

    Used by training at the end of a run, by importers, and by tests that need a run.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    config: GPTConfig = model.config
    save_model_config(run / CONFIG_YAML, config, **(sections or {}))
    tok_dir = run / TOKENIZER_DIR
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    tokenizer.save(tok_dir)
    if not model.built:
        model.build((None, None))
    save_keras_atomic(model, run / MODEL_KERAS)
    return run
