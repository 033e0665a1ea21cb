"""The output directory of prepare: reuse a finished one, clear an interrupted one, move shards into place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfgpt.data.datadir import STAGING, move_into_place, reuse_or_clear
from tfgpt.data.split import SplitStreams
from tfgpt.errors import DataError

CONFIG = {"tokenizer": "char", "seed": 1}


def _finished(d: Path) -> dict:
    m = {"format": "tfgpt-token-shards", "format_version": 1, "config": CONFIG, "source_identity": [["a", 1, 2]],
         "tokenizer": {"fingerprint": "x", "vocab_size": 3}, "dtype": "uint16",
         "splits": {"train": {"tokens": 0, "shards": []}}}
    d.mkdir(exist_ok=True)
    (d / "manifest.json").write_text(json.dumps(m))
    return m


def test_new_and_finished_dirs(tmp_path: Path) -> None:
    assert reuse_or_clear(tmp_path / "new", CONFIG, []) is None
    m = _finished(tmp_path / "done")
    assert reuse_or_clear(tmp_path / "done", CONFIG, [["a", 1, 2]]) == m
    with pytest.raises(DataError, match="made with different seed; use another --out"):
        reuse_or_clear(tmp_path / "done", {"tokenizer": "char", "seed": 2}, [["a", 1, 2]])
    with pytest.raises(DataError, match=r"different inputs \(files, sizes or times changed\)"):
        reuse_or_clear(tmp_path / "done", CONFIG, [["a", 1, 3]])


def test_interrupted_run_cleared_foreign_dir_refused(tmp_path: Path) -> None:
    d = tmp_path / "d"
    (d / STAGING / "tokenizer").mkdir(parents=True)
    (d / "train-00000-of-00002.tfrecord").write_bytes(b"x")
    (d / ".manifest.json.tmp123").write_text("{")
    assert reuse_or_clear(d, CONFIG, []) is None and list(d.iterdir()) == []
    (d / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not empty and is not a tfgpt data directory \\(holds 'notes.txt'\\)"):
        reuse_or_clear(d, CONFIG, [])
    assert (d / "notes.txt").read_text() == "mine"
    (tmp_path / "f").write_text("")
    with pytest.raises(DataError, match="exists and is not a directory"):
        reuse_or_clear(tmp_path / "f", CONFIG, [])


def test_move_into_place_names_shards_of_n(tmp_path: Path) -> None:
    staging = tmp_path / STAGING
    (staging / "tokenizer").mkdir(parents=True)
    shards = {"train": [], "val": []}
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            (staging / f"{split}-{i:05d}").write_bytes(b"t")
            shards[split].append({"file": f"{split}-{i:05d}", "tokens": 5 + i, "records": 1, "bytes": 1,
                                  "sha256": "s"})
    splits = move_into_place(staging, tmp_path, SplitStreams(shards, {"train": 3, "val": 1}))
    assert splits["train"]["tokens"] == 11 and splits["train"]["documents"] == 3
    assert [s["file"] for s in splits["train"]["shards"]] == ["train-00000-of-00002.tfrecord",
                                                              "train-00001-of-00002.tfrecord"]
    assert splits["val"] == {"tokens": 5, "documents": 1, "shards": [
        {"file": "val-00000-of-00001.tfrecord", "tokens": 5, "records": 1, "bytes": 1, "sha256": "s"}]}
    assert sorted(p.name for p in tmp_path.iterdir()) == [STAGING, "tokenizer", "train-00000-of-00002.tfrecord",
                                                          "train-00001-of-00002.tfrecord",
                                                          "val-00000-of-00001.tfrecord"]
    assert list(staging.iterdir()) == []


def test_a_tail_split_says_what_its_val_holds(tmp_path: Path) -> None:
    from tfgpt.data.split import TAIL_VAL

    staging = tmp_path / STAGING
    (staging / "tokenizer").mkdir(parents=True)
    shards = {}
    for split in ("train", "val"):
        (staging / f"{split}-00000").write_bytes(b"t")
        shards[split] = [{"file": f"{split}-00000", "tokens": 4, "records": 1, "bytes": 1, "sha256": "s"}]
    splits = move_into_place(staging, tmp_path, SplitStreams(shards, {"train": 1, "val": 0}, method="tail"))
    assert splits["val"]["documents"] is None and splits["val"]["holds"] == TAIL_VAL
    assert splits["train"]["documents"] == 1 and "holds" not in splits["train"]
