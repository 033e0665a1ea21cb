"""Training and data configuration: dataclasses, YAML loading, ``--set key=value`` overrides.

A training config file has three sections::

    model: {preset: char-small}          # or GPTConfig fields (a preset plus overrides works too)
    train: {max_steps: 2000, learning_rate: 1.0e-3, ...}   # TrainConfig fields
    data: {dir: data/shakespeare-char, tokenizer: char}    # DataConfig fields

Example:
    >>> model, train, data = resolve_config({"model": {"preset": "char-small"}}, overrides=["train.max_steps=10"])
    >>> train.max_steps, model.n_layer
    (10, 4)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from tfgpt.config import GPTConfig, check_value, did_you_mean, from_dict, parse_scalar, read_yaml
from tfgpt.errors import ConfigError, all_problems

Precision = Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"]
#: The decay shapes ``train.lr_schedule`` accepts (see :class:`tfgpt.train.optim.WarmupDecay`).
LR_SCHEDULES = ("cosine", "linear", "wsd")


@dataclasses.dataclass
class TrainConfig:
    """How to train.

    Attributes:
        max_steps: optimizer steps to train for (one step = ``grad_accum_steps`` micro-batches).
        batch_size: sequences per micro-batch, across all replicas (the global micro-batch).
        grad_accum_steps: micro-batches summed into one optimizer step.
        learning_rate, min_lr: peak and floor learning rate of the warmup + decay schedule.
        warmup_steps: linear warmup length; lr_decay_steps: where the decay reaches ``min_lr``
            (default ``max_steps``).
        lr_schedule: the decay shape after warmup: "cosine" (nanoGPT), "linear", or "wsd"
            (hold the peak, then linear to ``min_lr`` over the last ``lr_cooldown`` fraction).
        weight_decay, beta1, beta2, epsilon: AdamW; no decay on biases, norms and (unless
            ``decay_embeddings``) embeddings.
        decay_embeddings: decay the embedding tables too, as nanoGPT does (every 2-D tensor).
        grad_clip: global-norm clipping threshold (0 disables).
        precision: "float32", "mixed_bfloat16", "mixed_float16" (with loss scaling) or "auto"
            (mixed_float16 on GPU, float32 on CPU: XLA CPU measured slower in bf16).
        jit_compile: compile the train step with XLA (what makes the CPU step fast).
        steps_per_execution: optimizer steps per compiled call (reduced to divide the intervals).
        gradient_checkpointing: recompute block activations in the backward pass (saves memory).
        seed: seeds weights, dropout and the data order.
        log_interval, eval_interval, eval_iters, checkpoint_interval: in optimizer steps.
        eval_batch_size: batch size of evaluation (default ``batch_size``).
        keep_checkpoints: how many recent checkpoints to keep (the best is kept as well).
        sample_tokens: tokens of text generated at each eval for TensorBoard (0 disables).
        sample_prompt: prompt of those samples.
        memory_check: "warn" (default), "error" or "off" when the estimated memory exceeds RAM.
        peak_tflops: the peak TFLOP/s per replica that MFU is measured against; None (default)
            measures a matmul once per machine and dtype and caches it (see :mod:`tfgpt.train.perf`).
        divergence: "warn" (default), "stop" or "off" when a logged loss after the warmup exceeds
            ``divergence_factor`` times the best logged so far (a learning rate too high, bad data).
        divergence_factor: that factor (> 1).
    """

    max_steps: int = 2000
    batch_size: int = 12
    grad_accum_steps: int = 1
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    lr_decay_steps: int | None = None
    lr_schedule: Literal["cosine", "linear", "wsd"] = "cosine"
    lr_cooldown: float = 0.2
    weight_decay: float = 0.1
    decay_embeddings: bool = False
    beta1: float = 0.9
    beta2: float = 0.99
    epsilon: float = 1e-8
    grad_clip: float = 1.0
    precision: Precision = "float32"
    jit_compile: bool = True
    steps_per_execution: int = 1
    gradient_checkpointing: bool = False
    seed: int = 1337
    log_interval: int = 10
    eval_interval: int = 250
    eval_iters: int = 20
    eval_batch_size: int | None = None
    checkpoint_interval: int = 500
    keep_checkpoints: int = 3
    sample_tokens: int = 200
    sample_prompt: str = "\n"
    memory_check: Literal["warn", "error", "off"] = "warn"
    peak_tflops: float | None = None
    divergence: Literal["warn", "stop", "off"] = "warn"
    divergence_factor: float = 2.0

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum_steps", "steps_per_execution",
                     "log_interval", "eval_interval", "eval_iters", "checkpoint_interval",
                     "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip", "epsilon"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"train.{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.eval_batch_size is not None and self.eval_batch_size <= 0:
            raise ConfigError(f"train.eval_batch_size must be positive (or null), got {self.eval_batch_size}")
        if self.min_lr > self.learning_rate:
            raise ConfigError(f"train.min_lr ({self.min_lr}) exceeds train.learning_rate ({self.learning_rate})")
        if not 1 < self.divergence_factor < math.inf:
            raise ConfigError(f"train.divergence_factor must be a finite number > 1, got {self.divergence_factor}")
        if self.warmup_steps < 0 or self.sample_tokens < 0:
            raise ConfigError("train.warmup_steps and train.sample_tokens must be >= 0")
        if self.lr_decay_steps is not None and self.lr_decay_steps <= self.warmup_steps:
            raise ConfigError(
                f"train.lr_decay_steps ({self.lr_decay_steps}) must exceed train.warmup_steps ({self.warmup_steps})"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"train.lr_schedule must be cosine, linear or wsd, got {self.lr_schedule!r}")
        if not 0 < self.lr_cooldown <= 1:
            raise ConfigError(f"train.lr_cooldown must be in (0, 1], got {self.lr_cooldown}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("train.beta1 and train.beta2 must be in [0, 1)")

    @property
    def decay_steps(self) -> int:
        """Step at which the decay reaches ``min_lr``."""
        return self.lr_decay_steps if self.lr_decay_steps is not None else max(self.max_steps, self.warmup_steps + 1)

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step (``batch_size * grad_accum_steps``)."""
        return self.batch_size * self.grad_accum_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class DataConfig:
    """Where the tokens come from.

    Attributes:
        dir: a DATA_DIR built by ``tfgpt prepare`` (``--data`` overrides it); a relative path is
            resolved against the config file's directory if it exists there, else against the
            working directory. A run's ``config.yaml`` stores the absolute path.
        tokenizer: expected tokenizer type ("char", "bpe", "gpt2"); checked against the data dir.
        train_split, val_split: split names in the data dir.
        shuffle: random windows (True) or a sequential sweep.
    """

    dir: str | None = None
    tokenizer: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    shuffle: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = ("model", "train", "data")
