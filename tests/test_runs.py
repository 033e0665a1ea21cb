"""Run directories: save_run / load round trip, checkpoint selection, clear errors."""

import json
import os

import keras
import numpy as np
import pytest

import tfgpt
from tfgpt.config import GPTConfig
from tfgpt.errors import RunDirError
from tfgpt.model import GPT
from tfgpt.runs import save_run, weights_path
from tfgpt.tokenizers import CharTokenizer


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


def test_latest_checkpoint_is_used_when_newer(run):
    path, model, _ = run
    ckpt = path / "checkpoints" / "step-000010"
    ckpt.mkdir(parents=True)
    changed = GPT(model.config)
    changed.build((None, None))
    changed.save_weights(ckpt / "model.weights.h5")
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
