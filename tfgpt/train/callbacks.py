"""The training monitor: logging, evaluation, samples, checkpoints and the NaN stop.

One ``keras.callbacks.Callback`` serves every strategy: ``model.fit`` calls it, and the
multi-worker custom loop calls the same hooks. Every ``log_interval`` steps it records loss,
learning rate, grad norm, tokens/s and MFU; every ``eval_interval`` steps it estimates train/val
loss and perplexity and (on the chief) writes a text sample; every ``checkpoint_interval`` steps
and on a new best val loss it asks its :class:`~tfgpt.train.checkpoint.Checkpoints` for a
checkpoint. Records go to ``RUN/metrics.jsonl`` (one JSON object per line,
``"kind": "train" | "eval"``) and TensorBoard (``RUN/logs/train``, ``RUN/logs/val``). A
non-finite loss stops training before anything is saved, so ``latest.json`` keeps naming the last
good checkpoint; :meth:`TrainMonitor.finish` then raises :class:`NonFiniteLossError`, or returns
the summary of what the monitor saw. A loss that climbs past ``train.divergence_factor`` times the
best after the warmup warns once (:class:`DivergenceWarning`) or, with ``train.divergence: stop``,
stops the same way (:class:`DivergedError`).

Example:
    >>> monitor = TrainMonitor(run_dir, cfg, gpt, 2000, rates, checkpoints)  # doctest: +SKIP
    >>> trainer.fit(ds, steps_per_epoch=2000, callbacks=[monitor], verbose=0)  # doctest: +SKIP
    >>> monitor.finish()["val_loss"]  # doctest: +SKIP
    1.47
"""

from __future__ import annotations

import dataclasses
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

from tfgpt.atomic import write_text_atomic
from tfgpt.errors import TfgptError, TrainingInterrupted
from tfgpt.runs import LOGS_DIR, METRICS_JSONL
from tfgpt.train.checkpoint import Checkpoints
from tfgpt.train.config import TrainConfig
from tfgpt.train.evaluate import LossEstimator, perplexity


class NonFiniteLossError(TfgptError):
    """The training loss became NaN/Inf; the last good checkpoint stays the latest."""


class DivergedError(TfgptError):
    """With ``train.divergence: stop``: the loss climbed past the factor; the last good checkpoint stays."""


class DivergenceWarning(UserWarning):
    """The training loss climbed past ``train.divergence_factor`` times its best after the warmup."""


@dataclasses.dataclass(frozen=True)
class StepRates:
    """What one optimizer step is worth, for the tokens/s and MFU the monitor logs.

    Attributes:
        tokens_per_step: tokens in one optimizer step (global).
        flops_per_step: model training FLOPs of one step.
        peak_flops: peak FLOP/s of the machine (all replicas); 0 leaves MFU out.
        peak_source: where ``peak_flops`` came from (config, or a cached measurement).
    """

    tokens_per_step: int
    flops_per_step: float = 0.0
    peak_flops: float = 0.0
    peak_source: str = ""


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
    write_text_atomic(path, "".join(k + "\n" for k in kept))