#: Sections ``tfgpt finetune`` adds to a run's config.yaml (what the run is, not how to train it):
#: a run's own config is read with these allowed (``resolve_config(..., run_sections=True)``).
RUN_SECTIONS = ("classifier", "instruct", "prefer")


def _model_from_section(section: Any, where: str) -> GPTConfig:
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(section).__name__}")
    if "preset" in section:
        section = dict(section)
        name = section.pop("preset")
        try:
            return GPTConfig.preset(name, **section)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return from_dict(GPTConfig, section, where=where)


_SECTION_TYPES: dict[str, Any] = {"model": GPTConfig, "train": TrainConfig, "data": DataConfig}


def _field_hints(section: str) -> dict[str, Any]:
    hints = typing.get_type_hints(_SECTION_TYPES[section])
    # --set model.vocab_size=null: take it from the data dir, as a config that leaves it out does
    return {**hints, "preset": str, "vocab_size": int | None} if section == "model" else hints


def _split_override(item: str) -> tuple[str, str, str]:
    """``"lr=1"``/``"train.lr=1"`` → ``(section, key, raw value)``, checking the key exists."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.max_steps=100")
    key, raw = item.split("=", 1)
    path = key.strip().split(".")
    if len(path) == 1:
        owners = [s for s in SECTIONS if path[0] in _field_hints(s)]
        if len(owners) != 1:
            every = [k for s in SECTIONS for k in _field_hints(s)]
            hint = "" if owners else did_you_mean(path[0], every)
            raise ConfigError(
                f"--set {item!r}: {'ambiguous' if owners else 'unknown'} key {path[0]!r}{hint}; "
                f"write it as section.key with section in {', '.join(SECTIONS)}"
            )
        path = [owners[0], path[0]]
    if len(path) != 2 or path[0] not in SECTIONS:
        hint = did_you_mean(path[0], SECTIONS) if len(path) == 2 else ""
        raise ConfigError(f"--set {item!r}: key must be section.key with section in {', '.join(SECTIONS)}{hint}")
    section, key = path
    if key not in _field_hints(section):
        valid = sorted(_field_hints(section))
        raise ConfigError(
            f"--set {item!r}: unknown key {key!r} in {section}{did_you_mean(key, valid)}; "
            f"valid keys: {', '.join(valid)}"
        )
    return section, key, raw


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.max_steps=10"`` → ``(["train", "max_steps"], 10)``; ``"max_steps=10"`` names its section.

    The value is the raw text for a text field, else a YAML scalar read as config files are
    (:func:`tfgpt.config.parse_scalar`); unknown keys are refused, naming the valid ones.
    """
    section, key, raw = _split_override(item)
    annotation = _field_hints(section)[key]
    try:
        return [section, key], check_value(key, parse_scalar(raw, annotation), annotation)
    except ConfigError as e:
        raise ConfigError(f"--set {item!r}: {e}") from None


