"""What ``tfgpt train`` checks before TensorFlow is imported: the config, the data dir and the
run dir, every problem reported at once.

TensorFlow's import takes seconds; a typo in a config, a data dir made with another tokenizer and
a vocabulary that does not fit should all show up in the first second, in one message, not one per
run. Only the standard library, YAML and JSON are used here (no TensorFlow, no Keras).

Example:
    >>> preflight({"model": {"preset": "char-small"}}, data_dir="nowhere", run_dir="runs/x")
    Traceback (most recent call last):
    tfgpt.errors.ConfigError: data directory nowhere does not exist (create it with `tfgpt prepare`)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tfgpt.config import load_model_config
from tfgpt.data.manifest import check_data_dir, load_manifest
from tfgpt.errors import ConfigError, TfgptError, all_problems
from tfgpt.layout import CHECKPOINTS, CONFIG_YAML, pointer_path, read_pointer
from tfgpt.train.config import DataConfig, resolve_config


def data_vocab_size(data_dir: str | os.PathLike | None) -> int | None:
    """The data dir's tokenizer vocabulary size from its manifest, or None if it cannot be read."""
    if data_dir is None:
        return None
    try:
        return int(load_manifest(data_dir)["tokenizer"]["vocab_size"])
    except (TfgptError, KeyError, TypeError, ValueError):
        return None


def resolve_with_data(config: Any, overrides: Any, data_dir: str | os.PathLike | None) -> tuple[Any, Any, Any]:
    """:func:`resolve_config`, with ``model.vocab_size`` from the data dir when the config names none.

    The data dir is ``data_dir`` (``--data``) or the config's ``data.dir``.
    """
    model, tcfg, dcfg = resolve_config(config, overrides)
    where = data_dir if data_dir is not None else dcfg.dir
    vocab = data_vocab_size(where)
    return resolve_config(config, overrides, vocab_size=vocab) if vocab is not None else (model, tcfg, dcfg)


def _data_problems(dcfg: DataConfig, data_dir: Any, vocab_size: int | None) -> list[str]:
    where = data_dir if data_dir is not None else dcfg.dir
    if where is None:
        return ["no data dir: pass --data DATA_DIR or set data.dir in the config"]
    problems = []
    try:
        manifest = check_data_dir(where, dcfg.tokenizer)
    except TfgptError as e:  # a data dir that is not one stops here; a wrong tokenizer kind does not
        problems.append(str(e))
        try:
            manifest = load_manifest(where)
        except TfgptError:
            return problems
    have = manifest["tokenizer"]["vocab_size"]
    if vocab_size is not None and have > vocab_size:
        problems.append(f"the data's tokenizer has {have} tokens but model.vocab_size is {vocab_size}; "
                        f"set model.vocab_size >= {have} (or leave it out to take the data's)")
    return problems


def run_dir_problems(run_dir: Path, resume: bool) -> list[str]:
    """What is wrong with ``run_dir`` for a new run (it holds one) or a ``--resume`` (no run, no checkpoint)."""
    ckpt_dir = run_dir / CHECKPOINTS
    if not resume:
        if pointer_path(ckpt_dir, "latest").exists():
            return [f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir"]
        return []
    if not (run_dir / CONFIG_YAML).is_file():
        return [f"--resume: {run_dir} is not a run dir (no {CONFIG_YAML})"]
    try:
        load_model_config(run_dir / CONFIG_YAML)  # the run's own shape: an empty or damaged file is named
        if read_pointer(ckpt_dir, "latest") is None:
            return [f"--resume: {pointer_path(ckpt_dir, 'latest')} not found (no checkpoint yet)"]
    except TfgptError as e:
        return [str(e)]
    return []


def preflight(config: Any, data_dir: Any = None, run_dir: Any = None, overrides: Any = (),
              resume: bool = False) -> None:
    """Raise one :class:`ConfigError` listing every problem with a ``train`` call's inputs, or return."""
    problems: list[str] = []
    if config is None and not (resume and run_dir is not None):
        problems.append("a config is required (or --resume with --run-dir to reuse the run's config)")
    elif config is None and (Path(run_dir) / CONFIG_YAML).is_file():
        config = Path(run_dir) / CONFIG_YAML  # else the run-dir check below says it is not a run dir
    resolved = None
    if config is not None:
        try:
            resolved = resolve_with_data(config, overrides, data_dir)
        except ConfigError as e:
            problems += e.problems
        except TfgptError as e:
            problems.append(str(e))
    if resolved is not None:
        problems += _data_problems(resolved[2], data_dir, resolved[0].vocab_size)
    elif data_dir is not None:  # the config is broken: still check the --data dir on its own
        problems += _data_problems(DataConfig(), data_dir, None)
    if run_dir is not None:
        problems += run_dir_problems(Path(run_dir), resume)
    all_problems(problems)
