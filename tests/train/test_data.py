"""tfgpt.train.data: in-memory and DATA_DIR token sources (shapes, shift, resume, shards) and check_data_dir."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tfgpt.errors import DataError
from tfgpt.train.data import array_source, check_data_dir, data_dir_source


def _take(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_array_source_windows_resume_and_shards():
    src = array_source({"train": np.arange(1000), "val": np.arange(300)})
    batches = _take(src("train", batch_size=4, block_size=8, seed=3), 5)
    x, y = batches[0]
    assert x.shape == y.shape == (4, 8) and x.dtype == np.int32
    # tokens are 0..999, so each row is 8 consecutive ids and its target is the next id
    np.testing.assert_array_equal(x, x[:, :1] + np.arange(8))
    np.testing.assert_array_equal(y, x + 1)
    assert 0 <= x.min() and y.max() <= 999
    # start_step=3 yields what the fresh stream yields from its 4th batch on
    later = _take(src("train", 4, 8, 3, start_step=3), 2)
    np.testing.assert_array_equal(later[0][0], batches[3][0])
    np.testing.assert_array_equal(later[1][1], batches[4][1])
    # two shards of the global batch: rows 0-1 and rows 2-3
    halves = [_take(src("train", 4, 8, 3, num_shards=2, shard_index=i), 1)[0][0] for i in (0, 1)]
    np.testing.assert_array_equal(np.concatenate(halves), x)
    assert not np.array_equal(_take(src("train", 4, 8, 4), 1)[0][0], x)  # another seed, other windows


def test_array_source_refuses_bad_requests():
    src = array_source({"train": np.arange(9)})
    with pytest.raises(DataError, match="no split 'val'; available: train"):
        src("val", 2, 4, 0)
    with pytest.raises(DataError, match="fewer than block_size"):
        src("train", 2, 8, 0)
    with pytest.raises(DataError, match="batch size 3 does not divide among 2 workers"):
        src("train", 3, 4, 0, num_shards=2)
    with pytest.raises(DataError, match="shard_index 2 out of range"):
        src("train", 2, 4, 0, num_shards=2, shard_index=2)


def test_check_data_dir(data_dir, tmp_path):
    manifest = check_data_dir(data_dir, "char")
    assert manifest["tokenizer"]["type"] == "char" and set(manifest["splits"]) == {"train", "val"}
    with pytest.raises(DataError, match="built with the 'char' tokenizer but the config expects 'bpe'"):
        check_data_dir(data_dir, "bpe")
    with pytest.raises(DataError, match="does not exist"):
        check_data_dir(tmp_path / "missing")
    no_tok = shutil.copytree(data_dir, tmp_path / "no-tok")
    shutil.rmtree(no_tok / "tokenizer")
    with pytest.raises(DataError, match="has no tokenizer/ directory"):
        check_data_dir(no_tok)
    bad = shutil.copytree(data_dir, tmp_path / "bad")
    (bad / "manifest.json").write_text("{")
    with pytest.raises(DataError, match="manifest.json: not valid JSON"):
        check_data_dir(bad)


def test_data_dir_source_shift_and_resume(data_dir):
    vocab = json.loads((data_dir / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    src = data_dir_source(data_dir)
    first = _take(src("train", 4, 16, 0), 3)
    x, y = first[0]
    assert x.shape == (4, 16) and 0 <= x.min() and x.max() < vocab
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    np.testing.assert_array_equal(_take(src("train", 4, 16, 0, start_step=2), 1)[0][0], first[2][0])
