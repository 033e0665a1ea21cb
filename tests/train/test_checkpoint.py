"""tfgpt.train.checkpoint: step dir names, pruning, and the Checkpoints owner (save, best, restore; no training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

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
    save_checkpoint,
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


@pytest.mark.reliability
def test_restore_repairs_a_best_json_a_kill_left_stale(tmp_path):
    """offer_best writes the checkpoint (and latest.json), then best.json: a kill between the two left best.json
    naming an older, worse checkpoint, and the resumed run took that worse loss as its best (a later, worse eval
    became "best" and the true best was pruned). Now restore points best.json at the restored checkpoint."""
    gpt, opt = _model_and_optimizer(0)
    opt.iterations.assign(2)
    Checkpoints(tmp_path / "ck", gpt, opt, keep=1).offer_best(2, 8, 2.0)
    opt.iterations.assign(4)  # the kill: step 4's best checkpoint and latest.json written, best.json not
    save_checkpoint(tmp_path / "ck", 4, gpt, opt, {"tokens": 16, "best_val_loss": 1.5, "val_loss": 1.5})
    assert json.loads((tmp_path / "ck/best.json").read_text())["dir"] == "step-000002"
    fresh, fresh_opt = _model_and_optimizer(1)
    worker = Checkpoints(tmp_path / "ck", fresh, fresh_opt, keep=1, chief=False)
    assert worker.restore() == Resumed(step=4, best_val=1.5)  # tracked, not written off the chief
    assert json.loads((tmp_path / "ck/best.json").read_text())["dir"] == "step-000002"
    ckpts = Checkpoints(tmp_path / "ck", fresh, fresh_opt, keep=1)
    assert ckpts.restore() == Resumed(step=4, best_val=1.5)
    assert ckpts.best() == {"step": 4, "dir": "step-000004", "val_loss": 1.5}
    assert ckpts.offer_best(5, 20, 1.8) is False  # worse than the true best
    fresh_opt.iterations.assign(6)
    ckpts.save(6, tokens=24)
    assert sorted(p.name for p in (tmp_path / "ck").glob("step-*")) == ["step-000004", "step-000006"]


_PRUNE_CHILD = """
import sys
from tfgpt.train.checkpoint import prune_checkpoints
print("ready", flush=True)
sys.stdin.readline()
prune_checkpoints(sys.argv[1], keep=1)
"""


def _kill_mid_delete(ckpt_dir, n_files: int) -> None:
    """Run prune_checkpoints in a child and SIGKILL it once the deletion of step-000001 has begun (bounded)."""
    proc = subprocess.Popen([sys.executable, "-c", _PRUNE_CHILD, str(ckpt_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            doomed = [p for p in ckpt_dir.glob("*step-000001*") if p.is_dir()]
            if doomed and len(os.listdir(doomed[0])) < n_files:
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.reliability
def test_a_kill_mid_delete_leaves_no_visible_incomplete_step_dir(tmp_path):
    """prune deleted step dirs in place: a kill mid-delete left a visible step-000001 with part of its files.
    Now it is renamed to a hidden .step-000001.del-PID first, and the next prune removes such leftovers."""
    ck = tmp_path / "ck"
    n_files = 20_000
    for step in (1, 2):
        (ck / step_dir_name(step)).mkdir(parents=True)
    for i in range(n_files):
        (ck / "step-000001" / f"f{i}").write_bytes(b"x")
    write_pointer(ck, "latest", {"step": 2, "dir": "step-000002"})
    _kill_mid_delete(ck, n_files)
    left = ck / "step-000001"
    assert not left.exists() or len(os.listdir(left)) == n_files, "a kill left a visible, incomplete step dir"
    (ck / ".step-000001.del-999").mkdir(exist_ok=True)  # another pid's leftover, whatever the kill hit
    (ck / ".step-000001.del-999" / "weights").write_bytes(b"x")
    prune_checkpoints(ck, keep=1)
    assert sorted(p.name for p in ck.iterdir()) == ["latest.json", "step-000002"]


@pytest.mark.reliability
def test_prune_and_resume_remove_pointer_temps_of_killed_writes(tmp_path):
    """A kill inside write_pointer left .latest.json.<hex>.tmp / .best.json.<hex>.tmp that nothing removed. Their
    names hold no pid: prune removes those older than a minute, a resume on the chief removes them all."""
    gpt, opt = _model_and_optimizer(0)
    opt.iterations.assign(2)
    ckpts = Checkpoints(tmp_path / "ck", gpt, opt, keep=1)
    ckpts.save(2, tokens=8)
    old, new = tmp_path / "ck/.latest.json.0123456789ab.tmp", tmp_path / "ck/.best.json.ba9876543210.tmp"
    for path in (old, new):
        path.write_text('{"step": 1')
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    prune_checkpoints(tmp_path / "ck", keep=1)
    assert not old.exists() and new.exists()  # a young one may be a live write's
    Checkpoints(tmp_path / "ck", gpt, opt, keep=1, chief=False).restore()
    assert new.exists()  # workers do not write
    ckpts.restore()
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["latest.json", "step-000002"]


@pytest.mark.reliability
def test_resaving_a_step_replaces_its_dir_through_a_hidden_one(tmp_path):
    """save_checkpoint removed an existing step dir in place before renaming the new one in: now it is moved
    aside (hidden) first, then removed, and the new checkpoint restores."""
    gpt, opt = _model_and_optimizer(0)
    opt.iterations.assign(3)
    save_checkpoint(tmp_path / "ck", 3, gpt, opt, {"tokens": 1})
    save_checkpoint(tmp_path / "ck", 3, gpt, opt, {"tokens": 2})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["latest.json", "step-000003"]
    fresh, fresh_opt = _model_and_optimizer(1)
    assert Checkpoints(tmp_path / "ck", fresh, fresh_opt, keep=1).restore().step == 3
    assert json.loads((tmp_path / "ck/step-000003/state.json").read_text())["tokens"] == 2
