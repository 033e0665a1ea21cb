"""The training driver: ``train(...)`` — what ``tfgpt train`` and notebooks call.

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

import dataclasses
import math
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfgpt.atomic import write_text_atomic
from tfgpt.config import GPTConfig, read_yaml, save_model_config
from tfgpt.errors import ConfigError, DataError, RunDirError, TfgptError
from tfgpt.model.gpt import GPT
from tfgpt.runs import save_keras_atomic
from tfgpt.train.callbacks import TrainMonitor, rewrite_metrics, weights_digest
from tfgpt.train.checkpoint import read_pointer, restore_checkpoint
from tfgpt.train.config import DataConfig, TrainConfig, resolve_config
from tfgpt.train.data import Source, check_data_dir, data_dir_source
from tfgpt.train.evaluate import LossEstimator
from tfgpt.train.optim import make_optimizer
from tfgpt.train.perf import available_memory_bytes, estimate_memory, flops_per_token, measure_peak_flops
from tfgpt.train.step import GPTTrainer
from tfgpt.train.strategy import get_strategy, is_chief, is_multi_worker, on_cpu_only


class NonFiniteLossError(TfgptError):
    """The training loss became NaN/Inf; the last good checkpoint stays the latest."""


class MemoryWarning(UserWarning):
    """The estimated memory of a config exceeds what this machine has available."""


def resolve_precision(precision: str) -> str:
    """``auto`` → mixed_float16 on GPU, float32 on CPU.

    Not mixed_bfloat16 on CPU, even one with native bf16 (AVX512_BF16/AMX): the XLA CPU train
    step measured slower in bf16 than in float32 (0.90× tokens/s on char-small, 0.87× on
    shakespeare-char, 2-core AVX512_BF16 x86_64, 2026-11-23). Ask for it explicitly to try it.
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
    saved = read_yaml(run_dir / "config.yaml").get("model") or {}
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
        warnings.warn(msg, MemoryWarning, stacklevel=3)
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

        def remat_call(x: Any, cache: Any = None, cache_index: Any = None, cache_layer: Any = None,
                       training: bool | None = None, _call: Any = plain_call) -> Any:
            if cache is not None:
                return _call(x, cache=cache, cache_index=cache_index, cache_layer=cache_layer, training=training)
            return keras.remat(lambda h: _call(h, training=training))(x)

        block.call = remat_call


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
        resume: continue from ``RUN/checkpoints/latest.json`` exactly (optimizer, step, schedule,
            data position, dropout RNG); the model shape must be unchanged.
        strategy: "default", "mirrored" or "multiworker" (TF_CONFIG).
        progress: show a progress bar.
        source: train from in-memory tokens instead of a data dir (see :mod:`tfgpt.train.data`).
        tokenizer: the tokenizer for samples/``RUN/tokenizer`` when ``source`` is given.

    Returns ``{"run_dir", "step", "start_step", "loss", "train_loss", "val_loss", "best_val_loss",
    "tokens_per_sec", "mfu", "strategy", "path", "replicas", "jit_compile", "precision",
    "weights_sha256", "wall_s"}``. Raises :class:`NonFiniteLossError` on a NaN/Inf loss.

    Example:
        >>> import numpy as np
        >>> from tfgpt.train.data import array_source
        >>> src = array_source({"train": np.arange(5000) % 65, "val": np.arange(900) % 65})
        >>> s = train({"model": {"preset": "char-small", "n_layer": 1}, "train": {"max_steps": 4,
        ...            "eval_interval": 4, "eval_iters": 1, "batch_size": 2, "warmup_steps": 1}},
        ...           run_dir="/tmp/doc-run", source=src, progress=False)  # doctest: +SKIP
    """
    t_start = time.time()
    if config is None:
        if not (resume and run_dir is not None):
            raise ConfigError("a config is required (or --resume with --run-dir to reuse the run's config)")
        config = Path(run_dir) / "config.yaml"
    model_cfg, tcfg, dcfg = resolve_config(config, overrides)
    if data_dir is not None:
        dcfg = dataclasses.replace(dcfg, dir=str(data_dir))
    if run_dir is None:
        stem = Path(config).stem if not isinstance(config, dict) else "run"
        run_dir = Path("runs") / stem
    run_dir = Path(run_dir)
    if model_cfg.dropout > 0 and tcfg.gradient_checkpointing:
        raise ConfigError("train.gradient_checkpointing needs model.dropout == 0 "
                          "(recomputed dropout masks would differ from the forward pass)")

    # -- run dir / resume checks -------------------------------------------------------------
    latest = None
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise RunDirError(f"--resume: {run_dir} is not a run dir (no config.yaml)")
        _check_resume_shape(run_dir, model_cfg)
        latest = read_pointer(run_dir / "checkpoints", "latest")
        if latest is None:
            raise RunDirError(f"--resume: {run_dir}/checkpoints/latest.json not found (no checkpoint yet)")
    elif (run_dir / "checkpoints" / "latest.json").exists():
        raise RunDirError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")

    precision = resolve_precision(tcfg.precision)
    strat = get_strategy(strategy)
    replicas = strat.num_replicas_in_sync
    if tcfg.batch_size % replicas:
        raise ConfigError(f"train.batch_size ({tcfg.batch_size}) must divide by the {replicas} replicas")
    _memory_check(model_cfg, tcfg, replicas, precision != "float32")

    # -- data and tokenizer --------------------------------------------------------------------
    tok_dir = None
    if source is None:
        if dcfg.dir is None:
            raise DataError("no data dir: pass --data DATA_DIR or set data.dir in the config")
        check_data_dir(dcfg.dir, dcfg.tokenizer)
        # the run's config.yaml must name the data wherever eval/resume run from
        dcfg = dataclasses.replace(dcfg, dir=os.path.abspath(dcfg.dir))
        source = data_dir_source(dcfg.dir, shuffle=dcfg.shuffle)
        tok_dir = Path(dcfg.dir) / "tokenizer"
        tokenizer = _load_tokenizer(tok_dir)
    if tokenizer is not None:
        if tokenizer.vocab_size > model_cfg.vocab_size:
            raise ConfigError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is {model_cfg.vocab_size}; "
                f"set model.vocab_size >= {tokenizer.vocab_size}"
            )
        if resume and (run_dir / "tokenizer").is_dir():
            old = _load_tokenizer(run_dir / "tokenizer")
            if old is not None and old.fingerprint() != tokenizer.fingerprint():
                raise DataError(f"--resume: the data dir's tokenizer differs from {run_dir}/tokenizer")

    chief = is_chief(strat)
    multi = is_multi_worker(strat)
    mirrored_cpu = isinstance(strat, tf.distribute.MirroredStrategy) and replicas > 1 and on_cpu_only(strat)
    jit = tcfg.jit_compile and not multi and not mirrored_cpu

    # -- model, optimizer, restore ------------------------------------------------------------
    keras.utils.set_random_seed(tcfg.seed)
    with strat.scope():
        gpt = GPT(model_cfg, dtype=precision, name="gpt")
        gpt.build((None, model_cfg.block_size))
        if tcfg.gradient_checkpointing:
            _apply_remat(gpt)
        trainer = GPTTrainer(gpt, grad_accum_steps=tcfg.grad_accum_steps, grad_clip=tcfg.grad_clip)
        trainer.build((None, model_cfg.block_size))
        optimizer = make_optimizer(tcfg, gpt, loss_scale=precision == "mixed_float16")
        optimizer.build(gpt.trainable_variables)
        start_step, best_val = 0, None
        if latest is not None:
            state = restore_checkpoint(run_dir / "checkpoints" / latest["dir"], gpt, optimizer)
            start_step = int(keras.ops.convert_to_numpy(optimizer.iterations))
            if start_step != int(state["step"]):
                raise RunDirError(f"checkpoint {latest['dir']}: optimizer step {start_step} != {state['step']}")
            best = read_pointer(run_dir / "checkpoints", "best")
            best_val = best.get("val_loss") if best else state.get("best_val_loss")
        total = tcfg.max_steps
        if start_step >= total:
            raise ConfigError(f"--resume: the run is at step {start_step}, train.max_steps is {total}; raise it")
        spe = 1 if multi else _aligned_steps_per_execution(tcfg, start_step, total)
        trainer.compile(optimizer=optimizer, jit_compile=jit, steps_per_execution=spe)

    # -- run dir ---------------------------------------------------------------------------------
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_model_config(run_dir / "config.yaml", model_cfg, train=tcfg.to_dict(), data=dcfg.to_dict())
        if tokenizer is not None:
            if tok_dir is not None:
                shutil.copytree(tok_dir, run_dir / "tokenizer", dirs_exist_ok=True)
            else:
                tokenizer.save(run_dir / "tokenizer")
        rewrite_metrics(run_dir / "metrics.jsonl", start_step)

    # -- callbacks ---------------------------------------------------------------------------------
    block = model_cfg.block_size
    tokens_per_step = tcfg.global_batch * block
    peak = measure_peak_flops("bfloat16" if precision == "mixed_bfloat16" else "float32") * replicas
    estimator = LossEstimator(
        gpt, source, [dcfg.train_split, dcfg.val_split], tcfg.eval_iters,
        tcfg.eval_batch_size or tcfg.batch_size, block, tcfg.seed, jit_compile=jit,
    )
    estimator.batches = {("train" if k == dcfg.train_split else "val"): v for k, v in estimator.batches.items()}
    monitor = TrainMonitor(
        run_dir, tcfg, gpt, total, tokens_per_step, flops_per_token(model_cfg, block) * tokens_per_step, peak,
        estimator=estimator, tokenizer=tokenizer, chief=chief, progress=progress,
        info={"model": model_cfg.to_dict(), "strategy": strategy}, best_val=best_val,
    )

    # -- train -------------------------------------------------------------------------------------
    if multi:
        path = "custom_loop"
        _custom_loop(trainer, strat, source, dcfg, tcfg, block, start_step, total, monitor)
    else:
        path = "fit"
        ds = source(dcfg.train_split, tcfg.global_batch, block, tcfg.seed, start_step=start_step)
        trainer.fit(ds, epochs=1, steps_per_epoch=total - start_step, callbacks=[monitor], verbose=0)

    step = int(keras.ops.convert_to_numpy(optimizer.iterations))
    if monitor.nan_step is not None:
        latest_now = read_pointer(run_dir / "checkpoints", "latest")
        where = f"; the latest good checkpoint is {latest_now['dir']}" if latest_now else "; no checkpoint was written"
        raise NonFiniteLossError(
            f"training stopped at step {monitor.nan_step}: the loss is not finite (NaN/Inf){where}. "
            "Lower train.learning_rate, keep train.grad_clip > 0 or use float32"
        )
    if chief:
        save_keras_atomic(gpt, run_dir / "model.keras")
    last, last_eval = monitor.last, monitor.last_eval
    tput = monitor.throughput[1:] or monitor.throughput
    return {
        "run_dir": str(run_dir), "step": step, "start_step": start_step,
        "loss": last.get("loss"), "train_loss": last_eval.get("train_loss"), "val_loss": last_eval.get("val_loss"),
        "best_val_loss": monitor.best_val,
        "tokens_per_sec": sum(tput) / len(tput) if tput else None,
        "mfu": last.get("mfu"), "strategy": strategy, "path": path, "replicas": replicas,
        "jit_compile": jit, "precision": precision, "steps_per_execution": spe,
        "weights_sha256": weights_digest(gpt), "wall_s": time.time() - t_start,
    }


def _custom_loop(
    trainer: GPTTrainer, strat: tf.distribute.Strategy, source: Source, dcfg: DataConfig, tcfg: TrainConfig,
    block: int, start_step: int, total: int, monitor: TrainMonitor,
) -> None:
    """Multi-worker path: ``strategy.run(trainer.train_step)`` in a ``tf.function``, data sharded by worker."""

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        return source(dcfg.train_split, tcfg.global_batch, block, tcfg.seed, start_step=start_step,
                      num_shards=ctx.num_input_pipelines, shard_index=ctx.input_pipeline_id)

    dist = strat.distribute_datasets_from_function(dataset_fn)
    iterator = iter(dist)

    @tf.function
    def step_fn(it: Any) -> dict[str, Any]:
        out = strat.run(trainer.train_step, args=(next(it),))
        return {k: strat.experimental_local_results(v)[0] for k, v in out.items()}

    monitor.set_model(trainer)
    trainer.stop_training = False
    monitor.on_train_begin()
    for i in range(start_step, total):
        logs = {k: float(v) for k, v in step_fn(iterator).items()}
        monitor.on_train_batch_end(i - start_step, logs)
        if trainer.stop_training:
            break
    monitor.on_train_end()


def load_run_model(
    run_dir: str | os.PathLike, checkpoint: str = "final"
) -> tuple[GPT, tuple[GPTConfig, TrainConfig, DataConfig], int | None, Path]:
    """The GPT of a run, its configs, its step (None if unknown) and the weights file loaded.

    ``checkpoint``: "final" (the weights :func:`tfgpt.load` uses: the newer of ``model.keras`` and
    the latest checkpoint), "latest", "best", a step dir name, or a checkpoint dir or weights file path.
    """
    from tfgpt.runs import load_weights_file, weights_path, weights_step

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir} is not a run dir (no config.yaml)")
    cfgs = resolve_config(run_dir / "config.yaml")
    if checkpoint in ("latest", "best"):
        pointer = read_pointer(run_dir / "checkpoints", checkpoint)
        if pointer is None:
            raise RunDirError(f"{run_dir}: no {checkpoint} checkpoint (checkpoints/{checkpoint}.json not found)")
        checkpoint = str(pointer["dir"])
    path = weights_path(run_dir, None if checkpoint == "final" else checkpoint)
    model = load_weights_file(path, cfgs[0], run_dir / "config.yaml")
    return model, cfgs, weights_step(run_dir, path), path


def write_summary(path: str | os.PathLike, summary: dict[str, Any]) -> None:
    """Write a train() summary as JSON, atomically."""
    import json

    write_text_atomic(path, json.dumps(summary, indent=1) + "\n")
