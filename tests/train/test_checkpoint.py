"""Checkpoint pruning (no training): which step dirs survive."""

from __future__ import annotations

from tfgpt.train.checkpoint import prune_checkpoints, step_dir_name, step_of_dir, write_pointer


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
