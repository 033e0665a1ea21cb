"""tfgpt.finetune.classify: fine-tune a tiny run on the vendored SMS slice, classify, and bad inputs."""

from __future__ import annotations

from collections import Counter

import keras
import numpy as np
import pytest

from tests.finetune.helpers import char_tokenizer
from tests.finetune.helpers import tiny_run as tiny_run_dir
from tfgpt.config import read_yaml
from tfgpt.errors import ConfigError
from tfgpt.finetune.classify import classify, finetune_classify, load_classifier
from tfgpt.finetune.labelled import balance, read_labelled, split
from tfgpt.finetune.lora import freeze, param_counts
from tfgpt.model.gpt import GPT
from tfgpt.runs import save_run


@pytest.fixture(scope="module")
def sms(fixtures_dir):
    return fixtures_dir / "finetune" / "SMSSpamCollection-200.tsv"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, sms):
    tok = char_tokenizer([r.text for r in read_labelled(sms)])
    return tiny_run_dir(tmp_path_factory.mktemp("base") / "run", tok, 64)


@pytest.fixture(scope="module")
def trained(tiny_run, sms, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "spam"
    with pytest.warns(UserWarning, match="longer than block_size 64: truncated"):
        metrics = finetune_classify(tiny_run, sms, out, trainable="all", balance_classes=True,
                                    epochs=6, batch_size=8, lr=2e-3, seed=0, jit_compile=False)
    return out, metrics


def test_beats_majority_baseline_on_train(trained, sms):
    out, metrics = trained
    train, _, _ = split(balance(read_labelled(sms), 0), seed=0)
    baseline = max(Counter(r.label for r in train).values()) / len(train)
    assert metrics["train_eval_accuracy"] > baseline
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


def test_writes_run_like_dir(trained, tiny_run):
    out, metrics = trained
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "logs", "model.keras", "tokenizer"]
    config = read_yaml(out / "config.yaml")
    assert config["model"] == read_yaml(tiny_run / "config.yaml")["model"]
    assert config["classifier"]["labels"] == ["ham", "spam"]
    assert config["classifier"]["trainable"] == "all"
    header = (out / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "accuracy", "loss", "val_accuracy", "val_loss", "test_accuracy", "test_loss"} <= set(header)
    last = (out / "logs" / "metrics.csv").read_text().splitlines()[-1].split(",")
    assert float(last[header.index("test_accuracy")]) == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert len((out / "logs" / "metrics.csv").read_text().splitlines()) == 1 + 6
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging dir left


