"""The training driver: ``train(...)`` — what ``tfgpt train`` and notebooks call.

``train`` reads top to bottom as its steps: plan the run (configs, run dir checks), place it
(strategy, precision, memory), open the data, build or restore the model, write the run dir,
set up the monitor, run, and summarise. Each step is a function below; the records that carry
state between them are the dataclasses :class:`RunPlan`, :class:`Placement`, :class:`RunData`
and :class:`Built`.

Example:
    >>> summary = train("configs/char-small.yaml", data_dir="data/shakespeare-char",
    ...                 run_dir="runs/char-small", overrides=["train.max_steps=200"])  # doctest: +SKIP
    >>> summary["val_loss"]  # doctest: +SKIP
    2.31

Paths: ``default`` and ``mirrored`` train through ``model.fit`` on a :class:`GPTTrainer`;
``multiworker`` runs the same ``train_step`` in a ``strategy.run`` loop (Keras 3's ``fit`` fails
under ``MultiWorkerMirroredStrategy``, keras-team/keras#20585). All three share the optimizer,
schedule, :class:`TrainMonitor` callback, checkpoints and run-dir layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfgpt.atomic import staged_dir, write_text_atomic
from tfgpt.config import GPTConfig, from_dict, read_yaml, save_model_config
from tfgpt.data.manifest import check_tokenizer
from tfgpt.data.pipeline import named_shard_errors
from tfgpt.errors import ConfigError, DataError, RunDirError
from tfgpt.model.gpt import GPT
from tfgpt.runs import (
    CHECKPOINTS,
    CONFIG_YAML,
    METRICS_JSONL,
    MODEL_KERAS,
    TOKENIZER_DIR,
    save_keras_atomic,
)
from tfgpt.train.callbacks import NonFiniteLossError, StepRates, TrainMonitor, rewrite_metrics, weights_digest
from tfgpt.train.checkpoint import Checkpoints
from tfgpt.train.config import DataConfig, TrainConfig
from tfgpt.train.data import Source, check_data_dir, data_dir_source
from tfgpt.train.evaluate import LossEstimator
from tfgpt.train.optim import make_optimizer, optimizer_change, schedule_change
from tfgpt.train.perf import available_memory_bytes, estimate_memory, flops_per_token, peak_flops
from tfgpt.train.preflight import resolve_with_data, run_dir_problems
from tfgpt.train.step import GPTTrainer
from tfgpt.train.strategy import get_strategy, is_chief, is_multi_worker, on_cpu_only

__all__ = ["MemoryWarning", "NonFiniteLossError", "resolve_precision", "train", "write_summary"]


class MemoryWarning(UserWarning):
    """The estimated memory of a config exceeds what this machine has available."""


def resolve_precision(precision: str) -> str:
    """``auto`` → mixed_float16 on GPU, float32 on CPU; any other value is returned as given.

    Not mixed_bfloat16 on CPU: the XLA CPU train step is slower in bf16 than in float32 (figures
    in docs/design/training.md). Ask for it explicitly to try it.

    Example:
        >>> resolve_precision("mixed_bfloat16")
        'mixed_bfloat16'
    """
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "float32"


def _aligned_steps_per_execution(cfg: TrainConfig, start: int, total: int) -> int:
    spe = cfg.steps_per_execution
    for n in (cfg.log_interval, cfg.eval_interval, cfg.checkpoint_interval, total - start, start or spe):
        spe = math.gcd(spe, n)
    return max(spe, 1)


def _check_resume_shape(run_dir: Path, model_cfg: GPTConfig) -> None:
    saved = read_yaml(run_dir / CONFIG_YAML).get("model") or {}
    new = model_cfg.to_dict()
    diff = [f"{k}: {saved.get(k)!r} -> {new[k]!r}" for k in new if k != "dropout" and saved.get(k) != new[k]]
    if diff:
        raise ConfigError(
            f"--resume of {run_dir}: the model shape changed ({'; '.join(diff)}); "
            "resume with the run's own model settings or start a new run dir"
        )


def _memory_check(model_cfg: GPTConfig, tcfg: TrainConfig, replicas: int, mixed: bool) -> dict[str, int]:
    est = estimate_memory(model_cfg, tcfg, replicas=replicas, mixed=mixed)
    if tcfg.memory_check == "off":
        return est
    avail = available_memory_bytes()
    if est["total_bytes"] > 0.9 * avail:
        msg = (
            f"this config needs about {est['total_bytes'] / 2**30:.1f} GiB per replica "
            f"({est['params'] / 1e6:.1f}M params, micro-batch {tcfg.batch_size}, block {model_cfg.block_size}) "
            f"but {avail / 2**30:.1f} GiB is available; lower train.batch_size (raise grad_accum_steps), "
            "enable train.gradient_checkpointing or use mixed precision"
        )
        if tcfg.memory_check == "error":
            raise ConfigError(msg)
        warnings.warn(msg, MemoryWarning, stacklevel=4)  # the caller of train()
    return est


def _load_tokenizer(path: Path) -> Any:
    try:
        from tfgpt.tokenizers import load_tokenizer
    except ImportError:  # pragma: no cover
        return None
    return load_tokenizer(path)


def _apply_remat(gpt: GPT) -> None:
    """Recompute each Transformer block in the backward pass (gradient checkpointing).

    ``keras.remat`` (``tf.custom_gradient`` on TensorFlow) accepts keyword arguments only in eager
    mode, so the rematerialised function takes the activations alone; cached decoding (no
    gradients) calls the block as before.
    """
    for block in gpt.blocks:
        plain_call = block.call

        def remat_call(x: Any, cache: Any = None, cache_index: Any = None, cache_update: str = "slice",
                       training: bool | None = None, _call: Any = plain_call) -> Any:
            if cache is not None:
                return _call(x, cache=cache, cache_index=cache_index, cache_update=cache_update, training=training)
            return keras.remat(lambda h: _call(h, training=training))(x)

        block.call = remat_call


# -- the records passed between the steps ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What to train and where: the resolved configs and the checked run dir."""

    model: GPTConfig
    train: TrainConfig
    data: DataConfig
    run_dir: Path
    resume: bool


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where it runs: the strategy, its replicas, precision and whether XLA compiles the step."""

    name: str
    strategy: tf.distribute.Strategy
    replicas: int
    precision: str
    chief: bool
    multi_worker: bool
    jit: bool


@dataclasses.dataclass(frozen=True)
class RunData:
    """The token source, its tokenizer (or None) and the data dir's tokenizer/ to copy (or None)."""

    source: Source
    tokenizer: Any
    tokenizer_dir: Path | None


