"""tfgpt.train.evaluate: LossEstimator (labels, fixed batches, known losses), perplexity, evaluate_run on a run."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest

from tfgpt.config import GPTConfig
from tfgpt.errors import ConfigError, DataError, RunDirError
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


def test_eval_says_when_windows_read_more_than_the_split(run, capsys):
    from tfgpt.cli import main
    from tfgpt.config import read_yaml
    from tfgpt.data.manifest import load_manifest

    run_dir = run[0]
    data_dir = read_yaml(run_dir / "config.yaml")["data"]["dir"]
    split_tokens = load_manifest(data_dir)["splits"]["val"]["tokens"]
    iters = split_tokens // (4 * 16) + 2  # more windows than the split has tokens
    out = evaluate_run(run_dir, split="val", eval_iters=iters)
    assert out["split_tokens"] == split_tokens and out["tokens"] == iters * 4 * 16 > split_tokens
    assert out["note"].startswith(f"read {iters * 64:,} tokens from a {split_tokens:,}-token split")
    assert "note" not in evaluate_run(run_dir, split="val", eval_iters=1)
    assert main(["eval", "--run", str(run_dir), "--eval-iters", str(iters)]) == 0
    assert "tfgpt eval: note: read" in capsys.readouterr().err
    with pytest.raises(DataError, match="has no split 'test'; it has train, val"):
        evaluate_run(run_dir, split="test")


def test_eval_refuses_data_made_with_another_tokenizer(run, tmp_path):
    """Another tokenizer's ids would index past the model's vocabulary (a NaN loss, exit 0): refused."""
    from tfgpt.data.prepare import prepare

    (tmp_path / "other.txt").write_text("an entirely different alphabet: xyz 0123456789\n" * 200)
    prepare([str(tmp_path / "other.txt")], str(tmp_path / "other"), "char", val_fraction=0.2, workers=0,
            progress=False)
    with pytest.raises(DataError, match="was prepared with another tokenizer"):
        evaluate_run(run[0], data_dir=tmp_path / "other")


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


# -- evaluate_text: perplexity of a text file ------------------------------------------------

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A run of a random 1-layer GPT (block 8) with a char tokenizer over TEXT's characters."""
    import keras

    from tfgpt.runs import save_run
    from tfgpt.tokenizers import CharTokenizer

    keras.utils.set_random_seed(3)
    tokenizer = CharTokenizer.train([TEXT])
    gpt = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16))
    gpt.build((None, 8))
    return save_run(tmp_path_factory.mktemp("text-run") / "run", gpt, tokenizer), gpt, tokenizer


def _numpy_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-position cross-entropy in float64 with NumPy: logsumexp(logits) - logits[target]."""
    logits = logits.astype(np.float64)
    top = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    return lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0]


def _write(tmp_path, text, name="t.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_text_windows_score_every_target_once():
    from tfgpt.train.evaluate import text_windows

    for n, block, stride in ((10, 4, 4), (10, 4, 1), (10, 4, 3), (3, 8, 8), (16, 4, 4), (1, 4, 2)):
        windows = text_windows(n, block, stride)
        length = min(block, n)
        scored = [b + j for b, first in windows for j in range(first, length)]
        assert scored == list(range(n)), (n, block, stride)
        assert all(0 <= b <= n - length for b, _ in windows)
    assert text_windows(16, 4, 4) == [(0, 0), (4, 0), (8, 0), (12, 0)]
    with pytest.raises(ConfigError, match="--stride must be between 1 and the block size 4, got 5"):
        text_windows(10, 4, 5)


def test_evaluate_text_zero_model_is_log_vocab(tmp_path):
    """All logits 0: every prediction costs log(vocab), whatever the windows."""
    from tfgpt.runs import save_run
    from tfgpt.tokenizers import CharTokenizer
    from tfgpt.train.evaluate import evaluate_text

    tokenizer = CharTokenizer.train([TEXT])
    run = save_run(tmp_path / "zero", _zero_gpt(vocab=tokenizer.vocab_size, block=8), tokenizer)
    out = evaluate_text(run, _write(tmp_path, TEXT), stride=3)
    assert out["loss"] == pytest.approx(math.log(tokenizer.vocab_size), rel=1e-6)
    assert out["tokens"] == len(TEXT) - 1 and out["stride"] == 3 and out["block_size"] == 8


def test_evaluate_text_reads_the_file_as_prepare_does(text_run, tmp_path):
    """A BOM, CRLF line endings and a NUL (prepare drops or normalises all three): scored as the
    clean text is, not refused as characters the char vocabulary lacks; a truly unknown one names the file."""
    from tfgpt.errors import TokenizerError
    from tfgpt.train.evaluate import evaluate_text

    run, _, _ = text_run
    messy = tmp_path / "messy.txt"
    messy.write_bytes(b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode() + b"\x00")
    clean = evaluate_text(run, _write(tmp_path, TEXT))
    assert {k: v for k, v in evaluate_text(run, messy).items() if k != "file"} == {
        k: v for k, v in clean.items() if k != "file"}
    with pytest.raises(TokenizerError, match=f"^{_write(tmp_path, 'To be ✓', 'odd.txt')}: 1 character"):
        evaluate_text(run, tmp_path / "odd.txt")


def test_evaluate_text_matches_numpy_cross_entropy(text_run, tmp_path):
    """Default (non-overlapping windows) and stride 1 (every prediction sees min(8, t+1) tokens),
    each against NumPy cross-entropy over the model's own logits on the same contexts."""
    from tfgpt.train.evaluate import evaluate_text

    run, gpt, tokenizer = text_run
    text = TEXT[:33]  # 33 chars = 32 targets = 4 full windows of 8
    ids = np.asarray(tokenizer.encode(text), dtype="int32")
    x, y = ids[:-1].reshape(4, 8), ids[1:].reshape(4, 8)  # [windows, block]
    expect = _numpy_nll(np.asarray(gpt(x)), y).mean()
    out = evaluate_text(run, _write(tmp_path, text))
    assert (out["tokens"], out["windows"], out["stride"]) == (32, 4, 8)
    assert out["loss"] == pytest.approx(expect, rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(expect), rel=1e-5)
    assert out["file"] == str(tmp_path / "t.txt") and out["weights"] == str(run / "model.keras")

    per_target = [
        _numpy_nll(np.asarray(gpt(ids[None, max(0, t - 7):t + 1]))[0, -1], ids[t + 1])
        for t in range(len(ids) - 1)
    ]
    sliding = evaluate_text(run, _write(tmp_path, text), stride=1, batch_size=3)
    assert sliding["loss"] == pytest.approx(float(np.mean(per_target)), rel=1e-5)
    assert sliding["windows"] == 32 - 8 + 1


