"""tfgpt.finetune.prefer: DPO of a tiny char-level run on pairs built from the vendored 30 entries."""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfgpt
from tests.finetune.helpers import InterruptAt, Stop, assert_same_metrics, assert_same_weights, char_tokenizer
from tests.finetune.helpers import tiny_run as tiny_run_dir
from tfgpt.cli import main
from tfgpt.config import read_yaml
from tfgpt.finetune.dpo import pairs_from_instructions
from tfgpt.finetune.instruct import format_example, read_instruction_data
from tfgpt.finetune.prefer import (
    METRICS,
    DPOModel,
    PreferenceBatches,
    encode_preference,
    finetune_prefer,
    preference_batches,
    split_pairs,
)
from tfgpt.generate.chat import instruct_template
from tfgpt.runs import save_run

EPOCHS, BATCH, EVAL_EVERY = 3, 4, 5  # 27 train pairs: 7 steps an epoch, 21 in all
LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def pairs(fixtures_dir):
    return pairs_from_instructions(read_instruction_data(fixtures_dir / "finetune" / "instruction-data-30.json"))


@pytest.fixture(scope="module")
def prefs(pairs, tmp_path_factory):
    path = tmp_path_factory.mktemp("prefs") / "prefs.json"
    path.write_text(json.dumps(pairs))
    return path


@pytest.fixture(scope="module")
def tokenizer(pairs):
    texts = [format_example({**p, "output": p["chosen"]}) for p in pairs]
    return char_tokenizer(texts)


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer):
    return tiny_run_dir(tmp_path_factory.mktemp("base") / "run", tokenizer, 256)


class Capture(keras.callbacks.Callback):
    """The policy's and reference's weights at the end of training, and the policy's logits on ``ids``."""

    def __init__(self, ids: np.ndarray) -> None:
        super().__init__()
        self.ids = ids

    def on_train_end(self, logs=None) -> None:
        self.policy = [np.array(w) for w in self.model.policy.get_weights()]
        self.reference = [np.array(w) for w in self.model.reference.get_weights()]
        self.logits = np.asarray(self.model.policy(self.ids, training=False))


IDS = np.array([[5, 9, 2, 7, 1, 3, 3, 8], [2, 2, 4, 6, 0, 1, 9, 5]], dtype="int32")


@pytest.fixture(scope="module")
def tuned(base, prefs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "dpo"
    capture = Capture(IDS)
    with pytest.warns(UserWarning, match="10 of 30 preference pairs are longer than block_size 256 tokens: "
                                         "truncated to their first 256$"):
        metrics = finetune_prefer(base, prefs, out, beta=1.0, epochs=EPOCHS, batch_size=BATCH, lr=3e-3,
                                  eval_every=EVAL_EVERY, callbacks=[capture])
    return out, metrics, capture


def read_steps(out):
    return [json.loads(line) for line in (out / "logs" / "steps.jsonl").read_text().splitlines()]


def test_split_is_seeded_90_10(pairs):
    train, val = split_pairs(pairs, seed=0)
    assert (len(train), len(val)) == (27, 3)
    assert sorted(map(json.dumps, train + val)) == sorted(map(json.dumps, pairs))
    assert split_pairs(pairs, seed=0) == (train, val) and split_pairs(pairs, seed=1)[0] != train
    assert [len(s) for s in split_pairs(pairs[:1])] == [1, 0]


def test_batch_rows_are_chosen_then_rejected_labelled_on_the_response(pairs, tokenizer):
    batches = PreferenceBatches([encode_preference(p, tokenizer) for p in pairs[:2]], 2, tokenizer.eot_id)
    x, y = batches[0]
    assert x.shape == y.shape and x.shape[0] == 4
    want = [pairs[0]["chosen"], pairs[1]["chosen"], pairs[0]["rejected"], pairs[1]["rejected"]]
    for row, text in zip(y, want, strict=True):
        kept = row[row != -100].tolist()
        assert kept[-1] == tokenizer.eot_id and tokenizer.decode(kept[:-1]) == text


def test_a_prompt_over_block_size_is_named_in_the_warning(pairs, tokenizer):
    parts = {"train": pairs[:3], "val": []}
    with pytest.warns(UserWarning, match=r"3 of 3 preference pairs are longer than block_size 100 tokens: "
                                         r"truncated to their first 100 \(3 of them keep no token of a response"):
        batches = preference_batches(parts, tokenizer, block_size=100, batch_size=3, seed=0)
    x, y = batches["train"][0]
    assert x.shape == (6, 100) and (y == -100).all()


def test_writes_a_loadable_lm_run_with_a_prefer_section(tuned, base, prefs):
    out, metrics, capture = tuned
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "logs", "model.keras", "tokenizer"]
    assert "instruct" not in read_yaml(out / "config.yaml")  # the start was no instruct run
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # the temp sibling is gone
    config = read_yaml(out / "config.yaml")
    assert config["model"] == read_yaml(base / "config.yaml")["model"]
    section = config["prefer"]
    assert (section["beta"], section["trainable"], section["epochs"], section["lr"]) == (1.0, "all", 3, 3e-3)
    assert section["data"] == str(prefs) and section["split"] == {"train": 27, "val": 3}
    assert section["metrics"] == {k: v for k, v in metrics.items() if k != "split"}
    model, tok = tfgpt.load(out)
    assert tok.vocab_size == capture.model.policy.config.vocab_size
    np.testing.assert_allclose(np.asarray(model(IDS)), capture.logits, atol=1e-5)