@dataclasses.dataclass(frozen=True)
class Built:
    """The compiled trainer, its GPT and optimizer, their checkpoints and the step training starts at."""

    gpt: GPT
    trainer: GPTTrainer
    optimizer: keras.optimizers.Optimizer
    checkpoints: Checkpoints
    start_step: int
    steps_per_execution: int


def train(
    config: str | os.PathLike | dict[str, Any] | None,
    data_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    strategy: str = "default",
    progress: bool = True,
    *,
    source: Source | None = None,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Train a GPT as a config describes; write the run dir; return a JSON-able summary.

    Args:
        config: a YAML path or a dict with ``model:``/``train:``/``data:``; None with ``resume``
            reuses ``RUN/config.yaml``.
        data_dir: overrides ``data.dir``.
        run_dir: where to write (default ``runs/<config name>``).
        overrides: ``section.key=value`` strings (``--set``).
        resume: continue from the latest checkpoint exactly (optimizer, step, schedule, data
            position, dropout RNG); the model shape must be unchanged.
        strategy: "default", "mirrored" or "multiworker" (TF_CONFIG).
        progress: show a progress bar.
        source, tokenizer: train on in-memory tokens (see :mod:`tfgpt.train.data`), not a data dir.

    Returns ``run_dir``, ``step``, ``start_step``, the last ``loss``/``train_loss``/``val_loss``,
    ``best_val_loss``, ``tokens_per_sec``, ``mfu``, how it ran (``strategy``, ``path``, ``replicas``,
    ``jit_compile``, ``precision``, ``steps_per_execution``), ``weights_sha256`` and ``wall_s``.
    Raises :class:`NonFiniteLossError` on a NaN/Inf loss.

    Example:
        >>> import numpy as np
        >>> from tfgpt.train.data import array_source
        >>> src = array_source({"train": np.arange(5000) % 65, "val": np.arange(900) % 65})
        >>> s = train({"model": {"preset": "char-small", "n_layer": 1}, "train": {"max_steps": 4,
        ...            "eval_interval": 4, "eval_iters": 1, "batch_size": 2, "warmup_steps": 1,
        ...            "sample_tokens": 0}}, run_dir="doc-run", source=src, progress=False)
        >>> s["step"], s["path"], sorted(p.name for p in Path("doc-run").iterdir())
        (4, 'fit', ['checkpoints', 'config.yaml', 'logs', 'metrics.jsonl', 'model.keras'])
    """
    t_start = time.time()
    plan = _plan_run(config, data_dir, run_dir, overrides, resume, in_memory=source is not None)
    place = _place(plan, strategy)
    data = _open_data(plan, source, tokenizer)
    built = _build(plan, place)
    if place.chief:
        _announce_resume(plan, built)
        _write_run_dir(plan, data, built.start_step)
    if built.start_step >= plan.train.max_steps:  # killed after its last checkpoint, before model.keras
        return _save_trained(plan, place, built, time.time() - t_start)
    with named_shard_errors(None if source is not None else plan.data.dir):
        monitor = _make_monitor(plan, place, data, built, progress)  # its first eval reads the shards
        with stop_on_signals(monitor):
            path = _run(plan, place, data, built, monitor)
    metrics = monitor.finish()  # raises NonFiniteLossError before model.keras is written
    if place.chief:
        save_keras_atomic(built.gpt, plan.run_dir / MODEL_KERAS)
    return _summary(plan, place, built, path, metrics, time.time() - t_start)


# -- 1. plan: configs and the run dir --------------------------------------------------------------


def _plan_run(
    config: str | os.PathLike | dict[str, Any] | None, data_dir: str | os.PathLike | None,
    run_dir: str | os.PathLike | None, overrides: Sequence[str], resume: bool, in_memory: bool,
) -> RunPlan:
    """Resolve the configs (``--resume`` without one reuses the run's), the run dir, and check both."""
    if config is None:
        if not (resume and run_dir is not None):
            raise ConfigError("a config is required (or --resume with --run-dir to reuse the run's config)")
        config = Path(run_dir) / CONFIG_YAML
    model_cfg, tcfg, dcfg = resolve_with_data(config, overrides, None if in_memory else data_dir)
    if data_dir is not None:
        dcfg = dataclasses.replace(dcfg, dir=str(data_dir))
    if not in_memory and dcfg.dir is not None:  # the run's config.yaml names the data wherever eval/resume run
        dcfg = dataclasses.replace(dcfg, dir=os.path.abspath(dcfg.dir))
    if run_dir is None:
        run_dir = Path("runs") / (Path(config).stem if not isinstance(config, dict) else "run")
    if model_cfg.dropout > 0 and tcfg.gradient_checkpointing:
        raise ConfigError("train.gradient_checkpointing needs model.dropout == 0 "
                          "(recomputed dropout masks would differ from the forward pass)")
    plan = RunPlan(model_cfg, tcfg, dcfg, Path(run_dir), resume)
    _check_run_dir(plan)
    return plan


def _check_run_dir(plan: RunPlan) -> None:
    """A resumed run dir must hold a run of the same shape and a checkpoint; a new one must not hold a run."""
    problems = run_dir_problems(plan.run_dir, plan.resume)
    if problems:
        raise RunDirError(problems[0])
    if plan.resume:
        _check_resume_shape(plan.run_dir, plan.model)


# -- 2. place: strategy, precision, memory ---------------------------------------------------------


def _place(plan: RunPlan, strategy: str) -> Placement:
    """The strategy and precision, checked against the batch size and this machine's memory."""
    tcfg = plan.train
    precision = resolve_precision(tcfg.precision)
    strat = get_strategy(strategy)
    replicas = strat.num_replicas_in_sync
    if tcfg.batch_size % replicas:
        raise ConfigError(f"train.batch_size ({tcfg.batch_size}) must divide by the {replicas} replicas")
    _memory_check(plan.model, tcfg, replicas, precision != "float32")
    multi = is_multi_worker(strat)
    # XLA cannot reach variables on other logical CPU devices, nor run under the multi-worker loop
    mirrored_cpu = isinstance(strat, tf.distribute.MirroredStrategy) and replicas > 1 and on_cpu_only(strat)
    jit = tcfg.jit_compile and not multi and not mirrored_cpu
    return Placement(strategy, strat, replicas, precision, is_chief(strat), multi, jit)


# -- 3. data and tokenizer -------------------------------------------------------------------------


def _open_data(plan: RunPlan, source: Source | None, tokenizer: Any) -> RunData:
    """The token source: the given one, or the data dir's (checked, with its tokenizer)."""
    dcfg, tok_dir = plan.data, None
    if source is None:
        if dcfg.dir is None:
            raise DataError("no data dir: pass --data DATA_DIR or set data.dir in the config")
        manifest = check_data_dir(dcfg.dir, dcfg.tokenizer)
        source = data_dir_source(dcfg.dir, shuffle=dcfg.shuffle)
        tok_dir = Path(dcfg.dir) / TOKENIZER_DIR
        tokenizer = _load_tokenizer(tok_dir)
        check_tokenizer(manifest, tokenizer, dcfg.dir)
    if tokenizer is not None:
        _check_tokenizer_fits(plan, tokenizer)
    return RunData(source, tokenizer, tok_dir)


def _check_tokenizer_fits(plan: RunPlan, tokenizer: Any) -> None:
    vocab = plan.model.vocab_size
    if tokenizer.vocab_size > vocab:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is {vocab}; "
            f"set model.vocab_size >= {tokenizer.vocab_size}"
        )
    run_tok = plan.run_dir / TOKENIZER_DIR
    if plan.resume and run_tok.is_dir():
        old = _load_tokenizer(run_tok)
        if old is not None and old.fingerprint() != tokenizer.fingerprint():
            raise DataError(f"--resume: the data dir's tokenizer differs from {run_tok}")


# -- 4. model: build, restore, compile -------------------------------------------------------------


def _build(plan: RunPlan, place: Placement) -> Built:
    """The GPT, its trainer and optimizer under the strategy; restored from the latest checkpoint on resume."""
    model_cfg, tcfg = plan.model, plan.train
    block = model_cfg.block_size
    keras.utils.set_random_seed(tcfg.seed)
    with place.strategy.scope():
        gpt = GPT(model_cfg, dtype=place.precision, name="gpt")
        gpt.build((None, block))
        if tcfg.gradient_checkpointing:
            _apply_remat(gpt)
        trainer = GPTTrainer(gpt, grad_accum_steps=tcfg.grad_accum_steps, grad_clip=tcfg.grad_clip)
        trainer.build((None, block))
        optimizer = make_optimizer(tcfg, gpt, loss_scale=place.precision == "mixed_float16")
        optimizer.build(gpt.trainable_variables)
        checkpoints = Checkpoints(plan.run_dir / CHECKPOINTS, gpt, optimizer, tcfg.keep_checkpoints,
                                  chief=place.chief, info={"model": model_cfg.to_dict(), "strategy": place.name})
        start_step = checkpoints.restore().step if plan.resume else 0
        if start_step >= tcfg.max_steps and not _trained_but_unsaved(plan, start_step):
            raise ConfigError(f"--resume: the run is at step {start_step}, train.max_steps is {tcfg.max_steps}; "
                              "raise it")
        spe = 1 if place.multi_worker else _aligned_steps_per_execution(tcfg, start_step, tcfg.max_steps)
        trainer.compile(optimizer=optimizer, jit_compile=place.jit, steps_per_execution=spe)
    return Built(gpt, trainer, optimizer, checkpoints, start_step, spe)


def _trained_but_unsaved(plan: RunPlan, start_step: int) -> bool:
    """A resumed run whose last checkpoint is its last step but that has no model.keras: a kill (or crash)
    came between the two. --resume then writes model.keras from that checkpoint instead of refusing."""
    return plan.resume and start_step == plan.train.max_steps and not (plan.run_dir / MODEL_KERAS).exists()


def _save_trained(plan: RunPlan, place: Placement, built: Built, wall_s: float) -> dict[str, Any]:
    """Write model.keras from the restored last checkpoint; the summary's losses are the run's last logged."""
    print(f"{plan.run_dir} is at step {built.start_step} of {plan.train.max_steps}: nothing left to train; "
          f"writing {MODEL_KERAS} from its last checkpoint", file=sys.stderr)
    if place.chief:
        save_keras_atomic(built.gpt, plan.run_dir / MODEL_KERAS)
    last: dict[str, dict[str, Any]] = {}
    path = plan.run_dir / METRICS_JSONL
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        with contextlib.suppress(json.JSONDecodeError):
            rec = json.loads(line)
            last[rec.get("kind", "")] = rec
    train_rec, eval_rec = last.get("train", {}), last.get("eval", {})
    metrics = {"loss": train_rec.get("loss"), "train_loss": eval_rec.get("train_loss"),
               "val_loss": eval_rec.get("val_loss"), "best_val_loss": built.checkpoints.best_val,
               "tokens_per_sec": None, "mfu": train_rec.get("mfu"), "peak_flops": None, "peak_source": None}
    return _summary(plan, place, built, "custom_loop" if place.multi_worker else "fit", metrics, wall_s)


# -- 5. run dir and monitor ------------------------------------------------------------------------


@contextlib.contextmanager
def stop_on_signals(monitor: TrainMonitor) -> Iterator[None]:
    """SIGINT/SIGTERM ask ``monitor`` to checkpoint after the step in flight and stop; a second
    SIGINT aborts at once (KeyboardInterrupt). Only the main thread can take signals: elsewhere
    this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if monitor.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        print(f"\n{name}: stopping after this step and writing a checkpoint (Ctrl-C again aborts)",
              file=sys.stderr, flush=True)
        monitor.request_stop(name, exit_code=128 + signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _announce_resume(plan: RunPlan, built: Built) -> None:
    """On --resume, say where the run resumes from and how a changed schedule differs (stderr)."""
    if not plan.resume:
        return
    latest = built.checkpoints.latest() or {}
    print(f"resuming {plan.run_dir} from step {built.start_step} "
          f"(checkpoint {plan.run_dir / CHECKPOINTS / str(latest.get('dir', '?'))})", file=sys.stderr)
    saved = read_yaml(plan.run_dir / CONFIG_YAML).get("train") or {}
    try:
        old = from_dict(TrainConfig, saved, where=str(plan.run_dir / CONFIG_YAML))
    except ConfigError:
        return  # a config from another tfgpt version: nothing to compare against
    change = schedule_change(old, plan.train, built.start_step)
    if change:
        print(f"note: {change}; the new schedule applies from here", file=sys.stderr)
    change = optimizer_change(old, plan.train)
    if change:
        print(f"note: {change}; the new settings apply from here", file=sys.stderr)


def _write_run_dir(plan: RunPlan, data: RunData, start_step: int) -> None:
    """config.yaml, tokenizer/ (staged, then renamed: a kill leaves it whole or absent) and metrics.jsonl cut
    back to ``start_step``, after removing what killed starts left half-written (chief only)."""
    run_dir = plan.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    save_model_config(run_dir / CONFIG_YAML, plan.model, train=plan.train.to_dict(), data=plan.data.to_dict())
    _remove_stale_temps(run_dir)
    if data.tokenizer_dir is not None or data.tokenizer is not None:
        with staged_dir(run_dir / TOKENIZER_DIR) as stage:  # whole or absent, never half a copy
            if data.tokenizer_dir is not None:
                shutil.copytree(data.tokenizer_dir, stage, dirs_exist_ok=True)
            else:
                data.tokenizer.save(stage)
    rewrite_metrics(run_dir / METRICS_JSONL, start_step)


def _remove_stale_temps(run_dir: Path) -> None:
    """What starts killed mid-write left in the run dir: the temp files of atomic writes (``.NAME.<hex>.tmp*``,
    see :mod:`tfgpt.atomic`) of config.yaml, metrics.jsonl and model.keras, and tokenizer stages."""
    for name in (CONFIG_YAML, METRICS_JSONL, MODEL_KERAS):
        for stale in run_dir.glob(f".{name}.*.tmp*"):
            stale.unlink(missing_ok=True)
    for stale in run_dir.glob(f".{TOKENIZER_DIR}.*"):
        shutil.rmtree(stale, ignore_errors=True)


def _make_monitor(plan: RunPlan, place: Placement, data: RunData, built: Built, progress: bool) -> TrainMonitor:
    """The callback that logs, evaluates, samples and checkpoints (see :mod:`tfgpt.train.callbacks`)."""
    model_cfg, tcfg, dcfg = plan.model, plan.train, plan.data
    block = model_cfg.block_size
    tokens_per_step = tcfg.global_batch * block
    peak, source = peak_flops("bfloat16" if place.precision == "mixed_bfloat16" else "float32", tcfg.peak_tflops)
    rates = StepRates(tokens_per_step, flops_per_token(model_cfg, block) * tokens_per_step, peak * place.replicas,
                      source)
    if progress and place.chief:
        print(f"MFU against a peak of {peak / 1e12:.2f} TFLOP/s per replica ({source})", file=sys.stderr)
    estimator = LossEstimator(
        built.gpt, data.source, {"train": dcfg.train_split, "val": dcfg.val_split}, tcfg.eval_iters,
        tcfg.eval_batch_size or tcfg.batch_size, block, tcfg.seed, jit_compile=place.jit,
    )
    return TrainMonitor(plan.run_dir, tcfg, built.gpt, tcfg.max_steps, rates, built.checkpoints,
                        estimator=estimator, tokenizer=data.tokenizer, chief=place.chief, progress=progress)


# -- 6. run ----------------------------------------------------------------------------------------


def _run(plan: RunPlan, place: Placement, data: RunData, built: Built, monitor: TrainMonitor) -> str:
    """Train from ``start_step`` to ``max_steps``; returns the path taken ("fit" or "custom_loop")."""
    tcfg, dcfg, block = plan.train, plan.data, plan.model.block_size
    start, total = built.start_step, tcfg.max_steps
    if place.multi_worker:
        _custom_loop(built.trainer, place.strategy, data.source, dcfg.train_split, tcfg, block, start, monitor)
        return "custom_loop"
    ds = data.source(dcfg.train_split, tcfg.global_batch, block, tcfg.seed, start_step=start)
    built.trainer.fit(ds, epochs=1, steps_per_epoch=total - start, callbacks=[monitor], verbose=0,
                      shuffle=False)  # the dataset shuffles itself; Keras would warn it ignores shuffle=True
    return "fit"


def _custom_loop(
    trainer: GPTTrainer, strat: tf.distribute.Strategy, source: Source, split: str, tcfg: TrainConfig,
    block: int, start_step: int, monitor: TrainMonitor,
) -> None:
    """Multi-worker path: ``strategy.run(trainer.train_step)`` in a ``tf.function``, data sharded by worker."""

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        return source(split, tcfg.global_batch, block, tcfg.seed, start_step=start_step,
                      num_shards=ctx.num_input_pipelines, shard_index=ctx.input_pipeline_id)

    iterator = iter(strat.distribute_datasets_from_function(dataset_fn))

    @tf.function
    def step_fn(it: Any) -> dict[str, Any]:
        out = strat.run(trainer.train_step, args=(next(it),))
        return {k: strat.experimental_local_results(v)[0] for k, v in out.items()}

    monitor.set_model(trainer)
    trainer.stop_training = False
    monitor.on_train_begin()
    for i in range(start_step, tcfg.max_steps):
        logs = {k: float(v) for k, v in step_fn(iterator).items()}
        monitor.on_train_batch_end(i - start_step, logs)
        if trainer.stop_training:
            break
    monitor.on_train_end()


# -- 7. summary ------------------------------------------------------------------------------------


def _summary(plan: RunPlan, place: Placement, built: Built, path: str, metrics: dict[str, Any],
             wall_s: float) -> dict[str, Any]:
    """The JSON-able summary :func:`train` returns (``metrics`` from :meth:`TrainMonitor.finish`)."""
    return {
        "run_dir": str(plan.run_dir), "step": int(keras.ops.convert_to_numpy(built.optimizer.iterations)),
        "start_step": built.start_step, **metrics, "strategy": place.name, "path": path,
        "replicas": place.replicas, "jit_compile": place.jit, "precision": place.precision,
        "steps_per_execution": built.steps_per_execution, "weights_sha256": weights_digest(built.gpt),
        "wall_s": wall_s,
    }


def write_summary(path: str | os.PathLike, summary: dict[str, Any]) -> None:
    """Write a train() summary as JSON, atomically.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "summary.json"
        >>> write_summary(out, {"step": 4})
        >>> json.loads(out.read_text())
        {'step': 4}
    """
    write_text_atomic(path, json.dumps(summary, indent=1) + "\n")
