"""Resume of an interrupted fine-tune (tfgpt/finetune/checkpoints.py through finetune_classify), float32 and
QLoRA-style int8 + LoRA, and the int8 run's round trip, continued training and bad --resume input."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tests.finetune.helpers import LORA_ARGS as ARGS
from tests.finetune.helpers import Grab, InterruptAt, Stop
from tfgpt.cli import main
from tfgpt.finetune.classify import classify, encode_texts, finetune_classify, load_classifier
from tfgpt.finetune.labelled import read_labelled
from tfgpt.finetune.lora import enable_lora_on, freeze, lora_dense_layers


@pytest.fixture(scope="module")
def sms(sms120):
    return sms120


@pytest.fixture(scope="module")
def tiny_run(sms_run):
    return sms_run


def _interrupted_then_resumed(run, sms, out, **kw):
    with pytest.raises(Stop):
        finetune_classify(run, sms, out, callbacks=[InterruptAt(1)], **kw)
    partial = out.parent / f"{out.name}.partial"
    assert not out.exists() and sorted(p.name for p in (partial / "checkpoints").iterdir()) == ["epoch-0001"]
    return finetune_classify(run, sms, out, resume=True, **kw)


@pytest.fixture(scope="module")
def int8_runs(tiny_run, sms, tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    grab = Grab()
    straight = finetune_classify(tiny_run, sms, root / "straight", quantize="int8", callbacks=[grab], **ARGS)
    resumed = _interrupted_then_resumed(tiny_run, sms, root / "resumed", quantize="int8", **ARGS)
    return root, straight, resumed, grab.trained


def _assert_same_run(a, b, metrics_a, metrics_b, atol):
    assert metrics_a.keys() == metrics_b.keys()
    for key in metrics_a:
        assert metrics_b[key] == pytest.approx(metrics_a[key], abs=atol), key
    model_a, _, _ = load_classifier(a)
    model_b, _, _ = load_classifier(b)
    for va, vb in zip(model_a.weights, model_b.weights, strict=True):
        np.testing.assert_allclose(np.asarray(vb, "float64"), np.asarray(va, "float64"), atol=atol, err_msg=va.path)
    assert (a / "logs" / "metrics.csv").read_text().splitlines()[1:] == (
        b / "logs" / "metrics.csv").read_text().splitlines()[1:]


@pytest.mark.slow
def test_int8_lora_resume_equals_an_uninterrupted_run(int8_runs):
    root, straight, resumed, _ = int8_runs
    # the checkpoint holds the raw int8 kernels, scales, LoRA factors and AdamW moments: bit for bit
    _assert_same_run(root / "straight", root / "resumed", straight, resumed, atol=0.0)
    assert sorted(p.name for p in root.iterdir()) == ["resumed", "straight"]  # no .partial left


@pytest.mark.slow
def test_float32_lora_resume_through_the_cli_equals_an_uninterrupted_run(lora_classifier, tiny_run, sms, tmp_path,
                                                                         capsys):
    straight_dir, straight, _ = lora_classifier
    with pytest.raises(Stop):
        finetune_classify(tiny_run, sms, tmp_path / "resumed", callbacks=[InterruptAt(1)], **ARGS)
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"{tmp_path / 'resumed.partial'} keeps the finished epochs: rerun with the same arguments and --resume to "
        "continue")
    rc = main(["finetune", "classify", "--run", str(tiny_run), "--data", str(sms), "--out", str(tmp_path / "resumed"),
               "--trainable", "lora", "--lora-rank", "4", "--balance", "--epochs", "2", "--lr", "3e-3", "--resume"])
    out, err = capsys.readouterr()
    resumed = {k: v for k, v in json.loads(out).items() if k != "run"}  # stdout: the JSON result only
    assert rc == 0 and "epoch 2/2 - " in err and "epoch 1/2 - " not in err  # only the missing epoch ran
    assert f"resuming {tmp_path / 'resumed.partial'} after epoch 1 of 2 (" in err
    _assert_same_run(straight_dir, tmp_path / "resumed", straight, resumed, atol=1e-5)


def test_int8_lora_trains_and_reloads(int8_runs, sms):
    root, straight, _, trained = int8_runs
    rows = (root / "straight" / "logs" / "metrics.csv").read_text().splitlines()
    header, losses = rows[0].split(","), [float(r.split(",")[rows[0].split(",").index("loss")]) for r in rows[1:]]
    assert "loss" in header and losses[1] < losses[0] - 0.01  # loss falls
    model, tok, labels = load_classifier(root / "straight")
    assert sorted(p.name for p in (root / "straight").iterdir()) == ["config.yaml", "logs", "model.weights.h5",
                                                                     "tokenizer"]
    assert str(model.backbone.blocks[0].attn.c_attn.kernel.dtype) == "int8"
    assert not any(layer.lora_enabled for layer in lora_dense_layers(model))
    ids, _ = encode_texts(tok, [r.text for r in read_labelled(sms)][:40], 48)
    want, got = np.asarray(trained(ids)), np.asarray(model(ids))
    # the saved kernel is LoRA merged and re-quantized to int8: one int8 step apart, not 1e-5
    np.testing.assert_allclose(got, want, atol=0.01)
    assert (got.argmax(1) == want.argmax(1)).all()
    assert np.abs(want).max() > 0.1  # the tolerance is small against the logits


def test_int8_lora_save_reload_continue_training(int8_runs, sms, tiny_run):
    """keras-hub #1705 fails here: reload the int8 run, add LoRA again, train on (loss keeps falling)."""
    root, _, _, _ = int8_runs
    model, tok, labels = load_classifier(root / "straight")
    enable_lora_on(model, rank=4)
    freeze(model, "lora")
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    records = read_labelled(sms)[:32]
    ids, _ = encode_texts(tok, [r.text for r in records], 48)
    y = np.array([labels.index(r.label) for r in records], dtype=np.int32)
    losses = [float(model.train_on_batch(ids, y)) for _ in range(6)]  # each: the loss before its update
    assert losses[-1] < losses[0] - 0.01, losses
    assert str(model.backbone.blocks[0].mlp.c_fc._kernel.dtype) == "int8"  # still the int8 base under LoRA