def test_margin_rises_and_loss_falls_below_log2(tuned):
    out, metrics, _ = tuned
    train = [line for line in read_steps(out) if line["split"] == "train"]
    # the first step is measured before any update: policy = reference
    assert train[0]["margin"] == 0.0 and train[0]["loss"] == pytest.approx(LN2, abs=1e-6)
    last_epoch = train[-7:]
    assert np.mean([r["margin"] for r in last_epoch]) > 0.1  # about 0.2 (beta 1: margin in nats per token)
    assert np.mean([r["loss"] for r in last_epoch]) < LN2 - 0.05  # about 0.60
    assert metrics["val_margin_before"] == 0.0 and metrics["val_loss_before"] == pytest.approx(LN2, abs=1e-6)
    assert metrics["val_accuracy_before"] == 0.0  # margins 0 are not > 0


def test_reference_stays_frozen_and_the_policy_moves(tuned, base):
    _, _, capture = tuned
    start, _ = tfgpt.load(base)
    start_weights = start.get_weights()
    assert len(capture.reference) == len(start_weights)
    for got, want in zip(capture.reference, start_weights, strict=True):
        np.testing.assert_array_equal(got, want)
    moved = [not np.array_equal(got, want) for got, want in zip(capture.policy, start_weights, strict=True)]
    assert all(moved)  # trainable "all": every variable has had an update


