"""tfgpt.train.callbacks: TrainMonitor's records, checkpoints, summary and NaN stop; metrics rewrite; digest."""

from __future__ import annotations

import hashlib
import json
import math

import keras
import numpy as np
import pytest

from tfgpt.config import GPTConfig
from tfgpt.model.gpt import GPT
from tfgpt.runs import CHECKPOINTS, LOGS_DIR, METRICS_JSONL
from tfgpt.train.callbacks import (
    DivergedError,
    DivergenceWarning,
    NonFiniteLossError,
    StepRates,
    TrainMonitor,
    rewrite_metrics,
    weights_digest,
)
from tfgpt.train.checkpoint import Checkpoints
from tfgpt.train.config import TrainConfig
from tfgpt.train.optim import make_optimizer


class _Trained:
    """The two things the monitor reads from the model ``fit`` trains: its optimizer and stop flag."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.stop_training = False


def _monitor(tmp_path, estimator=None, max_steps=4, progress=False, rates=None, **train):
    keras.utils.set_random_seed(0)
    gpt = GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=8))
    gpt.build((None, 4))
    opt = make_optimizer(TrainConfig(warmup_steps=0, max_steps=max_steps), gpt)
    opt.build(gpt.trainable_variables)
    cfg = TrainConfig(**{"max_steps": max_steps, "log_interval": 2, "eval_interval": 2, "checkpoint_interval": 4,
                         "keep_checkpoints": 5, "sample_tokens": 0, **train})
    ckpts = Checkpoints(tmp_path / CHECKPOINTS, gpt, opt, keep=5)
    monitor = TrainMonitor(tmp_path, cfg, gpt, max_steps, rates or StepRates(tokens_per_step=32), ckpts,
                           estimator=estimator, progress=progress)
    trained = _Trained(opt)
    monitor.set_model(trained)
    return monitor, ckpts, trained


def _steps(monitor, trained, losses, grad_norms=None):
    monitor.on_train_begin()
    for step, loss in enumerate(losses, start=1):
        trained.optimizer.iterations.assign(step)
        grad_norm = 0.5 if grad_norms is None else grad_norms[step - 1]
        monitor.on_train_batch_end(step - 1, {"loss": loss, "lr": 1e-3, "grad_norm": grad_norm})
        if trained.stop_training:
            break
    monitor.on_train_end()


def test_monitor_logs_evaluates_checkpoints_and_summarises(tmp_path):
    evals = iter([{"train": 2.0, "val": 1.5}, {"train": 1.8, "val": 1.6}])
    monitor, ckpts, trained = _monitor(tmp_path, estimator=lambda: next(evals))
    _steps(monitor, trained, [2.9, 2.8, 2.7, 2.6])
    records = [json.loads(line) for line in (tmp_path / METRICS_JSONL).read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("train", 2), ("eval", 2), ("train", 4), ("eval", 4)]
    assert (records[2]["loss"], records[2]["tokens"], records[2]["lr"], records[2]["mfu"]) == (2.6, 128, 1e-3, None)
    assert records[1]["val_perplexity"] == pytest.approx(math.exp(1.5))
    summary = monitor.finish()
    assert {k: summary[k] for k in ("loss", "train_loss", "val_loss", "best_val_loss", "mfu")} == {
        "loss": 2.6, "train_loss": 1.8, "val_loss": 1.6, "best_val_loss": 1.5, "mfu": None}
    assert summary["tokens_per_sec"] > 0
    assert ckpts.best() == {"step": 2, "dir": "step-000002", "val_loss": 1.5}  # the eval at 2 was the best
    assert ckpts.latest() == {"step": 4, "dir": "step-000004"}  # the interval checkpoint
    assert {p.name for p in (tmp_path / LOGS_DIR).iterdir()} == {"train", "val"}


def test_progress_bar_ends_once_and_eval_lines_go_to_stderr(tmp_path, capsys):
    evals = iter([{"train": 2.0, "val": 1.5}, {"train": 1.8, "val": 1.6}])
    monitor, _, trained = _monitor(tmp_path, estimator=lambda: next(evals), progress=True)
    _steps(monitor, trained, [2.9, 2.8, 2.7, 2.6])
    out, err = capsys.readouterr()
    assert out == ""  # stdout is left to the command's summary
    frames = [f.strip() for f in err.replace("\r", "\n").splitlines() if f.strip()]
    assert sum(f.startswith("100%") for f in frames) == 1, frames  # the final bar line is drawn once
    assert frames[-1] == "step 4: train loss 1.8000, val loss 1.6000" and frames[-2].startswith("100%")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_monitor_stops_on_non_finite_gradients_with_a_finite_loss(tmp_path, bad):
    """The update of a step whose gradient norm is NaN/Inf made the weights NaN: stop before saving that step."""
    monitor, ckpts, trained = _monitor(tmp_path, max_steps=8)
    _steps(monitor, trained, [2.0] * 8, grad_norms=[0.5] * 5 + [bad, 0.5, 0.5])
    assert trained.stop_training is True and int(trained.optimizer.iterations.numpy()) == 6
    with pytest.raises(NonFiniteLossError, match=r"step 6: the gradient norm is not finite.*step-000004"):
        monitor.finish()
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS).glob("step-*")) == ["step-000004"]


def test_monitor_stops_on_nan_and_names_the_last_good_checkpoint(tmp_path):
    monitor, ckpts, trained = _monitor(tmp_path, max_steps=8)
    _steps(monitor, trained, [2.0, 2.0, 2.0, 2.0, 2.0, float("nan"), 2.0, 2.0])
    assert trained.stop_training is True
    assert int(trained.optimizer.iterations.numpy()) == 6  # stopped at the NaN
    nan = r"step 6: the loss is not finite.*latest good checkpoint is step-000004"
    with pytest.raises(NonFiniteLossError, match=nan):
        monitor.finish()
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS).glob("step-*")) == ["step-000004"]


def test_monitor_nan_before_any_checkpoint(tmp_path):
    monitor, _, trained = _monitor(tmp_path)
    _steps(monitor, trained, [float("inf")])
    with pytest.raises(NonFiniteLossError, match="step 1: .*no checkpoint was written"):
        monitor.finish()


DIVERGING = [3.0, 1.0, 1.8, 1.2, 2.5, 4.0]  # step 5 is past 2x the best (1.0 at step 2); warmup 1 step


def test_a_diverging_loss_warns_once_and_training_goes_on(tmp_path):
    monitor, _, trained = _monitor(tmp_path, max_steps=6, warmup_steps=1)
    with pytest.warns(DivergenceWarning) as caught:
        _steps(monitor, trained, DIVERGING)
    ours = [str(w.message) for w in caught if w.category is DivergenceWarning]
    assert len(ours) == 1 and "loss 2.5000 at step 5 is over 2x the best so far (1.0000)" in ours[0]
    assert trained.stop_training is False and monitor.finish()["loss"] == 4.0


def test_divergence_stop_keeps_the_last_good_checkpoint(tmp_path):
    monitor, _, trained = _monitor(tmp_path, max_steps=6, warmup_steps=1, divergence="stop", checkpoint_interval=2,
                                   divergence_factor=3.0)
    _steps(monitor, trained, DIVERGING)  # 2.5 < 3x; 4.0 at step 6 > 3x 1.0
    assert trained.stop_training is True
    with pytest.raises(DivergedError, match=r"loss 4.0000 at step 6 .*latest good checkpoint is step-000004"):
        monitor.finish()
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS).glob("step-*")) == ["step-000002", "step-000004"]


def test_an_mfu_above_one_warns_once_naming_the_peak(tmp_path):
    rates = StepRates(tokens_per_step=32, flops_per_step=1e15, peak_flops=1e9, peak_source="measured 2026-12-01")
    monitor, _, trained = _monitor(tmp_path, rates=rates)
    with pytest.warns(UserWarning) as caught:
        _steps(monitor, trained, [2.9, 2.8, 2.7, 2.6])
    ours = [str(w.message) for w in caught if "MFU" in str(w.message)]
    assert len(ours) == 1 and "against (measured 2026-12-01) is too low" in ours[0]


def test_divergence_off_and_a_bad_factor(tmp_path):
    monitor, _, trained = _monitor(tmp_path, max_steps=6, warmup_steps=1, divergence="off")
    _steps(monitor, trained, DIVERGING)
    assert trained.stop_training is False
    with pytest.raises(Exception, match="divergence_factor must be a finite number > 1"):
        TrainConfig(divergence_factor=1.0)


def test_rewrite_metrics_drops_later_steps(tmp_path):
    path = tmp_path / METRICS_JSONL
    lines = [json.dumps({"kind": "train", "step": s}) for s in range(1, 6)]
    path.write_text("\n".join(lines[:3]) + "\n{not json\n" + "\n".join(lines[3:]) + "\n")
    rewrite_metrics(path, 3)
    assert path.read_text() == (
        '{"kind": "train", "step": 1}\n{"kind": "train", "step": 2}\n{"kind": "train", "step": 3}\n'
    )
    rewrite_metrics(tmp_path / "absent.jsonl", 3)  # nothing to cut: no file made
    assert not (tmp_path / "absent.jsonl").exists()


def test_weights_digest_is_the_sha256_of_the_weight_bytes():
    gpt = GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=8))
    gpt.build((None, 4))
    gpt.set_weights([np.zeros_like(w) for w in gpt.get_weights()])
    n_bytes = sum(int(np.prod(w.shape)) * 4 for w in gpt.get_weights())  # float32 zeros
    assert weights_digest(gpt) == hashlib.sha256(bytes(n_bytes)).hexdigest()
    gpt.weights[0].assign(np.ones(gpt.weights[0].shape, "float32"))
    assert weights_digest(gpt) != hashlib.sha256(bytes(n_bytes)).hexdigest()
