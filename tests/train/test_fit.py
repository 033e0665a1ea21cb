"""tfgpt.train.fit: train() end to end: the run dir contract, exact resume, checkpoints, the NaN stop, bad input."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import yaml

from tests.train.helpers import char_tokens, tiny_config, train_records
from tfgpt.errors import ConfigError, DataError, RunDirError
from tfgpt.train.data import array_source
from tfgpt.train.fit import MemoryWarning, NonFiniteLossError, train


def vocab_of(data_dir) -> int:
    return json.loads((data_dir / "manifest.json").read_text())["tokenizer"]["vocab_size"]


@pytest.fixture(scope="module")
def source():
    ids, _ = char_tokens()
    return array_source({"train": ids[:50000], "val": ids[50000:]})


def test_resume_is_exact(tmp_path, source, capsys):
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
    err = capsys.readouterr().err
    assert f"resuming {tmp_path / 'part'} from step 10 (checkpoint {tmp_path / 'part/checkpoints/step-000010'})" in err
    assert "schedule changed" not in err  # lr_decay_steps is fixed, so the curve is the same
    assert "optimizer settings changed" not in err
    a, b = train_records(tmp_path / "full"), train_records(tmp_path / "part")
    assert sorted(a) == sorted(b) == list(range(1, 21))
    diff = max(abs(a[s]["loss"] - b[s]["loss"]) for s in a)
    assert diff <= 1e-5, diff
    assert max(abs(a[s]["lr"] - b[s]["lr"]) for s in a) <= 1e-9
    assert full["weights_sha256"] == resumed["weights_sha256"]


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
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {}
    for run in ("train", "val"):
        acc = EventAccumulator(str(tmp_path / "r" / "logs" / run))
        acc.Reload()
        tags[run] = set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])
    # eval/loss and eval/perplexity in both runs overlay train and val; per-step loss only in train
    assert tags["val"] == {"eval/loss", "eval/perplexity"}
    assert {"loss", "eval/loss", "eval/perplexity", "learning_rate"} <= tags["train"]


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


def test_run_dir_contract(run, data_dir):
    run_dir, summary = run
    assert summary["step"] == 8 and summary["path"] == "fit" and summary["steps_per_execution"] == 4
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert set(saved) == {"model", "train", "data"} and saved["data"]["dir"] == str(data_dir)
    assert (run_dir / "tokenizer" / "tokenizer.json").read_text() == (data_dir / "tokenizer/tokenizer.json").read_text()
    assert json.loads((run_dir / "checkpoints/latest.json").read_text()) == {"step": 8, "dir": "step-000008"}
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [4, 8]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [4, 8]
    assert all(isinstance(r.get("sample"), str) for r in evals)
    train_rec = records[-2] if records[-1]["kind"] == "eval" else records[-1]
    for key in ("loss", "lr", "grad_norm", "tokens_per_sec", "mfu"):
        assert train_rec[key] > 0, key
    import tfgpt

    model, tokenizer = tfgpt.load(run_dir)
    assert model.config.vocab_size == tokenizer.vocab_size


def test_bad_input(run, data_dir, tmp_path):
    run_dir, _ = run
    with pytest.raises(DataError, match="data directory .*missing does not exist"):
        train(tiny_config(), data_dir=tmp_path / "missing", run_dir=tmp_path / "r1", progress=False)
    cfg = tiny_config()
    cfg["data"] = {"tokenizer": "gpt2"}
    with pytest.raises(DataError, match="built with the 'char' tokenizer.*expects 'gpt2'"):
        train(cfg, data_dir=data_dir, run_dir=tmp_path / "r2", progress=False)
    with pytest.raises(ConfigError, match="unknown key 'n_layers'"):
        train(tiny_config(), data_dir=data_dir, run_dir=tmp_path / "r3", overrides=["model.n_layers=2"])
    small = tiny_config()
    small["model"]["vocab_size"] = 10
    with pytest.raises(ConfigError, match=f"tokenizer has {vocab_of(data_dir)} tokens"):
        train(small, data_dir=data_dir, run_dir=tmp_path / "r4", progress=False)
    with pytest.raises(ConfigError, match="model shape changed.*n_embd: 32 -> 64"):
        train(None, run_dir=run_dir, resume=True, overrides=["model.n_embd=64", "train.max_steps=20"])
    with pytest.raises(RunDirError, match="already holds a run"):
        train(tiny_config(), data_dir=data_dir, run_dir=run_dir, progress=False)
    with pytest.raises(RunDirError, match="not a run dir"):
        train(tiny_config(), run_dir=tmp_path / "nothing", resume=True)
    huge = {"model": {"preset": "gpt2-xl"}, "train": {"batch_size": 512}}
    missing = "data directory .*missing does not exist"
    with pytest.warns(MemoryWarning, match="GiB"), pytest.raises(DataError, match=missing):
        train(huge, data_dir=tmp_path / "missing", run_dir=tmp_path / "r5")
    with pytest.raises(ConfigError, match="GiB"):
        train(huge, data_dir=tmp_path / "missing", run_dir=tmp_path / "r6", overrides=["train.memory_check=error"])


def test_a_corrupt_shard_is_named_not_a_tensorflow_traceback(run, data_dir, tmp_path):
    """One flipped byte mid-shard: train and eval stop with a DataError naming the shard (the
    manifest's sha256 finds it), not a DataLossError from inside the input pipeline."""
    import shutil

    from tfgpt.train.evaluate import evaluate_run

    bad = tmp_path / "data"
    shutil.copytree(data_dir, bad)
    shard = next(bad.glob("train-*.tfrecord"))
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=f"shard {shard} is corrupt: sha256"):
        train(tiny_config(), data_dir=bad, run_dir=tmp_path / "r", progress=False)
    with pytest.raises(DataError, match=f"shard {shard} is corrupt: sha256"):
        evaluate_run(run[0], split="train", data_dir=bad)


