"""train() on a real DATA_DIR from tfgpt prepare: run dir contract, eval, samples, bad input."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from tests.train.helpers import SHAKESPEARE, tiny_config
from tfgpt.errors import ConfigError, DataError, RunDirError
from tfgpt.train.evaluate import evaluate_run
from tfgpt.train.fit import MemoryWarning, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from tfgpt.data.prepare import prepare

    text = SHAKESPEARE.read_text(encoding="utf-8")  # 64 KiB
    src = tmp_path_factory.mktemp("src") / "shakespeare.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp_path_factory.mktemp("data") / "char"
    prepare([str(src)], str(out), tokenizer="char", val_fraction=0.1, workers=0, progress=False)
    return out


def _vocab(data_dir) -> int:
    return json.loads((data_dir / "manifest.json").read_text())["tokenizer"]["vocab_size"]


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = tiny_config(max_steps=8, sample_tokens=8, steps_per_execution=4, log_interval=4)
    cfg["model"]["vocab_size"] = _vocab(data_dir)
    cfg["data"] = {"tokenizer": "char"}
    cwd = os.getcwd()
    os.chdir(data_dir.parent)  # a data dir given relative to the working directory ...
    try:
        summary = train(cfg, data_dir=data_dir.name, run_dir=run_dir, progress=False)
    finally:
        os.chdir(cwd)  # ... is stored absolute, so eval/resume work from anywhere (tests below)
    return run_dir, summary


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


def test_evaluate_run(run):
    run_dir, summary = run
    out = evaluate_run(run_dir, split="val")
    assert out["split"] == "val" and out["step"] == 8
    assert out["loss"] == pytest.approx(summary["val_loss"], rel=1e-4)
    assert out["perplexity"] == pytest.approx(2.718281828 ** out["loss"], rel=1e-6)
    assert out["tokens"] == 2 * 4 * 16


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
    with pytest.raises(ConfigError, match=f"tokenizer has {_vocab(data_dir)} tokens"):
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


@pytest.fixture(scope="module")
def resumed(run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resumed") / "copy"
    shutil.copytree(run[0], run_dir)
    return run_dir, train(None, run_dir=run_dir, resume=True, progress=False, overrides=["train.max_steps=12"])


def test_resume_with_data_dir(resumed):
    assert (resumed[1]["start_step"], resumed[1]["step"]) == (8, 12)


def test_eval_scores_the_weights_load_uses(run, resumed, tmp_path):
    """A stale model.keras (older than the latest checkpoint, as after an interrupted resume) is not
    what eval scores; an explicit checkpoint may be a step dir name or a path, its step from its state."""
    import numpy as np

    import tfgpt
    from tfgpt.runs import weights_path

    run_dir = tmp_path / "stale"
    shutil.copytree(resumed[0], run_dir)
    shutil.copy(run[0] / "model.keras", run_dir / "model.keras")  # the step-8 model
    old = (run_dir / "checkpoints/step-000012/model.weights.h5").stat().st_mtime - 60
    os.utime(run_dir / "model.keras", (old, old))
    at8 = evaluate_run(run[0], eval_iters=1)
    assert (at8["step"], at8["weights"]) == (8, str(run[0] / "model.keras"))
    out = evaluate_run(run_dir, eval_iters=1)
    assert out["step"] == 12 and out["weights"] == str(weights_path(run_dir))
    assert out["loss"] == evaluate_run(run_dir, eval_iters=1, checkpoint="latest")["loss"] != at8["loss"]
    model, _ = tfgpt.load(run_dir)
    ids = np.arange(16, dtype="int32")[None]
    scored = tfgpt.load(run_dir, checkpoint="step-000012")[0]
    np.testing.assert_array_equal(np.asarray(model(ids)), np.asarray(scored(ids)))
    elsewhere = shutil.copytree(run_dir / "checkpoints/step-000008", tmp_path / "saved-ckpt")
    for ckpt in (str(elsewhere), "step-000008", str(elsewhere / "model.weights.h5")):
        got = evaluate_run(run_dir, eval_iters=1, checkpoint=ckpt)
        assert got["step"] == 8 and got["loss"] == pytest.approx(at8["loss"], abs=1e-6), ckpt
    with pytest.raises(RunDirError, match="checkpoint not found"):
        evaluate_run(run_dir, checkpoint=str(tmp_path / "nowhere"))


@pytest.mark.parametrize("iters", ["-1", "0"])
def test_eval_refuses_non_positive_iters(run, iters, capsys):
    from tfgpt.cli import main

    assert main(["eval", "--run", str(run[0]), "--eval-iters", iters]) == 2
    err = capsys.readouterr().err
    assert f"--eval-iters must be a positive number of batches, got {iters}" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="--eval-iters"):
        evaluate_run(run[0], eval_iters=int(iters))
    assert evaluate_run(run[0], eval_iters=1)["batches"] == 1
