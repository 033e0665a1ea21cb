"""The training monitor: logging, evaluation, samples, checkpoints and the NaN stop.

One ``keras.callbacks.Callback`` serves every strategy: ``model.fit`` calls it, and the
multi-worker custom loop calls the same hooks. Every ``log_interval`` steps it records loss,
learning rate, grad norm, tokens/s and MFU; every ``eval_interval`` steps it estimates train/val
loss and perplexity and (on the chief) writes a text sample; every ``checkpoint_interval`` steps
and on a new best val loss it writes a checkpoint. Records go to ``RUN/metrics.jsonl`` (one JSON
object per line, ``"kind": "train" | "eval"``) and TensorBoard (``RUN/logs/train``,
``RUN/logs/val``). A non-finite loss stops training before anything is saved, so ``latest.json``
keeps naming the last good checkpoint.

Example:
    >>> monitor = TrainMonitor(run_dir, cfg, gpt, total_steps=2000, ...)  # doctest: +SKIP
    >>> trainer.fit(ds, steps_per_epoch=2000, callbacks=[monitor], verbose=0)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfgpt.train.checkpoint import prune_checkpoints, read_pointer, save_checkpoint, step_dir_name, write_pointer
from tfgpt.train.config import TrainConfig
from tfgpt.train.evaluate import LossEstimator, perplexity


def rewrite_metrics(path: Path, max_step: int) -> None:
    """Drop records after ``max_step`` (a resumed run re-logs them)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue
    from tfgpt.atomic import write_text_atomic

    write_text_atomic(path, "".join(k + "\n" for k in kept))


