"""The TFRecord token shard format: dtypes, names, the writer's record/shard layout, the reader's checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfgpt.data.shards import (
    FEATURE_COUNT,
    FEATURE_TOKENS,
    ShardWriter,
    dtype_from_name,
    dtype_name,
    file_sha256,
    read_shard_tokens,
    shard_name,
    token_dtype,
)
from tfgpt.errors import DataError


def test_dtypes_and_names() -> None:
    assert token_dtype(65) == np.dtype("<u2") and token_dtype(65_536) == np.dtype("<u2")
    assert token_dtype(65_537) == np.dtype("<u4")
    assert dtype_name(np.uint16) == "uint16" and dtype_name(np.dtype("<u4")) == "uint32"
    assert dtype_from_name("uint32") == np.dtype("<u4")
    with pytest.raises(DataError, match="manifest dtype must be uint16 or uint32, got 'int8'"):
        dtype_from_name("int8")
    assert shard_name("val", 3, 12) == "val-00003-of-00012.tfrecord"


def test_file_sha256(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _records(path: Path) -> list[tuple[int, list[int]]]:
    out = []
    for rec in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        ex = tf.train.Example.FromString(rec)
        n = ex.features.feature[FEATURE_COUNT].int64_list.value[0]
        toks = np.frombuffer(ex.features.feature[FEATURE_TOKENS].bytes_list.value[0], "<u2").tolist()
        out.append((n, toks))
    return out


def test_writer_cuts_records_and_shards(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, "train", np.uint16, shard_tokens=5, record_tokens=2)
    w.write(np.arange(3, dtype=np.uint16))
    w.write(np.arange(3, 12, dtype=np.uint16).tobytes())  # raw bytes work too
    shards = w.close()
    assert w.tokens == 12
    assert [(s["file"], s["tokens"], s["records"]) for s in shards] == [
        ("train-00000", 5, 3), ("train-00001", 5, 3), ("train-00002", 2, 1)]
    assert _records(tmp_path / "train-00000") == [(2, [0, 1]), (2, [2, 3]), (1, [4])]
    assert _records(tmp_path / "train-00002") == [(2, [10, 11])]
    for s in shards:
        data = (tmp_path / s["file"]).read_bytes()
        assert s["bytes"] == len(data) and s["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-00000", "train-00001", "train-00002"]


def test_same_tokens_same_bytes(tmp_path: Path) -> None:
    """Serialisation is deterministic (sorted feature map): the shard hash depends on the tokens only."""
    w = ShardWriter(tmp_path, "val", np.uint16, shard_tokens=100)
    w.write(np.array([7, 8, 9], np.uint16))
    (shard,) = w.close()
    ex = tf.train.Example()
    ex.features.feature[FEATURE_COUNT].int64_list.value.append(3)
    ex.features.feature[FEATURE_TOKENS].bytes_list.value.append(np.array([7, 8, 9], "<u2").tobytes())
    payload = ex.SerializeToString(deterministic=True)
    assert payload.index(b"\n\x01n") < payload.index(b"\n\x06tokens")  # "n" sorts before "tokens"
    with tf.io.TFRecordWriter(str(tmp_path / "expected")) as f:
        f.write(payload)
    assert shard["sha256"] == file_sha256(tmp_path / "expected")


def test_writer_refuses_non_positive_sizes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="must be positive, got 0, 4"):
        ShardWriter(tmp_path, "train", np.uint16, shard_tokens=0, record_tokens=4)


def test_read_back_uint32_and_checks(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, "train", np.uint32, shard_tokens=10, record_tokens=4)
    w.write(np.array([70_000, 1, 2, 3, 4, 5], np.uint32))
    (shard,) = w.close()
    path = tmp_path / shard["file"]
    assert read_shard_tokens(path, "uint32").tolist() == [70_000, 1, 2, 3, 4, 5]
    with pytest.raises(DataError, match="holds 6 tokens; the manifest says 7"):
        read_shard_tokens(path, "uint32", expected_tokens=7)
    with pytest.raises(DataError, match="is missing"):
        read_shard_tokens(tmp_path / "nope", np.uint32)
    cut = tmp_path / "cut"
    cut.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_shard_tokens(cut, np.uint32)