def apply_overrides(data: dict[str, Any], overrides: Sequence[str],
                    problems: list[str] | None = None) -> dict[str, Any]:
    """Apply ``section.key=value`` (or a bare ``key=value`` naming a unique field) to a config dict.

    With a ``problems`` list, a bad override is noted there and skipped instead of raised.
    """
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        try:
            (section, key), value = parse_override(item)
        except ConfigError as e:
            if problems is None:
                raise
            problems.append(str(e))
            continue
        current = data.get(section) or {}
        if not isinstance(current, dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        current = dict(current)
        if section == "model" and key == "preset":
            current = {"preset": value}
        else:
            current[key] = value
        data[section] = current
    return data


def blame_overrides(problems: list[str], overrides: Sequence[str], where: str = "") -> list[str]:
    """``problems`` with each one about a value a ``--set`` gave pointed at that ``--set``, not at the file
    ``where`` (the prefix of the file's problems, which is not searched: a file may be named train.yaml).

    Example:
        >>> blame_overrides(["a.yaml: train: train.max_steps must be positive, got -5"], ["train.max_steps=-5"],
        ...                 "a.yaml")
        ["--set 'train.max_steps=-5': train.max_steps must be positive, got -5"]
    """
    given: dict[str, str] = {}
    for item in overrides:
        try:
            (section, key), _ = parse_override(item)
        except ConfigError:
            continue
        given[f"{section}.{key}"] = item
    out = []
    for problem in problems:
        body = problem[len(where) + 2:] if where and problem.startswith(f"{where}: ") else problem
        keys = list(re.finditer(r"(?<![\w.])(?:model|train|data)\.\w+", body))
        sets = list(dict.fromkeys(given[m.group()] for m in keys if m.group() in given))
        if sets and not problem.startswith("--set"):
            problem = " ".join(f"--set {s!r}" for s in sets) + f": {body[keys[0].start():]}"
        out.append(problem)
    return out


def _collect(problems: list[str], build: Any, *args: Any, **kwargs: Any) -> Any:
    """``build(*args, **kwargs)``, or None with its ConfigError's problems added to ``problems``."""
    try:
        return build(*args, **kwargs)
    except ConfigError as e:
        problems.extend(e.problems)
        return None


def load_config_dict(config: str | os.PathLike | dict[str, Any]) -> tuple[dict[str, Any], str, Path | None]:
    """The raw config mapping, a name for messages, and the file's directory (None for a dict)."""
    if isinstance(config, dict):
        return dict(config), "config", None
    path = Path(config)
    return read_yaml(path), str(path), path.resolve().parent


def resolve_config(
    config: str | os.PathLike | dict[str, Any], overrides: Sequence[str] = (), vocab_size: int | None = None,
    run_sections: bool = False,
) -> tuple[GPTConfig, TrainConfig, DataConfig]:
    """Load a training config (file or dict), apply overrides, validate strictly.

    ``vocab_size`` (the data dir's, see :mod:`tfgpt.train.preflight`) is used when the model
    section names none itself, a preset's included. ``run_sections`` allows (and skips) the
    :data:`RUN_SECTIONS` a fine-tuned run's config.yaml carries.

    Example:
        >>> m, t, d = resolve_config({"model": {"preset": "char-small"}, "train": {"batch_size": 8}})
        >>> t.global_batch
        8
    """
    data, where, base = load_config_dict(config)
    if run_sections:
        data = {k: v for k, v in data.items() if k not in RUN_SECTIONS}
    problems: list[str] = []
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        named = ", ".join(f"{s!r}{did_you_mean(s, SECTIONS)}" for s in unknown)
        problems.append(f"{where}: unknown section{'s' if len(unknown) > 1 else ''} {named}; "
                        f"valid sections: {', '.join(SECTIONS)}")
    data = apply_overrides(data, overrides, problems)
    section = data.get("model")
    if isinstance(section, dict) and "vocab_size" in section and section["vocab_size"] is None:
        section = {k: v for k, v in section.items() if k != "vocab_size"}  # null: the data dir's
    if vocab_size is not None and (section is None or (isinstance(section, dict) and "vocab_size" not in section)):
        section = {**(section or {}), "vocab_size": vocab_size}
    model = _collect(problems, _model_from_section, section, f"{where}: model")
    train = _collect(problems, from_dict, TrainConfig, data.get("train"), where=f"{where}: train")
    dcfg = _collect(problems, from_dict, DataConfig, data.get("data"), where=f"{where}: data")
    all_problems(blame_overrides(problems, overrides, where))  # every unknown section, bad override and section at once
    if dcfg.dir is not None and base is not None and not Path(dcfg.dir).is_absolute():
        candidate = base / dcfg.dir  # the config file's directory first, then the working directory
        if candidate.exists():
            dcfg = dataclasses.replace(dcfg, dir=str(candidate))
    return model, train, dcfg