def test_evaluate_text_short_file_is_one_window(text_run, tmp_path):
    from tfgpt.train.evaluate import evaluate_text

    run, gpt, tokenizer = text_run
    ids = np.asarray(tokenizer.encode("To be"), dtype="int32")
    expect = _numpy_nll(np.asarray(gpt(ids[None, :-1]))[0], ids[1:]).mean()
    out = evaluate_text(run, _write(tmp_path, "To be"))
    assert (out["tokens"], out["windows"]) == (4, 1)
    assert out["loss"] == pytest.approx(expect, rel=1e-5)


def test_eval_text_cli(text_run, tmp_path, capsys):
    import json

    from tfgpt.cli import main
    from tfgpt.train.evaluate import evaluate_text

    run = text_run[0]
    path = _write(tmp_path, TEXT)
    assert main(["eval", "--run", str(run), "--text", str(path), "--stride", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == json.loads(json.dumps(evaluate_text(run, path, stride=4)))
    for extra in (["--data", str(tmp_path)], ["--eval-iters", "2"]):
        assert main(["eval", "--run", str(run), "--text", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert f"--text FILE scores that file; it takes no {extra[0]}" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:  # argparse: --split and --text exclude each other
        main(["eval", "--run", str(run), "--text", str(path), "--split", "train"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(["eval", "--run", str(run), "--stride", "4"]) == 2
    assert "--stride applies to --text FILE only" in capsys.readouterr().err


def test_eval_quantized_scores_int8_weights(text_run, tmp_path, capsys):
    """--quantize int8: the int8 model's perplexity, recorded as such, near the float one (a random model)."""
    import json

    from tfgpt.cli import main
    from tfgpt.model.quantize import quantize_dense
    from tfgpt.train.evaluate import evaluate_text, score_ids

    run, gpt, tokenizer = text_run
    path = _write(tmp_path, TEXT * 3)
    plain = evaluate_text(run, path)
    assert main(["eval", "--run", str(run), "--text", str(path), "--quantize", "int8"]) == 0
    q = json.loads(capsys.readouterr().out)
    assert q["quantize"] == "int8" and "quantize" not in plain
    model = GPT(gpt.config)
    model.build((None, None))
    model.set_weights(gpt.get_weights())
    quantize_dense(model)
    total, count, _ = score_ids(model, tokenizer.encode(TEXT * 3), 8, 4)
    assert q["loss"] == pytest.approx(total / count, rel=1e-5) and q["loss"] != plain["loss"]
    assert q["perplexity"] == pytest.approx(plain["perplexity"], rel=0.02)


def test_eval_text_bad_files(text_run, tmp_path, capsys):
    from tfgpt.cli import main
    from tfgpt.errors import DataError
    from tfgpt.train.evaluate import evaluate_text

    run = text_run[0]
    bad_utf8 = tmp_path / "latin1.txt"
    bad_utf8.write_bytes(b"To be, caf" + "é".encode("latin-1"))
    cases = {
        tmp_path / "missing.txt": f"text file not found: {tmp_path / 'missing.txt'}",
        _write(tmp_path, "", "empty.txt"): f"{tmp_path / 'empty.txt'} is empty: nothing to score",
        _write(tmp_path, "  \n", "blank.txt"): f"{tmp_path / 'blank.txt'} is empty",
        bad_utf8: f"{bad_utf8} is not UTF-8 text: byte 10 (b'\\xe9') cannot be decoded",
        tmp_path: f"{tmp_path} is not a file",
        _write(tmp_path, "T", "one.txt"): f"{tmp_path / 'one.txt'} has 1 token(s); at least 2 are needed",
    }
    for path, message in cases.items():
        with pytest.raises(DataError) as info:
            evaluate_text(run, path)
        assert message in str(info.value)
        assert main(["eval", "--run", str(run), "--text", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="--stride must be between 1 and the block size 8, got 0"):
        evaluate_text(run, _write(tmp_path, TEXT), stride=0)
    with pytest.raises(RunDirError, match="not a run dir|run directory not found"):
        evaluate_text(tmp_path / "no-run", _write(tmp_path, TEXT))