def test_classify_gives_label_and_probability(trained):
    out, _ = trained
    result = classify(out, ["Ok lar... Joking wif u oni...", "FREE entry! Text WIN to 87121 now"])
    model, tok, labels = load_classifier(out)
    logits = np.asarray(model(np.array([tok.encode("Ok lar... Joking wif u oni...")])))[0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert result[0] == (labels[int(probs.argmax())], pytest.approx(float(probs.max()), rel=1e-5))
    assert all(label in ("ham", "spam") and 0.5 <= p <= 1 for label, p in result)


@pytest.mark.parametrize(("group", "expected"), [("head", 66), ("last-block", 66 + 12_704 + 64), ("all", None)])
def test_trainable_groups_of_a_classifier(group, expected):
    from tfgpt.finetune.classifier import GPTClassifier

    clf = GPTClassifier(GPT(vocab_size=10, block_size=8, n_layer=2, n_head=2, n_embd=32), 2)
    clf.build((None, None))
    freeze(clf, group)
    trainable, total = param_counts(clf)
    assert trainable == (total if expected is None else expected)


def test_refuses_out_equal_to_run(tiny_run, sms):
    with pytest.raises(ConfigError, match="is the input run"):
        finetune_classify(tiny_run, sms, tiny_run)


def test_refuses_non_empty_out(tiny_run, sms, tmp_path):
    (tmp_path / "x").write_text("keep")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        finetune_classify(tiny_run, sms, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


def test_refuses_unknown_trainable(tiny_run, sms, tmp_path):
    with pytest.raises(ConfigError, match="--trainable must be one of head, last-block, all, lora"):
        finetune_classify(tiny_run, sms, tmp_path / "o", trainable="everything")
    assert not (tmp_path / "o").exists()


def test_single_class_file_refused_nothing_written(tiny_run, tmp_path):
    data = tmp_path / "one.tsv"
    data.write_text("ham\thello\nham\tthere\n")
    with pytest.raises(ValueError, match="one.tsv: needs at least two classes"):
        finetune_classify(tiny_run, data, tmp_path / "o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.tsv"]


def test_classify_refuses_a_plain_run(tiny_run):
    with pytest.raises(ConfigError, match="not a classifier run"):
        classify(tiny_run, ["hi"])


def test_head_mode_leaves_the_backbone_unchanged(tiny_run, sms, tmp_path, capsys):
    import tfgpt

    metrics = finetune_classify(tiny_run, sms, tmp_path / "head", trainable="head", balance_classes=True, epochs=1,
                                jit_compile=False)
    out, err = capsys.readouterr()
    assert (metrics["trainable_params"], out) == (66, "")  # stdout is left to the result
    assert "trainable parameters: 66 of " in err and "epoch 1/1 - " in err and " - val_accuracy: " in err
    base, _ = tfgpt.load(tiny_run)
    model, _, _ = load_classifier(tmp_path / "head")
    for before, after in zip(base.weights, model.backbone.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(after), np.asarray(before))


def test_lora_mode_trains_lora_and_head_only(lora_classifier):
    out, metrics, _ = lora_classifier  # the session's LoRA run: rank 4, on the 120-row slice
    # head 32·2 + 2; rank-4 LoRA on c_attn (32→96), attn proj (32→32), c_fc (32→128), mlp proj (128→32)
    expected = 66 + (32 * 4 + 4 * 96) + (32 * 4 + 4 * 32) + (32 * 4 + 4 * 128) + (128 * 4 + 4 * 32)
    assert metrics["trainable_params"] == expected
    assert read_yaml(out / "config.yaml")["classifier"]["lora_rank"] == 4
    assert [label for label, _ in classify(out, ["hi"])][0] in ("ham", "spam")


def test_gpt2_vocabulary_pads_with_endoftext(sms120, tmp_path):
    """A GPT-2-vocabulary run (what tfgpt import-gpt2 writes): rows pad with <|endoftext|> = 50256."""
    from tfgpt.tokenizers.bpe import BPETokenizer

    tok = BPETokenizer.gpt2()
    keras.utils.set_random_seed(0)
    gpt = GPT(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32)
    run = save_run(tmp_path / "gpt2ish", gpt, tok)
    finetune_classify(run, sms120, tmp_path / "out", trainable="last-block", balance_classes=True, epochs=1,
                      jit_compile=False)
    model, tok2, labels = load_classifier(tmp_path / "out")
    assert (model.pad_id, labels, read_yaml(tmp_path / "out" / "config.yaml")["classifier"]["pad_id"]) == (
        50256, ["ham", "spam"], 50256)
    ids = tok2.encode("Ok lar... Joking wif u oni...")
    padded = np.array([ids + [50256] * 5])
    np.testing.assert_allclose(np.asarray(model(padded)), np.asarray(model(np.array([ids]))), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("rows", "flags", "message"),
    [
        ("ham\thi\n\tno label\n", [], "{data}:2: missing label"),
        ("ham\thi\nham\tthere\n", [], "{data}: needs at least two classes, found ['ham']"),
        ("ham\thi\nspam\n", [], "{data}:2: row has no text"),
        ("ham\thi\nspam\tyo\n", ["--trainable", "lora", "--lora-rank", "0"],
         "--lora-rank must be a positive integer, got 0"),
        ("ham\thi\nspam\tyo\n", ["--quantize", "int8"],
         "--quantize int8 needs --trainable lora (the quantized base is frozen; only LoRA and the head train), "
         "got --trainable head"),
        ("ham\thi\nspam\tyo\n", ["--out", "{run}"], "--out {run} is the input run: choose a new directory"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tiny_run, tmp_path, capsys, rows, flags, message):
    from tfgpt.cli import main

    data = tmp_path / "d.tsv"
    data.write_text(rows)
    flags = [f.format(run=tiny_run) for f in flags]
    capsys.readouterr()
    rc = main(["finetune", "classify", "--run", str(tiny_run), "--data", str(data), "--out", str(tmp_path / "o"),
               *flags])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tfgpt")]
    assert (rc, lines) == (2, ["tfgpt finetune: error: " + message.format(data=data, run=tiny_run)])
    assert "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["d.tsv"]
    assert sorted(p.name for p in tiny_run.iterdir()) == ["config.yaml", "model.keras", "tokenizer"]


def test_padding_each_batch_to_its_longest_trains_as_padding_the_split(lora_classifier, sms_run, sms120):
    """The driver pads each batch to its own longest row; the head reads the last real token, so a
    classifier trained so equals one trained on the split padded to its longest row (as it was done
    before), fed the same batches: same probabilities within 1e-5."""
    from tfgpt.finetune.classify import build_classifier, encode_texts, pad_id_of
    from tfgpt.finetune.labelled import label_names
    from tfgpt.finetune.stack import make_finetune_optimizer
    from tfgpt.runs import load

    _, _, per_batch = lora_classifier
    records = balance(read_labelled(sms120), 0)
    labels = label_names(records)
    train, _, test = split(records, seed=0)
    gpt, tok = load(sms_run)
    keras.utils.set_random_seed(0)
    model = build_classifier(gpt, len(labels), pad_id_of(tok), "lora", lora_rank=4)
    model.compile(optimizer=make_finetune_optimizer(model, 3e-3, 2 * -(-len(train) // 8)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    with pytest.warns(UserWarning, match="longer than block_size 48"):
        x, _ = encode_texts(tok, [r.text for r in train], 48)  # the whole split padded to its longest
        ids, _ = encode_texts(tok, [r.text for r in test], 48)
    y = np.array([labels.index(r.label) for r in train], dtype=np.int32)
    assert x.shape[1] == 48 and min(len(tok.encode(r.text)) for r in train) < 24  # padding was real waste
    for epoch in range(2):
        order = np.random.default_rng([0, epoch]).permutation(len(x))
        model.fit(x[order], y[order], batch_size=8, shuffle=False, verbose=0)
    want = np.asarray(keras.ops.softmax(model(ids), axis=-1))
    np.testing.assert_allclose(np.asarray(keras.ops.softmax(per_batch(ids), axis=-1)), want, atol=1e-5)
    assert np.abs(want - 0.5).max() > 0.01  # trained away from the uniform start


def test_a_text_with_a_character_outside_the_vocabulary_names_file_and_line(tiny_run, tmp_path, capsys):
    """The first such row in file order (line 3, not line 5 however the split shuffles), before any output."""
    from tfgpt.cli import main

    data = tmp_path / "sms.tsv"
    data.write_text("ham\thi\nspam\tyo\nham\tok § now ¤\nspam\tWIN\nham\tbad §\nspam\tgo\n", encoding="utf-8")
    rc = main(["finetune", "classify", "--run", str(tiny_run), "--data", str(data), "--out", str(tmp_path / "o")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tfgpt")]
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"tfgpt finetune: error: {data}:3: 2 character(s) not in the char vocabulary (")
    assert "'§' (U+00A7) at position 3, '¤' (U+00A4) at position 9" in err[0]
    assert [p.name for p in tmp_path.iterdir()] == ["sms.tsv"]
