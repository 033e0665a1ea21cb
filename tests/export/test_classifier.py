"""tfgpt.export.classifier: a classifier run's SavedModel (strings → labels + probabilities) through the
TF1 session loader, equal to ``classify()``; no XLA; the formats and options it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from export_tiny_run import EOT, TEXT, graph_ops

from tfgpt.config import save_model_config
from tfgpt.errors import ExportError
from tfgpt.export import export_run
from tfgpt.export.verify import session_run
from tfgpt.finetune.classifier import GPTClassifier
from tfgpt.finetune.classify import classify
from tfgpt.model.gpt import GPT
from tfgpt.tokenizers import CharTokenizer

LABELS = ["ham", "spam", "eggs"]
BLOCK = 16
TEXTS = ["ROMEO: hello", "", "a", "the quick brown fox! JULIET: what light", f"hello world{EOT}", "The Hello"]


def write_classifier_run(path: Path, model: GPTClassifier, tok: CharTokenizer, labels: list[str],
                         quantize: str | None = None) -> Path:
    """A classifier run dir as ``finetune_classify`` writes it (config.yaml with classifier:, tokenizer/, model)."""
    path.mkdir(parents=True)
    section = {"labels": labels, "pad_id": model.pad_id, "trainable": "lora" if quantize else "all",
               "quantize": quantize, "lora_rank": 4 if quantize else None, "metrics": {"test_accuracy": 0.5}}
    save_model_config(path / "config.yaml", model.backbone.config, classifier=section)
    tok.save(path / "tokenizer")
    if quantize:
        model.save_weights(path / "model.weights.h5")
    else:
        model.save(path / "model.keras")
    return path


def random_classifier(tok: CharTokenizer, seed: int = 0) -> GPTClassifier:
    """A 1-layer classifier with weights large enough that texts get clearly different probabilities."""
    keras.utils.set_random_seed(seed)
    gpt = GPT(vocab_size=tok.vocab_size, block_size=BLOCK, n_layer=1, n_head=2, n_embd=32)
    model = GPTClassifier(gpt, len(LABELS), pad_id=tok.eot_id)
    model.build((None, None))
    rng = np.random.default_rng(seed)
    for v in model.variables:
        v.assign(rng.normal(0.0, 0.3, v.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def tok() -> CharTokenizer:
    return CharTokenizer.train([TEXT], special_tokens=[EOT])


@pytest.fixture(scope="module")
def clf_export(tmp_path_factory: pytest.TempPathFactory, tok: CharTokenizer) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("clf_export")
    run = write_classifier_run(root / "spam", random_classifier(tok), tok, LABELS)
    info = export_run(run, root / "export", verify=True, name="clf")  # default formats: a classifier's SavedModel
    return run, root / "export", info


def sm(clf_export: tuple[Path, Path, dict]) -> Path:
    _, out, info = clf_export
    return out / info["savedmodel"]["path"]


def expected(run: Path) -> list[tuple[str, float]]:
    with pytest.warns(UserWarning, match="longer than block_size 16: truncated"):
        return classify(run, TEXTS)


def test_session_loader_probabilities_equal_classify(clf_export, tok):
    run, _, _ = clf_export
    assert len(tok.encode(TEXTS[3])) > BLOCK  # one text is truncated to its first block_size tokens
    out = session_run(sm(clf_export), "serving_default", {"texts": np.array(TEXTS, dtype=object)})
    want = expected(run)
    assert [x.decode() for x in out["labels"]] == [label for label, _ in want]
    assert np.max(np.abs(out["probability"] - [p for _, p in want])) < 1e-5
    assert out["probabilities"].shape == (len(TEXTS), len(LABELS))
    assert np.allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-6)
    assert out["label_ids"].tolist() == [LABELS.index(label) for label, _ in want]
    assert len({round(float(p), 4) for p in out["probability"]}) > 2  # the texts really differ


def test_truncation_keeps_the_first_block_size_tokens(clf_export):
    long = TEXTS[3]
    out = session_run(sm(clf_export), "serving_default", {"texts": np.array([long, long[:BLOCK]], dtype=object)})
    assert np.max(np.abs(out["probabilities"][0] - out["probabilities"][1])) < 1e-6


def test_no_xla_ops_and_the_export_json(clf_export):
    run, out, info = clf_export
    ops = graph_ops(sm(clf_export))
    assert not [op for op in ops if "Xla" in op]
    assert "StatefulPartitionedCall" in ops or "PartitionedCall" in ops
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk == info
    assert info["kind"] == "classifier" and info["labels"] == LABELS and info["formats"] == ["savedmodel"]
    assert info["source"]["run"] == str(run.resolve())
    assert info["source"]["classifier"]["labels"] == LABELS and info["source"]["model"]["block_size"] == BLOCK
    sig = info["savedmodel"]["signatures"]["serving_default"]
    assert sig["inputs"] == {"texts": {"dtype": "string", "shape": [-1]}}
    assert sig["outputs"]["probabilities"] == {"dtype": "float32", "shape": [-1, len(LABELS)]}
    assert sig["outputs"]["labels"]["dtype"] == "string"
    assert info["verification"]["savedmodel"]["probabilities_max_abs_diff"] < 1e-5
    assert (sm(clf_export) / "assets.extra" / "tf_serving_warmup_requests").is_file()
    assert (out / "tokenizer").is_dir()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"formats": "savedmodel,tflite"}, r"exports only as a SavedModel; --format tflite is not supported"),
    ({"formats": ["hf"]}, r"--format hf is not supported for classifiers"),
    ({"formats": "savedmodel", "quantize": "int8"}, r"--quantize applies to the LM's TFLite"),
    ({"checkpoint": "latest"}, r"no checkpoints: drop --checkpoint"),
])
def test_refuses_what_a_classifier_export_cannot_do(clf_export, tmp_path, kwargs, message):
    run, _, _ = clf_export
    with pytest.raises(ExportError, match=message):
        export_run(run, tmp_path / "x", **kwargs)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_refusal_is_one_line(clf_export, tmp_path, capsys):
    from tfgpt.cli import main

    run, _, _ = clf_export
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "x"), "--format", "tflite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfgpt export: error:") and "\n" not in err and "classifier run" in err
