"""tfgpt.train.checkpoint: step dir names, pruning, and the Checkpoints owner (save, best, restore; no training)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tfgpt.config import GPTConfig
from tfgpt.errors import RunDirError
from tfgpt.model.gpt import GPT
from tfgpt.train.checkpoint import (
    Checkpoints,
    Resumed,
    prune_checkpoints,
    rng_variables,
    step_dir_name,
    step_of_dir,
    write_pointer,
)
from tfgpt.train.config import TrainConfig
from tfgpt.train.optim import make_optimizer


def test_prune_orders_by_step_past_a_million(tmp_path):
    steps = (999_000, 999_500, 1_000_000, 1_000_500)
    for s in steps:
        (tmp_path / step_dir_name(s)).mkdir()
    (tmp_path / "step-notes").mkdir()  # not a checkpoint: left alone
    write_pointer(tmp_path, "latest", {"step": 1_000_500, "dir": step_dir_name(1_000_500)})
    write_pointer(tmp_path, "best", {"step": 999_000, "dir": step_dir_name(999_000), "val_loss": 1.0})
    prune_checkpoints(tmp_path, keep=2)
    left = sorted(p.name for p in tmp_path.glob("step-*"))
    assert left == ["step-1000000", "step-1000500", "step-999000", "step-notes"]
    assert [step_of_dir(n) for n in ("step-000100", "step-1000000", "step-x", "best.json")] == [100, 1_000_000, None,
                                                                                                 None]


def _model_and_optimizer(seed: int):
    keras.utils.set_random_seed(seed)
    gpt = GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=8, dropout=0.1))
    gpt.build((None, 4))
    opt = make_optimizer(TrainConfig(warmup_steps=0, max_steps=10), gpt)
    opt.build(gpt.trainable_variables)
    return gpt, opt


def test_checkpoints_save_best_and_restore(tmp_path):
    gpt, opt = _model_and_optimizer(0)
    opt.iterations.assign(3)
    ckpts = Checkpoints(tmp_path / "ck", gpt, opt, keep=1, info={"strategy": "default"})
    ckpts.save(3, tokens=96)
    assert ckpts.latest() == {"step": 3, "dir": "step-000003"} and ckpts.best() is None
    state = json.loads((tmp_path / "ck/step-000003/state.json").read_text())
    assert (state["step"], state["tokens"], state["strategy"], state["best_val_loss"]) == (3, 96, "default", None)
    assert [ckpts.offer_best(3, 96, v) for v in (None, float("nan"), float("inf"), 2.5)] == [False] * 3 + [True]
    assert ckpts.best() == {"step": 3, "dir": "step-000003", "val_loss": 2.5}
    opt.iterations.assign(5)
    assert ckpts.offer_best(5, 160, 2.7) is False  # not lower than 2.5
    ckpts.save(5, tokens=160)
    assert ckpts.latest() == {"step": 5, "dir": "step-000005"}
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["best.json", "latest.json", "step-000003",
                                                                     "step-000005"]  # keep=1, plus the best
    assert json.loads((tmp_path / "ck/step-000005/state.json").read_text())["best_val_loss"] == 2.5
    fresh, fresh_opt = _model_and_optimizer(1)
    assert Checkpoints(tmp_path / "ck", fresh, fresh_opt, keep=1).restore() == Resumed(step=5, best_val=2.5)
    for a, b in zip(gpt.weights + rng_variables(gpt), fresh.weights + rng_variables(fresh), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert "step-000005" in ckpts.where()


def test_checkpoints_off_the_chief_and_without_any(tmp_path):
    gpt, opt = _model_and_optimizer(0)
    worker = Checkpoints(tmp_path / "ck", gpt, opt, keep=2, chief=False)
    worker.save(1, tokens=8)
    assert worker.offer_best(1, 8, 1.0) is True and worker.best_val == 1.0  # tracked, not written
    assert not (tmp_path / "ck").exists()
    assert worker.where() == "no checkpoint was written"
    with pytest.raises(RunDirError, match=r"latest\.json not found \(no checkpoint yet\)"):
        worker.restore()


@pytest.mark.parametrize(("name", "damage"), [
    ("model.weights.h5", "flip"), ("model.weights.h5", "empty"), ("train_state.npz", "flip"),
    ("train_state.npz", "half"), ("state.json", "half"),
])
def test_restore_refuses_a_damaged_checkpoint_by_name(tmp_path, name, damage):
    """A flipped byte in the weights was restored silently, and a truncated file raised OSError/BadZipFile/
    JSONDecodeError tracebacks: now state.json's sha256s are checked, and each file's errors name it."""
    gpt, opt = _model_and_optimizer(0)
    opt.iterations.assign(2)
    Checkpoints(tmp_path / "ck", gpt, opt, keep=1).save(2, tokens=8)
    path = tmp_path / "ck" / "step-000002" / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data[: {"flip": len(data), "half": len(data) // 2, "empty": 0}[damage]]))
    gpt2, opt2 = _model_and_optimizer(1)
    with pytest.raises(RunDirError, match=name.replace(".", r"\.")):
        Checkpoints(tmp_path / "ck", gpt2, opt2, keep=1).restore()


def test_restore_of_a_checkpoint_without_digests_still_names_a_truncated_file(tmp_path):
    """Checkpoints written before state.json held sha256s are restored unchecked; a damaged file still fails
    with its name, not h5py's or zipfile's traceback."""
    gpt, opt = _model_and_optimizer(0)
    opt.iterations.assign(2)
    Checkpoints(tmp_path / "ck", gpt, opt, keep=1).save(2, tokens=8)
    ckpt = tmp_path / "ck" / "step-000002"
    state = json.loads((ckpt / "state.json").read_text())
    del state["sha256"], state["state_sha256"]
    (ckpt / "state.json").write_text(json.dumps(state))
    (ckpt / "train_state.npz").write_bytes(b"")
    gpt2, opt2 = _model_and_optimizer(1)
    with pytest.raises(RunDirError, match=r"train_state\.npz: not a readable optimizer state"):
        Checkpoints(tmp_path / "ck", gpt2, opt2, keep=1).restore()


def test_restore_refuses_an_edited_state_json(tmp_path):
    """One changed digit leaves valid JSON (a wrong tokens count or step went unnoticed): state.json's own
    sha256 catches it."""
    gpt, opt = _model_and_optimizer(0)
    opt.iterations.assign(2)
    Checkpoints(tmp_path / "ck", gpt, opt, keep=1).save(2, tokens=8)
    path = tmp_path / "ck" / "step-000002" / "state.json"
    path.write_text(path.read_text().replace('"tokens": 8', '"tokens": 9'))
    gpt2, opt2 = _model_and_optimizer(1)
    with pytest.raises(RunDirError, match=r"state\.json is corrupt: its content does not match its state_sha256"):
        Checkpoints(tmp_path / "ck", gpt2, opt2, keep=1).restore()