def _cli_error(capsys, *argv):
    """Run tfgpt in-process; returns (exit code, the lines of stderr that tfgpt printed)."""
    capsys.readouterr()
    rc = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, [line for line in err.splitlines() if line.startswith("tfgpt")]


def test_bad_resume_input_is_one_line_and_changes_nothing(tiny_run, sms, tmp_path, capsys):
    base = ["finetune", "classify", "--run", str(tiny_run), "--data", str(sms), "--out", str(tmp_path / "o")]
    assert _cli_error(capsys, *base, "--resume") == (2, [
        f"tfgpt finetune: error: --resume: no interrupted run to continue ({tmp_path / 'o.partial'} not found)"])
    with pytest.raises(Stop):
        finetune_classify(tiny_run, sms, tmp_path / "o", callbacks=[InterruptAt(0)], epochs=2, jit_compile=False)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    rc, lines = _cli_error(capsys, *base, "--epochs", "2", "--lr", "0.01", "--resume")
    assert (rc, len(lines)) == (2, 1)
    assert lines[0].startswith(f"tfgpt finetune: error: --resume: --lr differs from the interrupted run in "
                               f"{tmp_path / 'o.partial'} (0.0005 there, 0.01 now)")
    assert _cli_error(capsys, *base, "--epochs", "2") == (2, [
        f"tfgpt finetune: error: {tmp_path / 'o.partial'} holds an interrupted run: pass --resume to continue it, "
        "or delete it"])
    (tmp_path / "other.tsv").write_text(sms.read_text() + "ham\tone more\n")
    rc, lines = _cli_error(capsys, *base[:5], str(tmp_path / "other.tsv"), *base[6:], "--epochs", "2", "--resume")
    assert rc == 2 and "--resume: --data differs" in lines[0]
    assert sorted(str(p) for p in tmp_path.rglob("*") if p.name != "other.tsv") == before


@pytest.mark.slow
def test_int8_lora_run_exports_a_savedmodel_equal_to_classify(int8_runs, tmp_path):
    """The int8 + LoRA run through tfgpt export (tfgpt/export/classifier.py) and the TF1 session loader."""
    from tfgpt.export import export_run
    from tfgpt.export.verify import session_run

    root, _, _, _ = int8_runs
    texts = ["Ok lar... Joking wif u oni...", "FREE entry! Text WIN to 87121 now", "hi"]
    info = export_run(root / "straight", tmp_path / "export", verify=True, name="spam")
    out = session_run(tmp_path / "export" / info["savedmodel"]["path"], "serving_default",
                      {"texts": np.array(texts, dtype=object)})
    want = classify(root / "straight", texts)
    assert [x.decode() for x in out["labels"]] == [label for label, _ in want]
    np.testing.assert_allclose(out["probability"], [p for _, p in want], atol=1e-5)
    assert info["verification"]["savedmodel"]["probabilities_max_abs_diff"] < 1e-5
    assert info["source"]["classifier"]["quantize"] == "int8"


def _tiny_compiled(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


@pytest.mark.reliability
@pytest.mark.parametrize(("name", "damage"), [
    ("state.npz", "half"), ("state.npz", "flip"), ("state.npz", "empty"), ("state.json", "half"),
    ("state.json", "flip"),
])
def test_restore_epoch_names_a_damaged_checkpoint_file(tmp_path, name, damage):
    """restore_epoch's np.load and json.loads were unguarded: a truncated or byte-flipped state.npz/state.json
    gave a BadZipFile/ValueError/JSONDecodeError/UnicodeDecodeError traceback. Now one RunDirError names it."""
    from tfgpt.errors import RunDirError
    from tfgpt.finetune.checkpoints import restore_epoch, save_epoch

    model = _tiny_compiled(0)
    model.optimizer.build(model.trainable_variables)
    save_epoch(tmp_path, model, 1, {"loss": 0.5})
    fresh = _tiny_compiled(1)
    assert restore_epoch(tmp_path, fresh) == (1, {"loss": 0.5})  # undamaged: restores
    path = tmp_path / "checkpoints" / "epoch-0001" / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data[: {"flip": len(data), "half": len(data) // 2, "empty": 0}[damage]]))
    with pytest.raises(RunDirError, match=rf"epoch-0001/{name.replace('.', '[.]')}: not (a )?readable"):
        restore_epoch(tmp_path, _tiny_compiled(2))


@pytest.mark.reliability
def test_a_damaged_manifest_is_named(tmp_path):
    from tfgpt.errors import RunDirError
    from tfgpt.finetune.checkpoints import check_manifest

    (tmp_path / "manifest.json").write_bytes(b'{"lr": 0.0\xff')
    with pytest.raises(RunDirError, match=r"manifest[.]json: not readable JSON"):
        check_manifest(tmp_path, {"lr": 0.001})