def test_resume_with_data_dir(resumed):
    assert (resumed[1]["start_step"], resumed[1]["step"]) == (8, 12)


def test_a_run_killed_after_its_last_checkpoint_is_finished_by_resume(run, tmp_path, capsys):
    """A SIGKILL between the last checkpoint and model.keras (a ~50 ms window, tests/train/test_kills.py)
    left a run that --resume refused ("the run is at step 8, train.max_steps is 8; raise it"), and the temp
    file of the model.keras write: now --resume writes model.keras from that checkpoint, removes the temp
    files killed starts left in the run dir, and trains nothing. A finished run still refuses."""
    import shutil

    run_dir = tmp_path / "killed"
    shutil.copytree(run[0], run_dir)
    (run_dir / "model.keras").unlink()  # what the kill leaves: latest.json at max_steps, no model.keras ...
    (run_dir / ".model.keras.0123456789ab.tmp.keras").write_bytes(b"PK\x03\x04 half a zip")  # ... but its temp
    (run_dir / ".metrics.jsonl.0123456789ab.tmp").write_text('{"kind": "tr')  # and other starts' temps
    (run_dir / ".tokenizer.0123456789ab").mkdir()
    out = train(None, run_dir=run_dir, resume=True, progress=False)
    assert not list(run_dir.glob(".*")), "the dead starts' temp files are left"
    assert (out["start_step"], out["step"]) == (8, 8) and out["weights_sha256"] == run[1]["weights_sha256"]
    assert out["val_loss"] == pytest.approx(run[1]["val_loss"]) and out["loss"] == pytest.approx(run[1]["loss"])
    assert f"{run_dir} is at step 8 of 8: nothing left to train; writing model.keras" in capsys.readouterr().err
    import tfgpt

    model, _ = tfgpt.load(run_dir)
    assert [w.tolist() for w in model.get_weights()] == [w.tolist() for w in tfgpt.load(run[0])[0].get_weights()]
    assert train_records(run_dir) == train_records(run[0])  # nothing re-logged
    with pytest.raises(ConfigError, match="the run is at step 8, train.max_steps is 8; raise it"):
        train(None, run_dir=run_dir, resume=True, progress=False)