class TrainMonitor(keras.callbacks.Callback):
    """See the module docstring.

    Args:
        run_dir: the run directory (written only when ``chief``).
        cfg: the train config (intervals, eval settings, sampling).
        gpt: the GPT being trained (checkpointed and sampled).
        total_steps: the step training ends at.
        tokens_per_step: tokens in one optimizer step (global).
        flops_per_step: model training FLOPs of one step (for MFU).
        peak_flops: measured peak FLOP/s of the machine (all replicas).
        estimator: a :class:`LossEstimator`, or None to skip evaluation.
        tokenizer: for text samples (None skips them).
        chief: whether this process writes files.
        progress: show a tqdm progress bar.
        info: extra fields for each checkpoint's ``state.json``.
        best_val: the best val loss so far (when resuming).
    """

    def __init__(
        self, run_dir: str | Path, cfg: TrainConfig, gpt: keras.Model, total_steps: int,
        tokens_per_step: int, flops_per_step: float, peak_flops: float,
        estimator: LossEstimator | None = None, tokenizer: Any = None, chief: bool = True,
        progress: bool = True, info: dict[str, Any] | None = None, best_val: float | None = None,
    ) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.cfg = cfg
        self.gpt = gpt
        self.total_steps = total_steps
        self.tokens_per_step = tokens_per_step
        self.flops_per_step = flops_per_step
        self.peak_flops = peak_flops
        self.estimator = estimator
        self.tokenizer = tokenizer
        self.chief = chief
        self.progress = progress
        self.info = info or {}
        self.best_val = best_val
        self.nan_step: int | None = None
        self.last: dict[str, Any] = {}
        self.last_eval: dict[str, Any] = {}
        self.saved_step: int | None = None
        self._writers: dict[str, Any] = {}
        self._bar: Any = None
        self.throughput: list[float] = []

    # -- plumbing -------------------------------------------------------------------------

    def _writer(self, name: str) -> Any:
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(str(self.run_dir / "logs" / name))
        return self._writers[name]

    def _scalars(self, name: str, step: int, values: dict[str, float]) -> None:
        if not self.chief:
            return
        with self._writer(name).as_default(step=step):
            for k, v in values.items():
                if v is not None and math.isfinite(v):
                    tf.summary.scalar(k, v)

    def _record(self, record: dict[str, Any]) -> None:
        if not self.chief:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    # -- hooks ----------------------------------------------------------------------------

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start_step = self._step()
        self._t_last, self._s_last = time.perf_counter(), self.start_step
        if self.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total_steps, initial=self.start_step, unit="step",
                             dynamic_ncols=True, file=sys.stderr, disable=not self.chief)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        step = self._step()
        loss = float(logs.get("loss", float("nan")))
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if not math.isfinite(loss):
            self.nan_step = step
            self.model.stop_training = True
            return
        cfg = self.cfg
        end = step >= self.total_steps
        if step % cfg.log_interval == 0 or end:
            now = time.perf_counter()
            dt = max(now - self._t_last, 1e-9)
            tok_s = (step - self._s_last) * self.tokens_per_step / dt
            mfu = (step - self._s_last) * self.flops_per_step / dt / self.peak_flops if self.peak_flops else None
            self.throughput.append(tok_s)
            record = {
                "kind": "train", "step": step, "loss": loss, "lr": float(logs.get("lr", float("nan"))),
                "grad_norm": float(logs.get("grad_norm", float("nan"))), "tokens_per_sec": tok_s, "mfu": mfu,
                "tokens": step * self.tokens_per_step, "time": time.time(),
            }
            self.last = record
            self._record(record)
            self._scalars("train", step, {
                "loss": loss, "perplexity": perplexity(loss), "learning_rate": record["lr"],
                "grad_norm": record["grad_norm"], "tokens_per_sec": tok_s, "mfu": mfu,
            })
        if self.estimator is not None and (step % cfg.eval_interval == 0 or end):
            self._evaluate(step)
        if step % cfg.checkpoint_interval == 0 or end:
            self.save(step)
        self._t_last, self._s_last = time.perf_counter(), step

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.close()
        for w in self._writers.values():
            w.flush()

    # -- eval, samples, checkpoints ---------------------------------------------------------

    def _evaluate(self, step: int) -> None:
        assert self.estimator is not None
        losses = self.estimator()
        train_loss, val_loss = losses.get("train"), losses.get("val")
        record: dict[str, Any] = {"kind": "eval", "step": step, "train_loss": train_loss, "val_loss": val_loss}
        if val_loss is not None:
            record["val_perplexity"] = perplexity(val_loss)
        if train_loss is not None:
            self._scalars("train", step, {"eval_loss": train_loss, "eval_perplexity": perplexity(train_loss)})
        if val_loss is not None:
            self._scalars("val", step, {"loss": val_loss, "perplexity": perplexity(val_loss)})
        sample = self._sample(step)
        if sample is not None:
            record["sample"] = sample
        self.last_eval = record
        self._record(record)
        if self._bar is not None and val_loss is not None:
            self._bar.write(f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}")
        if val_loss is not None and math.isfinite(val_loss) and (self.best_val is None or val_loss < self.best_val):
            self.best_val = val_loss
            self.save(step, val_loss=val_loss, best=True)

    def _sample(self, step: int) -> str | None:
        if not (self.chief and self.tokenizer is not None and self.cfg.sample_tokens > 0):
            return None
        try:
            from tfgpt.generate import generate

            text = generate(self.gpt, self.tokenizer, self.cfg.sample_prompt,
                            max_new_tokens=self.cfg.sample_tokens, temperature=0.8,
                            top_k=min(200, self.tokenizer.vocab_size), seed=step)
        except Exception as e:  # a failed sample must not end a training run; say so
            warnings.warn(f"text sample at step {step} failed: {type(e).__name__}: {e}", stacklevel=2)
            return None
        with self._writer("val").as_default(step=step):
            tf.summary.text("sample", tf.constant(text))
        return text

    def save(self, step: int, val_loss: float | None = None, best: bool = False) -> None:
        """Checkpoint at ``step`` (once per step), then prune to the last K plus the best."""
        if not self.chief:
            return
        if self.saved_step != step:
            info = {**self.info, "tokens": step * self.tokens_per_step, "best_val_loss": self.best_val}
            if val_loss is not None:
                info["val_loss"] = val_loss
            save_checkpoint(self.ckpt_dir, step, self.gpt, self.model.optimizer, info)
            self.saved_step = step
        if best:
            write_pointer(self.ckpt_dir, "best", {"step": step, "dir": step_dir_name(step), "val_loss": val_loss})
        prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints)

    def latest(self) -> dict[str, Any] | None:
        return read_pointer(self.ckpt_dir, "latest")


def weights_digest(model: keras.Model) -> str:
    """SHA-256 over the model's weights (identical weights ⇔ identical digest)."""
    import hashlib

    h = hashlib.sha256()
    for v in model.weights:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(v)).tobytes())
    return h.hexdigest()
