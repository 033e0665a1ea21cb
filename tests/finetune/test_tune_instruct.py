"""tfgpt.finetune.tune_instruct: instruction-tune a tiny char-level run on the vendored 30 entries."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import keras
import numpy as np
import pytest

import tfgpt
from tests.finetune.helpers import Grab, InterruptAt, Stop, assert_same_metrics, assert_same_weights, char_tokenizer
from tests.finetune.helpers import tiny_run as tiny_run_dir
from tfgpt.cli import main
from tfgpt.config import read_yaml
from tfgpt.errors import ConfigError, DataError
from tfgpt.finetune.instruct import encode_entry, format_example, format_prompt, read_instruction_data
from tfgpt.finetune.scores import score_responses
from tfgpt.finetune.tune_instruct import (
    InstructBatches,
    MaskedLMLoss,
    finetune_instruct,
    generate_responses,
    split_entries,
)
from tfgpt.model.gpt import GPT
from tfgpt.runs import save_run
from tfgpt.tokenizers.char import CharTokenizer

NEW_TOKENS = 12


@pytest.fixture(scope="module")
def data(fixtures_dir):
    return fixtures_dir / "finetune" / "instruction-data-30.json"


@pytest.fixture(scope="module")
def entries(data):
    return read_instruction_data(data)


@pytest.fixture(scope="module")
def tokenizer(entries):
    return char_tokenizer([format_example(e) for e in entries])


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer):
    return tiny_run_dir(tmp_path_factory.mktemp("base") / "run", tokenizer, 256)


@pytest.fixture(scope="module")
def tuned(base, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "instruct"
    with pytest.warns(UserWarning, match="9 of 30 examples are longer than block_size 256 tokens: truncated"):
        metrics = finetune_instruct(base, data, out, epochs=4, batch_size=8, lr=3e-3, max_new_tokens=NEW_TOKENS)
    return out, metrics


def test_split_is_seeded_85_10_5(entries):
    train, val, test = split_entries(entries, seed=0)
    assert (len(train), len(val), len(test)) == (25, 2, 3)
    assert sorted(map(json.dumps, train + val + test)) == sorted(map(json.dumps, entries))
    assert split_entries(entries, seed=0) == (train, val, test)
    assert split_entries(entries, seed=1)[0] != train


@pytest.mark.slow
def test_writes_a_loadable_lm_run_with_responses(tuned, base, data, entries):
    out, metrics = tuned
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "logs", "model.keras", "responses.json",
                                                     "tokenizer"]
    config = read_yaml(out / "config.yaml")
    assert config["model"] == read_yaml(base / "config.yaml")["model"]
    section = config["instruct"]
    assert (section["template"], section["mask_prompt"], section["trainable"]) == ("alpaca", True, "all")
    assert section["data"] == str(data) and section["split"] == {"train": 25, "val": 2, "test": 3}
    assert section["metrics"]["val_loss_after"] == metrics["val_loss_after"]
    model, tok = tfgpt.load(out)
    rows = json.loads((out / "responses.json").read_text())
    _, _, test = split_entries(entries, seed=0)
    assert [sorted(r) for r in rows] == [["input", "instruction", "model_response", "output"]] * 3
    assert [{k: r[k] for k in ("instruction", "input", "output")} for r in rows] == test
    # greedy, KV-cached, stopped at end-of-text: what tfgpt.generate gives from the saved run
    expected = [tfgpt.generate(model, tok, format_prompt(e), max_new_tokens=NEW_TOKENS, temperature=0).strip()
                for e in test]
    assert [r["model_response"] for r in rows] == expected
    scores = score_responses(expected, [e["output"] for e in test])
    assert (metrics["rouge_l_after"], metrics["bleu_after"]) == (scores["rouge_l"], scores["bleu"])
    header = (out / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == ["epoch", "loss", "val_loss"]
    assert list((out / "logs").rglob("events.out.tfevents.*"))


def test_val_loss_falls_on_a_tiny_overfit(tuned):
    _, metrics = tuned
    assert metrics["val_loss_after"] < metrics["val_loss_before"] - 0.2
    assert metrics["val_response_loss_after"] == metrics["val_loss_after"]  # masked: the same tokens
    assert {"rouge_l_before", "bleu_before", "tokens_per_s", "train_tokens"} <= set(metrics)


def test_tokens_counted_are_the_unpadded_inputs(tuned, entries):
    _, metrics = tuned
    train, _, _ = split_entries(entries, seed=0)
    # char-level: prompt + response + eot, shifted by one, is len(text) inputs (truncated to 256)
    assert metrics["train_tokens"] == 4 * sum(min(len(format_example(e)), 256) for e in train)
    assert metrics["tokens_per_s"] > 0


def test_batches_pad_to_each_batchs_longest_and_reshuffle(entries, tokenizer):
    pairs = [encode_entry(e, tokenizer) for e in entries[:10]]
    length = [len(p) + len(r) for p, r in pairs]  # inputs: prompt + response + eot, less the last
    batches = InstructBatches(pairs, batch_size=4, pad_id=tokenizer.eot_id, seed=0)
    orders = []
    for _ in range(2):
        one = list(batches())
        orders.append(batches.order.tolist())
        assert sorted(orders[-1]) == list(range(10))
        assert [x.shape for x, _ in one] == [(n, max(length[i] for i in orders[-1][k:k + 4]))
                                             for n, k in ((4, 0), (4, 4), (2, 8))]
    assert orders[0] != orders[1]  # a new seeded order each pass
    assert InstructBatches(pairs, 4, tokenizer.eot_id, seed=0)().__next__()[0].shape[0] == 4
    assert list(InstructBatches(pairs, 4, tokenizer.eot_id, seed=0).__call__())[0][1].tolist() == \
        InstructBatches(pairs, 4, tokenizer.eot_id, seed=0).__call__().__next__()[1].tolist()
    plain = InstructBatches(pairs, 4, tokenizer.eot_id)
    ds = [(x.numpy(), y.numpy()) for x, y in plain.dataset()]
    assert [x.shape[1] for x, _ in ds] == [max(length[0:4]), max(length[4:8]), max(length[8:10])]
    assert all(np.array_equal(x, plain[i][0]) and np.array_equal(y, plain[i][1]) for i, (x, y) in enumerate(ds))


def test_prompt_tokens_contribute_exactly_zero_and_unmasked_differs(entries, tokenizer):
    pairs = [encode_entry(e, tokenizer) for e in entries[:3]]
    x, y = InstructBatches(pairs, 3, tokenizer.eot_id)[0]
    _, y_all = InstructBatches(pairs, 3, tokenizer.eot_id, mask_prompt=False)[0]
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(*x.shape, tokenizer.vocab_size)).astype("float32")
    # by hand: the labels of row b are its response and one end-of-text, from position len(prompt) - 1
    expected, count = 0.0, 0
    for b, (prompt, response) in enumerate(pairs):
        for t, target in enumerate(response + [tokenizer.eot_id], start=len(prompt) - 1):
            z = logits[b, t].astype(np.float64)
            expected += np.log(np.exp(z - z.max()).sum()) + z.max() - z[target]
            count += 1
    loss = float(MaskedLMLoss()(y, logits))
    assert loss == pytest.approx(expected / count, abs=1e-5)
    changed = logits.copy()
    for b, (prompt, _) in enumerate(pairs):
        changed[b, : len(prompt) - 1] = rng.normal(size=(len(prompt) - 1, tokenizer.vocab_size)) * 50
    assert float(MaskedLMLoss()(y, changed)) == loss  # prompt positions: exactly zero weight
    assert float(MaskedLMLoss()(y_all, changed)) != float(MaskedLMLoss()(y_all, logits))


def test_refuses_out_equal_to_run_and_a_non_empty_out_before_reading(base, tmp_path):
    with pytest.raises(ConfigError, match="is the input run"):
        finetune_instruct(base, tmp_path / "missing.json", base)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        finetune_instruct(base, tmp_path / "missing.json", tmp_path / "full")


@pytest.mark.parametrize("rank", [0, -2])
def test_refuses_a_lora_rank_not_positive(base, data, tmp_path, rank):
    with pytest.raises(ConfigError, match=f"--lora-rank must be a positive integer, got {rank}"):
        finetune_instruct(base, data, tmp_path / "out", trainable="lora", lora_rank=rank)
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_tokenizer_without_end_of_text(tmp_path, data, entries):
    tok = CharTokenizer.train([format_example(e) for e in entries])
    gpt = GPT(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)
    run = save_run(tmp_path / "run", gpt, tok)
    with pytest.raises(DataError, match="no end-of-text token") as caught:
        finetune_instruct(run, data, tmp_path / "out")
    assert str(caught.value).endswith(  # the message says which runs have one
        "instruction tuning needs one (<|endoftext|>): start from a bpe or gpt2 run (tfgpt import-gpt2, or tfgpt "
        "prepare --tokenizer bpe|gpt2), or a char run prepared from several documents (more than one .txt file, "
        "or a .jsonl of many), which gets <|endoftext|>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_cli_names_a_missing_field_in_one_line(base, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": ""}]))
    code = main(["finetune", "instruct", "--run", str(base), "--data", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"tfgpt finetune: error: {bad}: entry 1: missing field 'output'\n"
    assert not (tmp_path / "o").exists()
    code = main(["finetune", "instruct", "--run", str(base), "--data", str(bad), "--out", str(tmp_path / "o"),
                 "--trainable", "lora", "--lora-rank", "0"])
    assert code == 2 and capsys.readouterr().err.endswith("--lora-rank must be a positive integer, got 0\n")


def test_an_entry_with_a_character_outside_the_vocabulary_names_file_and_entry(base, entries, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    rows = [dict(e) for e in entries[:6]]
    rows[2]["output"], rows[4]["instruction"] = rows[2]["output"] + " §", "¤ " + rows[4]["instruction"]
    bad.write_text(json.dumps(rows), encoding="utf-8")
    code = main(["finetune", "instruct", "--run", str(base), "--data", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"tfgpt finetune: error: {bad}: entry 2: 1 character(s) not in the char vocabulary (")
    assert "'§' (U+00A7)" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_cli_unmasked_lora_run(base, data, tmp_path, capsys):
    out = tmp_path / "lora"
    with pytest.warns(UserWarning, match="longer than block_size"):
        code = main(["finetune", "instruct", "--run", str(base), "--data", str(data), "--out", str(out),
                     "--no-mask-prompt", "--trainable", "lora", "--lora-rank", "2", "--epochs", "1",
                     "--max-new-tokens", "0", "--lr", "1e-3"])
    assert code == 0
    text, err = capsys.readouterr()
    printed = json.loads(text)  # stdout holds only the JSON result; messages and epochs go to stderr
    said = err.splitlines()
    assert said[0] == "trainable parameters: 1,024 of 24,096 (lora)"  # rank 2 x (in + out) over 4 Dense layers
    assert said[1].startswith("epoch 1/1 - ") and " - loss: " in said[1] and " - val_loss: " in said[1]
    section = read_yaml(out / "config.yaml")["instruct"]
    assert (section["mask_prompt"], section["trainable"], section["lora_rank"]) == (False, "lora", 2)
    metrics = section["metrics"]
    # unmasked: the objective covers the prompt too, so it differs from the response-only loss
    assert metrics["val_loss_before"] != metrics["val_response_loss_before"]
    assert metrics["trainable_params"] < metrics["total_params"]
    model, _ = tfgpt.load(out)  # LoRA merged on save: plain Dense layers
    assert not [w for w in model.weights if "lora" in w.path]
    assert printed["run"] == str(out) and printed["split"] == {"train": 25, "val": 2, "test": 3}
    assert printed["val_loss_after"] == metrics["val_loss_after"]
    assert json.loads((out / "responses.json").read_text()) == []  # --max-new-tokens 0: nothing generated
    assert "rouge_l_after" not in printed and "rouge_l_before" not in printed


def test_a_test_prompt_over_block_size_is_cropped_with_one_warning(tokenizer, entries):
    keras.utils.set_random_seed(0)
    gpt = GPT(vocab_size=tokenizer.vocab_size, block_size=200, n_layer=1, n_head=2, n_embd=16)
    gpt.build((None, None))
    long = [e for e in entries if len(format_prompt(e)) > 200][:2]
    with pytest.warns(UserWarning) as caught:
        said = generate_responses(gpt, tokenizer, long, max_new_tokens=1)
    assert [str(w.message) for w in caught] == [
        "2 of 2 test prompts are longer than block_size 200: generated from their last 200 tokens"]
    assert len(said) == 2


# accumulate 2 over 3 batches an epoch: the accumulator holds a micro-batch across the interruption
RESUME_ARGS = dict(epochs=2, batch_size=4, lr=3e-3, max_new_tokens=0, clip=0.5, accumulate=2,
                   precision="float32")  # precision: tests/finetune/test_stack.py


@pytest.fixture(scope="module")
def resume_pair(base, entries, tmp_path_factory):
    """An uninterrupted run and one interrupted before epoch 2 of 2 and resumed, on 12 entries (10 train)."""
    root = tmp_path_factory.mktemp("resume")
    data = root / "twelve.json"
    data.write_text(json.dumps(entries[:12]))
    grab = Grab()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the examples over block_size (tested above)
        straight = finetune_instruct(base, data, root / "straight", callbacks=[grab], **RESUME_ARGS)
        with pytest.raises(Stop):
            finetune_instruct(base, data, root / "resumed", callbacks=[InterruptAt(1)], **RESUME_ARGS)
        printed = io.StringIO()
        with contextlib.redirect_stderr(printed):
            resumed = finetune_instruct(base, data, root / "resumed", resume=True, **RESUME_ARGS)
    return root, straight, resumed, grab.trained, printed.getvalue()


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run(resume_pair):
    root, straight, resumed, _, printed = resume_pair
    assert f"resuming {root / 'resumed.partial'} after epoch 1 of 2 (" in printed
    assert "epoch 2/2 - " in printed and "epoch 1/2 - " not in printed  # only the missing epoch ran
    assert_same_metrics(straight, resumed)
    assert_same_weights(tfgpt.load(root / "straight")[0], tfgpt.load(root / "resumed")[0])
    for name in ("responses.json", "logs/metrics.csv"):
        assert (root / "resumed" / name).read_text() == (root / "straight" / name).read_text(), name
    assert sorted(p.name for p in root.iterdir()) == ["resumed", "straight", "twelve.json"]  # no .partial left
    assert sorted(p.name for p in (root / "resumed").iterdir()) == ["config.yaml", "logs", "model.keras",
                                                                    "responses.json", "tokenizer"]


def test_clip_and_accumulate_reach_the_training(resume_pair):
    root, straight, _, trained, _ = resume_pair
    opt = trained.optimizer
    assert (opt.global_clipnorm, opt.gradient_accumulation_steps) == (0.5, 2)
    assert int(opt.iterations) == 3  # 6 micro-batches, 2 per update
    assert straight["val_loss_after"] < straight["val_loss_before"] - 0.05  # it trains
    section = read_yaml(root / "straight" / "config.yaml")["instruct"]
    assert (section["clip"], section["accumulate"], section["precision"]) == (0.5, 2, "float32")


@pytest.mark.parametrize("task", ["instruct", "prefer"])
def test_a_partial_run_needs_resume_and_resume_needs_one(task, base, tmp_path, capsys):
    argv = ["finetune", task, "--run", str(base), "--data", str(tmp_path / "d.json"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--resume"]) == 2
    assert capsys.readouterr().err == (f"tfgpt finetune: error: --resume: no interrupted run to continue "
                                       f"({tmp_path / 'o.partial'} not found)\n")
    (tmp_path / "o.partial").mkdir()
    assert main(argv) == 2
    assert capsys.readouterr().err == (f"tfgpt finetune: error: {tmp_path / 'o.partial'} holds an interrupted run: "
                                       "pass --resume to continue it, or delete it\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.partial"]