def test_the_run_dirs_tokenizer_is_staged_then_renamed(run, tmp_path):
    """Each start copies the data dir's tokenizer/ into the run dir. It was copied in place (copytree), so a
    kill mid-copy left half a tokenizer there, which every later --resume refused to load: the run was stuck.
    Now it is staged in a hidden dir and renamed into place (watched here through audit events: nothing under
    RUN/tokenizer/ is opened for writing), so RUN/tokenizer is whole or absent (the next start copies it)."""
    import shutil
    import sys

    run_dir = tmp_path / "r"
    shutil.copytree(run[0], run_dir)
    (run_dir / "model.keras").unlink()  # the quickest start that writes the run dir: nothing to train
    seen: list = []
    recording = [True]

    def hook(event, args):
        if recording[0] and event in ("open", "os.rename"):
            seen.append((event, args))

    sys.addaudithook(hook)  # hooks cannot be removed: this one stops recording after the call below
    try:
        train(None, run_dir=run_dir, resume=True, progress=False)
    finally:
        recording[0] = False
    tok = str(run_dir / "tokenizer")
    written = [str(a[0]) for e, a in seen if e == "open" and isinstance(a[1], str) and set(a[1]) & set("wax+")]
    assert not [p for p in written if p.startswith(tok + "/")], "RUN/tokenizer/ written in place"
    assert any(e == "os.rename" and str(a[1]) == tok for e, a in seen), "no rename into RUN/tokenizer"
    assert (run_dir / "tokenizer/tokenizer.json").read_text() == (run[0] / "tokenizer/tokenizer.json").read_text()
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []  # no stage left


def _signal_after_first_record(run_dir, signum):
    """From a thread: wait until training logged a step, then send ``signum`` to this process."""
    import os
    import threading
    import time

    def fire():
        deadline = time.time() + 120
        while time.time() < deadline and not train_records_exist(run_dir):
            time.sleep(0.05)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


def train_records_exist(run_dir) -> bool:
    path = run_dir / "metrics.jsonl"
    return path.is_file() and '"kind": "train"' in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_checkpoints_the_step_and_says_how_to_resume(tmp_path, data_dir, signame, capsys):
    """SIGINT/SIGTERM during `tfgpt train`: the step in flight finishes, a checkpoint is written,
    the exact resume command is printed, the exit status is 128 + signal; --resume then finishes."""
    import signal

    from tfgpt.cli import main

    signum = getattr(signal, signame)
    cfg = tiny_config(max_steps=400, log_interval=1, eval_interval=1000, checkpoint_interval=1000)
    cfg["model"]["vocab_size"] = vocab_of(data_dir)
    cfg["data"] = {"tokenizer": "char"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    run_dir = tmp_path / "run"
    args = ["train", "--config", str(tmp_path / "c.yaml"), "--data", str(data_dir), "--run-dir", str(run_dir)]
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)  # SIG_IGN in a background job
    thread = _signal_after_first_record(run_dir, signum)
    assert main(args) == 128 + signum
    thread.join(5)
    err = capsys.readouterr().err
    latest = json.loads((run_dir / "checkpoints/latest.json").read_text())
    assert 0 < latest["step"] < 400  # stopped early, at a step boundary, checkpoint interval or not
    assert f"{signame} at step {latest['step']} of 400: checkpoint {run_dir / 'checkpoints' / latest['dir']}" in err
    assert f"resume with: tfgpt train --run-dir {run_dir} --resume" in err and "Traceback" not in err
    assert not (run_dir / "model.keras").exists()  # an interrupted run has no final model yet
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers restored
    if signame == "SIGTERM":
        assert main(["train", "--run-dir", str(run_dir), "--resume", "--set", "train.max_steps=" +
                     str(latest["step"] + 4)]) == 0
        assert f"resuming {run_dir} from step {latest['step']}" in capsys.readouterr().err
        assert (run_dir / "model.keras").is_file()


def test_mfu_is_against_the_stated_peak(tmp_path, source):
    from tfgpt.config import GPTConfig
    from tfgpt.train.perf import flops_per_token

    cfg = tiny_config(max_steps=4, log_interval=2, eval_interval=4)
    summary = train(cfg, run_dir=tmp_path / "r", source=source, progress=False, overrides=["train.peak_tflops=0.5"])
    assert (summary["peak_flops"], summary["peak_source"]) == (0.5e12, "train.peak_tflops")
    per_token = flops_per_token(GPTConfig(**cfg["model"]), cfg["model"]["block_size"])
    for rec in train_records(tmp_path / "r").values():
        assert rec["mfu"] == pytest.approx(rec["tokens_per_sec"] * per_token / 0.5e12, rel=1e-9)
