"""Train/val split: the document hash rule, and the tail split when one split stays empty."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfgpt.data.shards import ShardWriter, read_shard_tokens
from tfgpt.data.split import SplitStreams, ensure_val, is_val


def test_is_val_rule() -> None:
    keys = [bytes([i]) * 16 for i in range(4)]
    assert [is_val(k, 1337, 0.5) for k in keys] == [True, True, False, False]
    assert [is_val(k, 1337, 0.0) for k in keys] == [False] * 4
    many = [i.to_bytes(16, "little") for i in range(4000)]
    share = sum(is_val(k, 1, 0.25) for k in many) / len(many)
    assert 0.23 < share < 0.27
    assert [is_val(k, 1, 0.25) for k in many] != [is_val(k, 2, 0.25) for k in many]  # the seed matters


def _stream(tmp_path: Path, split: str, tokens: list[int], shard_tokens: int) -> list[dict]:
    w = ShardWriter(tmp_path, split, np.uint16, shard_tokens, record_tokens=3)
    w.write(np.array(tokens, np.uint16))
    return w.close()


def _tokens(tmp_path: Path, shards: list[dict]) -> list[int]:
    return [t for s in shards for t in read_shard_tokens(tmp_path / s["file"], np.uint16, s["tokens"]).tolist()]


def test_hash_split_kept_when_both_splits_have_tokens(tmp_path: Path) -> None:
    streams = SplitStreams({"train": _stream(tmp_path, "train", [1, 2], 4), "val": _stream(tmp_path, "val", [3], 4)},
                           {"train": 1, "val": 1})
    assert ensure_val(tmp_path, streams, 0.5, np.uint16, 4, 3) is streams
    only_train = SplitStreams({"train": streams.shards["train"], "val": []}, {"train": 1, "val": 0})
    assert ensure_val(tmp_path, only_train, 0.0, np.uint16, 4, 3) is only_train  # no val asked for


def test_tail_split_cuts_the_stream(tmp_path: Path) -> None:
    train = _stream(tmp_path, "train", list(range(10)), shard_tokens=4)  # shards of 4, 4, 2 tokens
    out = ensure_val(tmp_path, SplitStreams({"train": train, "val": []}, {"train": 1, "val": 0}), 0.3,
                     np.uint16, 4, 3)
    assert out.method == "tail" and out.documents == {"train": 1, "val": 0}
    assert _tokens(tmp_path, out.shards["train"]) == [0, 1, 2, 3, 4, 5, 6]
    assert _tokens(tmp_path, out.shards["val"]) == [7, 8, 9]
    assert [s["tokens"] for s in out.shards["train"]] == [4, 3]


def test_tail_split_of_a_val_only_stream_and_of_one_token(tmp_path: Path) -> None:
    val = _stream(tmp_path, "val", [5, 6, 7, 8], shard_tokens=8)
    out = ensure_val(tmp_path, SplitStreams({"train": [], "val": val}, {"train": 0, "val": 2}), 0.1,
                     np.uint16, 8, 3)
    assert out.documents == {"train": 2, "val": 0}
    assert _tokens(tmp_path, out.shards["train"]) == [5, 6, 7] and _tokens(tmp_path, out.shards["val"]) == [8]
    one = tmp_path / "one"
    one.mkdir()
    single = SplitStreams({"train": _stream(one, "train", [9], 8), "val": []}, {"train": 1, "val": 0})
    out = ensure_val(one, single, 0.5, np.uint16, 8, 3)
    assert out.method == "tail" and out.shards["val"] == [] and _tokens(one, out.shards["train"]) == [9]