class TrainMonitor(keras.callbacks.Callback):
    """See the module docstring.

    Args:
        run_dir: the run directory (written only when ``chief``).
        cfg: the train config (intervals, eval settings, sampling).
        gpt: the GPT being trained (sampled).
        total_steps: the step training ends at.
        rates: tokens and FLOPs per step, peak FLOP/s (:class:`StepRates`).
        checkpoints: the run's checkpoint owner (interval and best-val checkpoints).
        estimator: a :class:`LossEstimator` with ``train``/``val`` labels, or None to skip evaluation.
        tokenizer: for text samples (None skips them).
        chief: whether this process writes files.
        progress: show a tqdm progress bar.
    """

    def __init__(
        self, run_dir: str | Path, cfg: TrainConfig, gpt: keras.Model, total_steps: int, rates: StepRates,
        checkpoints: Checkpoints, estimator: LossEstimator | None = None, tokenizer: Any = None,
        chief: bool = True, progress: bool = True,
    ) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.gpt = gpt
        self.total_steps = total_steps
        self.rates = rates
        self.checkpoints = checkpoints
        self.estimator = estimator
        self.tokenizer = tokenizer
        self.chief = chief
        self.progress = progress
        self._nan_step: int | None = None
        self._nan_what = "loss"
        self._best_loss = math.inf
        self._mfu_warned = False
        self._diverged: str | None = None  # the message, once the loss diverged
        self._last: dict[str, Any] = {}
        self._last_eval: dict[str, Any] = {}
        self._throughput: list[float] = []
        self._writers: dict[str, Any] = {}
        self._bar: Any = None
        self.stop_signal: str | None = None  # set by request_stop (a SIGINT/SIGTERM handler)
        self._stop_code = 130
        self._stopped_at: int | None = None

    def request_stop(self, signal_name: str, exit_code: int = 130) -> None:
        """Stop after the step in flight and checkpoint it (safe to call from a signal handler)."""
        self.stop_signal, self._stop_code = signal_name, exit_code

    def finish(self) -> dict[str, Any]:
        """After training: raise :class:`NonFiniteLossError` if the loss went NaN/Inf, else the summary
        ``{"loss", "train_loss", "val_loss", "best_val_loss", "tokens_per_sec", "mfu", "peak_flops",
        "peak_source"}`` (last values;
        tokens/s averaged over the logs after the first, which includes compilation)."""
        if self._stopped_at is not None:
            ckpt = self.checkpoints.dir / (self.checkpoints.latest() or {}).get("dir", "?")
            raise TrainingInterrupted(
                f"{self.stop_signal} at step {self._stopped_at} of {self.total_steps}: checkpoint {ckpt} written; "
                f"resume with: tfgpt train --run-dir {self.run_dir} --resume", exit_code=self._stop_code,
            )
        if self._diverged is not None and self.cfg.divergence == "stop":
            raise DivergedError(f"training stopped: {self._diverged}; {self.checkpoints.where()}")
        if self._nan_step is not None:
            raise NonFiniteLossError(
                f"training stopped at step {self._nan_step}: the {self._nan_what} is not finite (NaN/Inf); "
                f"{self.checkpoints.where()}. Lower train.learning_rate, keep train.grad_clip > 0 or use float32"
            )
        tput = self._throughput[1:] or self._throughput
        return {
            "loss": self._last.get("loss"), "train_loss": self._last_eval.get("train_loss"),
            "val_loss": self._last_eval.get("val_loss"), "best_val_loss": self.checkpoints.best_val,
            "tokens_per_sec": sum(tput) / len(tput) if tput else None, "mfu": self._last.get("mfu"),
            "peak_flops": self.rates.peak_flops or None, "peak_source": self.rates.peak_source or None,
        }

    # -- plumbing -------------------------------------------------------------------------

    def _writer(self, name: str) -> Any:
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(str(self.run_dir / LOGS_DIR / name))
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
        with open(self.run_dir / METRICS_JSONL, "a", encoding="utf-8") as f:
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
        end = step >= self.total_steps
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)  # before the draw: the bar shows this loss
            if end:  # the 100% line drawn once, by close, before the last eval's message
                self._bar.n = step
                self._bar.close()
            else:
                self._bar.update(step - self._bar.n)
        if not math.isfinite(loss) or self._bad_gradients(logs):
            # A finite loss with NaN/Inf gradients: this step's update made the weights NaN; not saved.
            self._nan_step, self._nan_what = step, "loss" if not math.isfinite(loss) else "gradient norm"
            self.model.stop_training = True
            return
        if self._diverging(step, loss):
            self.model.stop_training = True  # before this step's checkpoint: the last good one stays
            return
        cfg = self.cfg
        if step % cfg.log_interval == 0 or end:
            self._log_train(step, loss, logs)
        if self.estimator is not None and (step % cfg.eval_interval == 0 or end):
            self._evaluate(step)
        if step % cfg.checkpoint_interval == 0 or end or self.stop_signal:
            self.checkpoints.save(step, step * self.rates.tokens_per_step)
        if self.stop_signal and not end:
            self._stopped_at = step
            self.model.stop_training = True
        self._t_last, self._s_last = time.perf_counter(), step

    def _bad_gradients(self, logs: dict[str, Any]) -> bool:
        """A non-finite gradient norm that was applied (a loss-scale optimizer skips such a step instead)."""
        grad_norm = float(logs.get("grad_norm", 0.0))
        loss_scaled = isinstance(getattr(self.model, "optimizer", None), keras.optimizers.LossScaleOptimizer)
        return not math.isfinite(grad_norm) and not loss_scaled

    def _diverging(self, step: int, loss: float) -> bool:
        """Whether to stop now: the loss passed ``divergence_factor`` × its best after the warmup (the first
        time, a :class:`DivergenceWarning` or, with ``divergence: stop``, a stop)."""
        cfg = self.cfg
        if cfg.divergence == "off" or self._diverged is not None:
            return False
        if step > cfg.warmup_steps and loss > cfg.divergence_factor * self._best_loss:
            self._diverged = (f"the loss {loss:.4f} at step {step} is over {cfg.divergence_factor:g}x the best so "
                              f"far ({self._best_loss:.4f}): training is diverging. Lower train.learning_rate "
                              f"or raise train.warmup_steps")
            if cfg.divergence == "warn":
                warnings.warn(self._diverged, DivergenceWarning, stacklevel=2)
            return cfg.divergence == "stop"
        self._best_loss = min(self._best_loss, loss)
        return False

    def _log_train(self, step: int, loss: float, logs: dict) -> None:
        rates = self.rates
        dt = max(time.perf_counter() - self._t_last, 1e-9)
        tok_s = (step - self._s_last) * rates.tokens_per_step / dt
        mfu = (step - self._s_last) * rates.flops_per_step / dt / rates.peak_flops if rates.peak_flops else None
        if mfu is not None and mfu > 1 and not self._mfu_warned:  # the peak was measured low (a busy machine)
            self._mfu_warned = True
            warnings.warn(f"MFU {mfu:.2f} is above 1: the peak it is measured against ({rates.peak_source}) is "
                          f"too low; set train.peak_tflops, or delete the cached measurement to measure again",
                          stacklevel=2)
        self._throughput.append(tok_s)
        record = {
            "kind": "train", "step": step, "loss": loss, "lr": float(logs.get("lr", float("nan"))),
            "grad_norm": float(logs.get("grad_norm", float("nan"))), "tokens_per_sec": tok_s, "mfu": mfu,
            "tokens": step * rates.tokens_per_step, "time": time.time(),
        }
        self._last = record
        self._record(record)
        self._scalars("train", step, {
            "loss": loss, "perplexity": perplexity(loss), "learning_rate": record["lr"],
            "grad_norm": record["grad_norm"], "tokens_per_sec": tok_s, "mfu": mfu,
        })

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
        # the same tags in both runs: TensorBoard draws one chart per metric with train and val overlaid
        for split, loss in (("train", train_loss), ("val", val_loss)):
            if loss is not None:
                self._scalars(split, step, {"eval/loss": loss, "eval/perplexity": perplexity(loss)})
        sample = self._sample(step)
        if sample is not None:
            record["sample"] = sample
        self._last_eval = record
        self._record(record)
        if self._bar is not None and val_loss is not None:  # stderr, beside the bar: stdout is the summary's
            self._bar.write(f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}", file=sys.stderr)
        self.checkpoints.offer_best(step, step * self.rates.tokens_per_step, val_loss)

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


def weights_digest(model: keras.Model) -> str:
    """SHA-256 over the model's weights (identical weights ⇔ identical digest)."""
    import hashlib

    h = hashlib.sha256()
    for v in model.weights:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(v)).tobytes())
    return h.hexdigest()
