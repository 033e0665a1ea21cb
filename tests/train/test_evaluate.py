"""tfgpt.train.evaluate: LossEstimator (labels, fixed batches, known losses), perplexity, evaluate_run on a run."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest

from tfgpt.config import GPTConfig
from tfgpt.errors import ConfigError, RunDirError
from tfgpt.model.gpt import GPT
from tfgpt.train.data import array_source
from tfgpt.train.evaluate import EVAL_SEED_OFFSET, LossEstimator, evaluate_run, perplexity


def _zero_gpt(vocab: int = 8, block: int = 4) -> GPT:
    """A GPT whose weights are all zero: every logit is 0, so the loss of any batch is log(vocab)."""
    gpt = GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=1, n_head=1, n_embd=8))
    gpt.build((None, block))
    gpt.set_weights([np.zeros_like(w) for w in gpt.get_weights()])
    return gpt


@pytest.fixture(scope="module")
def two_splits():
    return array_source({"main": np.arange(64) % 8, "heldout": (np.arange(64) * 3) % 8})


def test_loss_estimator_labels_its_splits(two_splits):
    est = LossEstimator(_zero_gpt(), two_splits, {"train": "main", "val": "heldout"}, eval_iters=3,
                        batch_size=2, block_size=4, seed=5, jit_compile=False)
    assert sorted(est.batches) == ["train", "val"] and [len(b) for b in est.batches.values()] == [3, 3]
    assert est() == pytest.approx({"train": math.log(8), "val": math.log(8)}, rel=1e-6)
    assert est.tokens_per_split == 3 * 2 * 4
    # the fixed batches are the source's, drawn with the eval seed (not the training seed)
    x0, y0 = next(iter(two_splits("heldout", 2, 4, 5 + EVAL_SEED_OFFSET)))
    np.testing.assert_array_equal(est.batches["val"][0][0], x0)
    np.testing.assert_array_equal(est.batches["val"][0][1], y0)


def test_loss_estimator_list_of_names_and_bad_sizes(two_splits):
    est = LossEstimator(_zero_gpt(), two_splits, ["heldout"], 1, 2, 4, seed=0, jit_compile=False)
    assert list(est()) == ["heldout"]
    for iters, batch in ((0, 2), (2, 0)):
        with pytest.raises(ConfigError, match=f"must be positive, got {iters} and {batch}"):
            LossEstimator(_zero_gpt(), two_splits, ["main"], iters, batch, 4, seed=0)


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(65)) == pytest.approx(65.0)
    assert perplexity(1e6) == math.inf


def test_evaluate_run(run):
    run_dir, summary = run
    out = evaluate_run(run_dir, split="val")
    assert out["split"] == "val" and out["step"] == 8
    assert out["loss"] == pytest.approx(summary["val_loss"], rel=1e-4)
    assert out["perplexity"] == pytest.approx(2.718281828 ** out["loss"], rel=1e-6)
    assert out["tokens"] == 2 * 4 * 16


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
