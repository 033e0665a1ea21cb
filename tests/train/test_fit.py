"""Exact resume, gradient-accumulation equivalence, checkpoints and the NaN stop."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.train.helpers import char_tokens, tiny_config, train_records
from tfgpt.config import GPTConfig
from tfgpt.model.gpt import GPT
from tfgpt.train.config import TrainConfig
from tfgpt.train.data import array_source
from tfgpt.train.fit import NonFiniteLossError, train
from tfgpt.train.optim import make_optimizer
from tfgpt.train.step import GPTTrainer


@pytest.fixture(scope="module")
def source():
    ids, _ = char_tokens()
    return array_source({"train": ids[:50000], "val": ids[50000:]})


def test_resume_is_exact(tmp_path, source):
    """A run stopped at step 10 and resumed to 20 logs the same losses as a run of 20 steps."""
    cfg = tiny_config(max_steps=20, lr_decay_steps=20, checkpoint_interval=5, eval_interval=10)
    cfg["model"]["dropout"] = 0.1  # the dropout RNG must be restored too
    full = train(cfg, run_dir=tmp_path / "full", source=source, progress=False)
    part = train(cfg, run_dir=tmp_path / "part", source=source, progress=False, overrides=["train.max_steps=10"])
    assert part["step"] == 10
    assert json.loads((tmp_path / "part/checkpoints/latest.json").read_text()) == {"step": 10, "dir": "step-000010"}
    resumed = train(None, run_dir=tmp_path / "part", source=source, progress=False, resume=True,
                    overrides=["train.max_steps=20"])
    assert resumed["start_step"] == 10 and resumed["step"] == 20
    a, b = train_records(tmp_path / "full"), train_records(tmp_path / "part")
    assert sorted(a) == sorted(b) == list(range(1, 21))
    diff = max(abs(a[s]["loss"] - b[s]["loss"]) for s in a)
    assert diff <= 1e-5, diff
    assert max(abs(a[s]["lr"] - b[s]["lr"]) for s in a) <= 1e-9
    assert full["weights_sha256"] == resumed["weights_sha256"]


def test_accumulation_matches_big_batch():
    """Accumulating 4 micro-batches of 2 equals one batch of 8 (loss, grad norm and weights)."""
    ids, _ = char_tokens(20000)
    x = np.stack([ids[i * 17:i * 17 + 16] for i in range(8)])
    y = np.stack([ids[i * 17 + 1:i * 17 + 17] for i in range(8)])
    results = []
    for accum in (1, 4):
        keras.utils.set_random_seed(0)
        gpt = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32))
        gpt.build((None, 16))
        trainer = GPTTrainer(gpt, grad_accum_steps=accum, grad_clip=1.0)
        trainer.compile(optimizer=make_optimizer(TrainConfig(warmup_steps=0, max_steps=10), gpt), jit_compile=True)
        logs = trainer.fit(tf.data.Dataset.from_tensors((x, y)).repeat(), steps_per_epoch=3, verbose=0).history
        results.append((logs, [w.numpy() for w in gpt.trainable_weights]))
    (h1, w1), (h4, w4) = results
    np.testing.assert_allclose(h1["loss"], h4["loss"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h1["grad_norm"], h4["grad_norm"], rtol=1e-4)
    for a, b in zip(w1, w4, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_checkpoints_keep_last_k_and_best(tmp_path, source):
    out = train(tiny_config(max_steps=12, checkpoint_interval=2, eval_interval=4, keep_checkpoints=2),
                run_dir=tmp_path / "r", source=source, progress=False)
    ckpts = tmp_path / "r" / "checkpoints"
    best = json.loads((ckpts / "best.json").read_text())
    names = sorted(p.name for p in ckpts.iterdir() if p.is_dir())
    assert {"step-000010", "step-000012", best["dir"]} == set(names)
    assert best["val_loss"] == pytest.approx(out["best_val_loss"])
    assert not list(ckpts.glob(".*tmp*"))
    for name in names:
        assert {p.name for p in (ckpts / name).iterdir()} == {"model.weights.h5", "train_state.npz", "state.json"}
    model = keras.saving.load_model(tmp_path / "r" / "model.keras", safe_mode=True)
    assert model(np.zeros((1, 4), "int32")).shape == (1, 4, 65)
    events = list((tmp_path / "r" / "logs").rglob("events.out.tfevents*"))
    assert {p.parent.name for p in events} == {"train", "val"}


def test_nan_loss_stops_and_keeps_last_good(tmp_path, source):
    run = tmp_path / "r"
    train(tiny_config(max_steps=4), run_dir=run, source=source, progress=False)
    good = json.loads((run / "checkpoints/latest.json").read_text())
    with pytest.raises(NonFiniteLossError, match="not finite.*step-000004"):
        train(None, run_dir=run, source=source, progress=False, resume=True,
              overrides=["train.max_steps=12", "train.learning_rate=1e30", "train.min_lr=1e30",
                         "train.grad_clip=0", "train.checkpoint_interval=4"])
    assert json.loads((run / "checkpoints/latest.json").read_text()) == good
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == ["step-000004"]


def test_fp16_overflow_steps_count_and_resume_exactly(tmp_path, source, monkeypatch):
    """mixed_float16 steps whose gradients overflow (skipped updates) still count: the run reaches
    max_steps, logs, evaluates and checkpoints on schedule, and resumes exactly (fused XLA loop too)."""

    class HighScale(keras.optimizers.LossScaleOptimizer):  # a real loss-scale optimizer, started too high
        def __init__(self, inner, **kwargs):
            super().__init__(inner, initial_scale=2.0**20, **kwargs)

    monkeypatch.setattr(keras.optimizers, "LossScaleOptimizer", HighScale)
    cfg = tiny_config(max_steps=12, lr_decay_steps=12, precision="mixed_float16", checkpoint_interval=4)
    full = train(cfg, run_dir=tmp_path / "full", source=source, progress=False)
    assert full["step"] == 12 and full["precision"] == "mixed_float16"
    records = train_records(tmp_path / "full")
    assert sorted(records) == list(range(1, 13))
    assert not np.isfinite(records[1]["grad_norm"]) and np.isfinite(records[12]["grad_norm"])
    with np.load(tmp_path / "full/checkpoints/step-000004/train_state.npz") as state:
        scale = [state[f"opt_{i}"] for i, p in enumerate(state["opt_paths"]) if p.endswith("dynamic_scale")]
    assert 0 < float(scale[0]) < 2.0**20  # some updates did overflow and were skipped
    evals = [json.loads(x)["step"] for x in (tmp_path / "full/metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "eval"]
    assert evals == [4, 8, 12]
    fused = ["train.steps_per_execution=4", "train.log_interval=4"]
    part = train(cfg, run_dir=tmp_path / "part", source=source, progress=False,
                 overrides=["train.max_steps=8", *fused])
    assert part["step"] == 8 and part["steps_per_execution"] == 4
    assert json.loads((tmp_path / "part/checkpoints/latest.json").read_text()) == {"step": 8, "dir": "step-000008"}
    resumed = train(None, run_dir=tmp_path / "part", source=source, progress=False, resume=True,
                    overrides=["train.max_steps=12"])
    assert (resumed["start_step"], resumed["step"]) == (8, 12)
    again = train_records(tmp_path / "part")
    assert sorted(again) == [4, 8, 12]
    for step in (4, 8, 12):
        assert again[step]["loss"] == pytest.approx(records[step]["loss"], abs=1e-4), step
        assert again[step]["lr"] == pytest.approx(records[step]["lr"], rel=1e-6), step


def test_fused_steps_match_keras_loop():
    """With XLA and steps_per_execution 4, the fused loop trains exactly as Keras' per-step loop."""
    ids, _ = char_tokens(20000)
    x = np.stack([ids[i * 17:i * 17 + 16] for i in range(32)]).reshape(8, 4, 16)
    y = np.stack([ids[i * 17 + 1:i * 17 + 17] for i in range(32)]).reshape(8, 4, 16)
    results = []
    for fuse in (False, True):
        keras.utils.set_random_seed(0)
        gpt = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32))
        gpt.build((None, 16))
        trainer = GPTTrainer(gpt, grad_clip=1.0, fuse_steps=fuse)
        trainer.compile(optimizer=make_optimizer(TrainConfig(warmup_steps=2, max_steps=8), gpt), jit_compile=True,
                        steps_per_execution=4)
        logs = trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)).repeat(), steps_per_epoch=8, verbose=0).history
        assert trainer._fusable() is fuse
        assert int(trainer.optimizer.iterations.numpy()) == 8
        results.append((logs, [w.numpy() for w in gpt.trainable_weights]))
    (h0, w0), (h1, w1) = results
    np.testing.assert_allclose(h0["loss"], h1["loss"], rtol=1e-5)
    np.testing.assert_allclose(h0["lr"], h1["lr"], rtol=1e-6)
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_gradient_checkpointing_gives_the_same_training(tmp_path, source):
    """Recomputing block activations in the backward pass changes memory, not the numbers."""
    cfg = tiny_config(max_steps=6, checkpoint_interval=6, eval_interval=6)
    plain = train(cfg, run_dir=tmp_path / "plain", source=source, progress=False)
    remat = train(cfg, run_dir=tmp_path / "remat", source=source, progress=False,
                  overrides=["train.gradient_checkpointing=true"])
    a, b = train_records(tmp_path / "plain"), train_records(tmp_path / "remat")
    assert sorted(a) == sorted(b)
    assert max(abs(a[s]["loss"] - b[s]["loss"]) for s in a) <= 1e-4
    assert abs(plain["loss"] - remat["loss"]) <= 1e-4
