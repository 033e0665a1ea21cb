"""tfgpt.runs: the run-dir layout, save_run / load round trip, checkpoint pointers and selection, load_run_model."""

import json
import os

import keras
import numpy as np
import pytest

import tfgpt
from tfgpt.config import GPTConfig
from tfgpt.errors import RunDirError
from tfgpt.model import GPT
from tfgpt.runs import (
    BEST_JSON,
    CHECKPOINTS,
    CONFIG_YAML,
    LATEST_JSON,
    LOGS_DIR,
    METRICS_JSONL,
    MODEL_KERAS,
    STATE_JSON,
    STATE_NPZ,
    TOKENIZER_DIR,
    WEIGHTS_H5,
    load_run_model,
    pointer_path,
    read_pointer,
    save_run,
    weights_path,
)
from tfgpt.tokenizers import CharTokenizer
from tfgpt.train.config import DataConfig, TrainConfig


@pytest.fixture()
def run(tmp_path):
    tok = CharTokenizer.train(["abcdefgh ij\n"])
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    return save_run(tmp_path / "run", model, tok), model, tok


def test_load_round_trip(run):
    path, model, tok = run
    loaded, tok2 = tfgpt.load(path)
    ids = np.array([tok.encode("abc")], np.int32)
    np.testing.assert_array_equal(np.asarray(loaded(ids)), np.asarray(model(ids)))
    assert tok2.encode("hij") == tok.encode("hij")
    assert tfgpt.generate(loaded, tok2, "ab", max_new_tokens=5, temperature=0) == tfgpt.generate(
        model, tok, "ab", max_new_tokens=5, temperature=0
    )


def _write_checkpoint(run_dir, config, step=10):
    """A checkpoint dir with fresh random weights (differing from the run's); returns (dir, model)."""
    ckpt = run_dir / "checkpoints" / f"step-{step:06d}"
    ckpt.mkdir(parents=True)
    changed = GPT(config)
    changed.build((None, None))
    changed.save_weights(ckpt / "model.weights.h5")
    return ckpt, changed


def test_latest_checkpoint_is_used_when_newer(run):
    path, model, _ = run
    ckpt, changed = _write_checkpoint(path, model.config)
    (path / "checkpoints" / "latest.json").write_text(json.dumps({"step": 10, "dir": "step-000010"}))
    future = (path / "model.keras").stat().st_mtime + 10
    os.utime(ckpt / "model.weights.h5", (future, future))
    assert weights_path(path).name == "model.weights.h5"
    loaded, _ = tfgpt.load(path)
    np.testing.assert_array_equal(loaded.get_weights()[0], changed.get_weights()[0])
    explicit, _ = tfgpt.load(path, checkpoint="step-000010")
    np.testing.assert_array_equal(explicit.get_weights()[0], changed.get_weights()[0])


def test_missing_pieces_give_clear_errors(run, tmp_path):
    path, _, _ = run
    with pytest.raises(RunDirError, match="not found"):
        tfgpt.load(tmp_path / "nope")
    (path / "model.keras").unlink()
    with pytest.raises(RunDirError, match="holds no weights"):
        tfgpt.load(path)
    (path / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(RunDirError, match="model.keras is not a .keras archive.*truncated or corrupt"):
        tfgpt.load(path)
    config = (path / "config.yaml").read_text()
    for broken, message in (("", "empty file"), ("model:\n", "must be a mapping"), ("model: 5\n", "must be a mapping")):
        (path / "config.yaml").write_text(broken)
        with pytest.raises(RunDirError, match=message):
            tfgpt.load(path)
    (path / "config.yaml").write_text(config)
    (path / "config.yaml").unlink()
    with pytest.raises(RunDirError, match="config.yaml"):
        tfgpt.load(path)
    with pytest.raises(RunDirError, match="checkpoint not found"):
        weights_path(path, checkpoint="step-9")


def test_layout_names():
    """The run-dir contract users and older runs rely on: these names must not drift."""
    assert (CONFIG_YAML, TOKENIZER_DIR, MODEL_KERAS, METRICS_JSONL, LOGS_DIR, CHECKPOINTS) == (
        "config.yaml", "tokenizer", "model.keras", "metrics.jsonl", "logs", "checkpoints")
    assert (LATEST_JSON, BEST_JSON, WEIGHTS_H5, STATE_NPZ, STATE_JSON) == (
        "latest.json", "best.json", "model.weights.h5", "train_state.npz", "state.json")


def test_pointers(tmp_path):
    assert pointer_path(tmp_path, "best") == tmp_path / "best.json"
    with pytest.raises(ValueError, match="one of latest, best, got 'newest'"):
        pointer_path(tmp_path, "newest")
    assert read_pointer(tmp_path, "latest") is None
    (tmp_path / "latest.json").write_text('{"step": 7, "dir": "step-000007"}')
    assert read_pointer(tmp_path) == {"step": 7, "dir": "step-000007"}
    for text, message in (("{", "latest.json: not valid JSON"), ('{"step": 7}', "latest.json: expected"),
                          ('{"step": 7, "dir": 7}', "latest.json: expected"), ("[1]", "latest.json: expected")):
        (tmp_path / "latest.json").write_text(text)
        with pytest.raises(RunDirError, match=message):
            read_pointer(tmp_path, "latest")


def test_load_run_model_final(run, tmp_path):
    path, model, _ = run
    loaded, (mcfg, tcfg, dcfg), step, weights = load_run_model(path)
    assert (mcfg, tcfg, dcfg, step, weights) == (model.config, TrainConfig(), DataConfig(), None, path / "model.keras")
    ids = np.array([[1, 2, 3]], np.int32)
    np.testing.assert_array_equal(np.asarray(loaded(ids)), np.asarray(model(ids)))
    with pytest.raises(RunDirError, match=r"no best checkpoint \(checkpoints/best.json not found\)"):
        load_run_model(path, "best")
    with pytest.raises(RunDirError, match="not a run dir \\(no config.yaml\\)"):
        load_run_model(tmp_path / "elsewhere")


def test_a_fine_tuned_runs_own_sections_are_allowed(run, tmp_path):
    """finetune instruct/prefer write `instruct:`/`prefer:` into config.yaml: eval/load still read the run,
    while a training config with such a section is still refused."""
    import shutil

    import yaml

    from tfgpt.errors import ConfigError
    from tfgpt.train.config import resolve_config

    path, model, _ = run
    copy = shutil.copytree(path, tmp_path / "tuned")
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["instruct"] = {"template": "alpaca", "mask_prompt": True}
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    loaded, (mcfg, _, _), _, _ = load_run_model(copy)
    assert mcfg == model.config
    with pytest.raises(ConfigError, match="unknown section 'instruct'"):
        resolve_config(copy / "config.yaml")


def test_load_run_model_follows_pointers(run):
    path, model, _ = run
    ckpt, changed = _write_checkpoint(path, model.config)
    (ckpt / "state.json").write_text(json.dumps({"step": 10}))
    for name in ("latest", "best"):
        (path / "checkpoints" / f"{name}.json").write_text(json.dumps({"step": 10, "dir": "step-000010"}))
    for which in ("latest", "best", "step-000010", str(ckpt)):
        loaded, _, step, weights = load_run_model(path, which)
        assert (step, weights) == (10, ckpt / "model.weights.h5"), which
        np.testing.assert_array_equal(loaded.get_weights()[0], changed.get_weights()[0])