def test_per_step_logs_and_tensorboard(tuned):
    out, metrics, _ = tuned
    lines = read_steps(out)
    assert all(set(line) == {"split", "step", "epoch", *METRICS} for line in lines)
    train = [line for line in lines if line["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 22))
    assert [r["epoch"] for r in train] == [0] * 7 + [1] * 7 + [2] * 7
    # val: before training, every 5 steps, and at each epoch end (7, 14, 21), once per step
    val = [line for line in lines if line["split"] == "val"]
    assert [r["step"] for r in val] == [0, 5, 7, 10, 14, 15, 20, 21]
    assert metrics["steps"] == 21 and metrics["val_margin_after"] == val[-1]["margin"]
    assert len((out / "logs" / "metrics.csv").read_text().splitlines()) == 1 + EPOCHS
    for split, count in (("train", 21), ("val", 8)):
        events = [e for f in (out / "logs" / split).iterdir() for e in tf.compat.v1.train.summary_iterator(str(f))]
        steps = [e.step for e in events for v in e.summary.value if v.tag == "margin"]
        assert len(steps) == count


def test_lora_through_the_cli_prints_json_and_saves_merged(base, pairs, tmp_path, capsys):
    prefs = tmp_path / "prefs.json"
    prefs.write_text(json.dumps(pairs[:10]))
    start = save_run(tmp_path / "instructed", *tfgpt.load(base), {"instruct": {"template": "alpaca", "seed": 3}})
    out = tmp_path / "lora"
    argv = ["finetune", "prefer", "--run", str(start), "--data", str(prefs), "--out", str(out), "--trainable", "lora",
            "--lora-rank", "4", "--batch-size", "5", "--lr", "1e-2", "--beta", "0.5", "--eval-every", "0"]
    with pytest.warns(UserWarning, match="of 10 preference pairs are longer than block_size 256"):
        assert main(argv) == 0
    printed, err = capsys.readouterr()
    report = json.loads(printed)  # stdout holds only the JSON result; messages and epochs go to stderr
    assert "trainable parameters: 2,048 of " in err and "epoch 1/1 - " in err
    assert report["split"] == {"train": 9, "val": 1} and report["steps"] == 2
    assert report["trainable_params"] == 4 * 16 * 32  # rank x (in + out) over the 4 Dense layers of 1 block
    model, _ = tfgpt.load(out)
    assert not [v for v in model.weights if "lora" in v.path]
    config = read_yaml(out / "config.yaml")
    assert (config["prefer"]["lora_rank"], config["prefer"]["template"]) == (4, "alpaca")
    assert config["instruct"] == {"template": "alpaca", "seed": 3}  # kept from the start: chat keeps its template
    assert instruct_template(out)("Hi.").endswith("### Instruction:\nHi.\n\n### Response:\n")


def bad_prefs(tmp_path, entry):
    path = tmp_path / "prefs.json"
    good = {"instruction": "a", "input": "", "chosen": "x", "rejected": "y"}
    path.write_text(json.dumps([good, entry]))
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({"entry": {"instruction": "a", "input": "", "chosen": "x", "rejected": "x"}},
     "{data}: entry 1: chosen and rejected are the same"),
    ({"entry": {"instruction": "a", "input": "", "chosen": "x"}}, "{data}: entry 1: missing field 'rejected'"),
    ({"out": "run"}, "--out {run} is the input run: choose a new directory"),
    ({"argv": ["--trainable", "lora", "--lora-rank", "0"]}, "--lora-rank must be a positive integer, got 0"),
    ({"argv": ["--beta", "0"]}, "--beta must be a positive number, got 0.0"),
    ({"argv": ["--eval-every", "-1"]}, "--eval-every must be an integer >= 0, got -1"),
])
def test_bad_input_is_one_line_and_writes_nothing(base, tmp_path, capsys, change, message):
    good = {"instruction": "a", "input": "", "chosen": "x", "rejected": "y"}
    data = bad_prefs(tmp_path, change.get("entry", good))
    out = base if change.get("out") == "run" else tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    base_files = sorted(str(p) for p in base.rglob("*"))
    argv = ["finetune", "prefer", "--run", str(base), "--data", str(data), "--out", str(out), *change.get("argv", [])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"tfgpt finetune: error: {message.format(data=data, run=base)}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert sorted(str(p) for p in base.rglob("*")) == base_files


def test_an_entry_with_a_character_outside_the_vocabulary_names_file_and_entry(base, pairs, tmp_path, capsys):
    data = tmp_path / "prefs.json"
    rows = [dict(p) for p in pairs[:6]]
    rows[3]["rejected"], rows[5]["chosen"] = rows[3]["rejected"] + " §", rows[5]["chosen"] + " ¤"
    data.write_text(json.dumps(rows), encoding="utf-8")
    assert main(["finetune", "prefer", "--run", str(base), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tfgpt finetune: error: {data}: entry 3: 1 character(s) not in the char vocabulary (")
    assert "'§' (U+00A7)" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefs.json"]


def test_a_tokenizer_without_end_of_text_is_refused_saying_which_runs_have_one(pairs, tmp_path, capsys):
    from tfgpt.model import GPT
    from tfgpt.tokenizers import CharTokenizer

    tok = CharTokenizer.train([format_example({**p, "output": p["chosen"] + p["rejected"]}) for p in pairs])
    run = save_run(tmp_path / "run", GPT(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16), tok)
    data = bad_prefs(tmp_path, {"instruction": "b", "input": "", "chosen": "x", "rejected": "y"})
    assert main(["finetune", "prefer", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tfgpt finetune: error: {run}: the tokenizer has no end-of-text token, so responses "
                          "could not end: preference tuning needs one (<|endoftext|>): start from a bpe or gpt2 run")
    assert err.endswith("or a char run prepared from several documents (more than one .txt file, or a .jsonl of "
                        "many), which gets <|endoftext|>\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefs.json", "run"]


def test_a_non_empty_out_is_refused(base, tmp_path, capsys):
    data = bad_prefs(tmp_path, {"instruction": "b", "input": "", "chosen": "x", "rejected": "y"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    argv = ["finetune", "prefer", "--run", str(base), "--data", str(data), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    want = f"tfgpt finetune: error: --out {tmp_path / 'out'} already exists and is not empty\n"
    assert capsys.readouterr().err == want
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


@pytest.fixture(scope="module")
def resumed(tuned, base, prefs, tmp_path_factory):
    """``tuned``'s run again, interrupted before epoch 3 of 3 and resumed: ``(out, metrics, printed)``."""
    out = tmp_path_factory.mktemp("resume") / "dpo"
    args = dict(beta=1.0, epochs=EPOCHS, batch_size=BATCH, lr=3e-3, eval_every=EVAL_EVERY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the pairs over block_size (tested above)
        with pytest.raises(Stop):
            finetune_prefer(base, prefs, out, callbacks=[InterruptAt(2)], **args)
        printed = io.StringIO()
        with contextlib.redirect_stderr(printed):
            metrics = finetune_prefer(base, prefs, out, resume=True, **args)
    return out, metrics, printed.getvalue()


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run(tuned, resumed):
    straight_dir, straight, _ = tuned
    out, metrics, printed = resumed
    assert f"resuming {out.parent / 'dpo.partial'} after epoch 2 of 3 (" in printed
    assert "epoch 3/3 - " in printed and "epoch 2/3 - " not in printed  # only the missing epoch ran
    assert_same_metrics(straight, metrics)
    assert_same_weights(tfgpt.load(straight_dir)[0], tfgpt.load(out)[0])
    # train steps, and val before training, every 5 steps and at the epoch ends: the same lines in both
    assert read_steps(out) == read_steps(straight_dir)
    assert (out / "logs" / "metrics.csv").read_text() == (straight_dir / "logs" / "metrics.csv").read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["dpo"]  # no .partial left


def test_the_dpo_train_step_clips_and_accumulates_in_the_optimizer(base, pairs, tokenizer):
    """DPOModel.train_step hands raw gradients to optimizer.apply, which accumulates and clips: with SGD
    at lr 1, nothing moves on the first micro-batch and the second moves the weights by the clipped mean."""
    policy, _ = tfgpt.load(base)
    model = DPOModel(policy, tfgpt.load(base)[0], beta=1.0)
    sgd = keras.optimizers.SGD(learning_rate=1.0, global_clipnorm=1e-3)
    sgd.gradient_accumulation_steps = 2  # as make_finetune_optimizer sets it
    model.compile(optimizer=sgd, jit_compile=False)
    x, y = PreferenceBatches([encode_preference(p, tokenizer) for p in pairs[:2]], 2, tokenizer.eot_id, max_len=256)[0]
    start = [np.array(w) for w in policy.trainable_weights]
    model.train_on_batch(x, y)
    assert all(np.array_equal(np.array(w), s) for w, s in zip(policy.trainable_weights, start, strict=True))
    model.train_on_batch(x, y)
    step = np.sqrt(sum(((np.array(w) - s) ** 2).sum() for w, s in zip(policy.trainable_weights, start,
                                                                        strict=True)))
    assert step == pytest.approx(1e-3, rel=1e-3)  # the norm of the mean gradient is far above 1e-3
    assert int(sgd.iterations) == 1
