"""lm_dataset(): windows equal the source, determinism, exact resume, sharding, manifest checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfgpt.data.manifest import load_manifest, verify_shards
from tfgpt.data.pipeline import (
    lm_dataset,
    load_data_tokenizer,
    named_shard_errors,
    random_stream_layout,
    read_split_tokens,
)
from tfgpt.errors import DataError


def _batches(ds: tf.data.Dataset, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_eval_windows_round_trip_to_text(char_dir: Path, shakespeare_file: Path) -> None:
    text = shakespeare_file.read_text()
    tok = load_data_tokenizer(char_dir)
    block, batch = 128, 16
    ds = lm_dataset(char_dir, "val", block, batch, shuffle=False, repeat=False)
    xs = np.concatenate([x for x, _ in _batches(ds, -1)])
    ys = np.concatenate([y for _, y in _batches(ds, -1)])
    val_text = text[-round(0.1 * len(text)):]
    n_windows = (len(val_text) - 1) // block
    assert xs.shape == (n_windows, block) and xs.dtype == np.int32
    for i in (0, 1, n_windows - 1):
        assert tok.decode(xs[i].tolist()) == val_text[i * block:(i + 1) * block]
        assert tok.decode(ys[i].tolist()) == val_text[i * block + 1:(i + 1) * block + 1]


def test_random_windows_are_source_windows(char_dir: Path) -> None:
    tokens = read_split_tokens(char_dir, "train").astype(np.int32)
    hay = tokens.tobytes()
    for x, y in _batches(lm_dataset(char_dir, "train", 64, 8, seed=3), 6):
        assert x.shape == (8, 64) and np.array_equal(x[:, 1:], y[:, :-1])
        for row, yrow in zip(x, y, strict=True):
            pos = hay.find(row.tobytes())
            assert pos >= 0 and pos % 4 == 0
            assert tokens[pos // 4 + 64] == yrow[-1] or hay.count(row.tobytes()) > 1


def test_random_windows_stay_inside_one_unit_with_small_shards(tmp_path: Path, verdict_file: Path) -> None:
    """Shards smaller than a window are grouped with their neighbours into units; a round joins units
    that are not neighbours in the stream, and no window may cross from one into another."""
    from tfgpt.data.prepare import prepare

    out = tmp_path / "small"
    src = tmp_path / "verdict-6k.txt"  # ~180 shards of 30 tokens: plenty of units, a third of the whole text's files
    src.write_text(verdict_file.read_text(encoding="utf-8")[:6000], encoding="utf-8")
    prepare([str(src)], str(out), "char", val_fraction=0.1, workers=0, shard_tokens=30, progress=False,
            command=["test"])
    shards = load_manifest(out)["splits"]["train"]["shards"]
    block = 40
    layout = random_stream_layout(shards, block, 8)
    assert len(layout["units"]) > 50 and max(len(u) for u in layout["units"]) > 1
    bounds = np.cumsum([0] + [s["tokens"] for s in shards])
    unit_of = np.zeros(bounds[-1], np.int64)
    for i, unit in enumerate(layout["units"]):
        unit_of[bounds[unit[0]]:bounds[unit[-1] + 1]] = i
    tokens = read_split_tokens(out, "train").astype(np.int32)
    hay = tokens.tobytes()
    for sim in (1, 4):
        for x, y in _batches(lm_dataset(out, "train", block, 8, seed=0, shards_in_memory=sim), 30):
            for row, yrow in zip(x, y, strict=True):
                window = np.concatenate([row, yrow[-1:]]).tobytes()
                pos = hay.find(window)
                while pos > 0 and pos % 4:  # a match must start on a token
                    pos = hay.find(window, pos + 1)
                assert pos >= 0, "window is not a slice of the token stream"
                pos //= 4
                assert unit_of[pos] == unit_of[pos + block], "window crosses from one unit into another"


def test_deterministic_for_a_seed(char_dir: Path) -> None:
    a = _batches(lm_dataset(char_dir, "train", 32, 4, seed=7), 5)
    b = _batches(lm_dataset(char_dir, "train", 32, 4, seed=7), 5)
    c = _batches(lm_dataset(char_dir, "train", 32, 4, seed=8), 5)
    assert all(np.array_equal(p[0], q[0]) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c, strict=True))


def test_resume_at_step_is_exact_across_rounds_and_epochs(char_dir: Path) -> None:
    # one shard per round: 4 train shards -> 4 rounds per epoch (of 7 batches)
    m = load_manifest(char_dir)
    shards = m["splits"]["train"]["shards"]
    layout = random_stream_layout(shards, 128, 16, shards_in_memory=1)
    bpr = layout["batches_per_round"]
    assert layout["groups_per_epoch"] == 4 and bpr == 7
    total = 2 * layout["batches_per_epoch"] + 3
    kw = dict(seed=1, shards_in_memory=1)
    full = _batches(lm_dataset(char_dir, "train", 128, 16, **kw), total)
    for step in (1, bpr - 1, bpr, bpr + 1, layout["batches_per_epoch"] + 2):
        resumed = _batches(lm_dataset(char_dir, "train", 128, 16, start_step=step, **kw), 2)
        assert np.array_equal(resumed[0][0], full[step][0]) and np.array_equal(resumed[1][1], full[step + 1][1])
    # epochs visit shards in different orders
    once = _batches(lm_dataset(char_dir, "train", 128, 16, repeat=False, **kw), -1)
    assert len(once) == layout["batches_per_epoch"]


def test_eval_resume_and_repeat(char_dir: Path) -> None:
    full = _batches(lm_dataset(char_dir, "val", 64, 8, shuffle=False, repeat=True), 30)
    later = _batches(lm_dataset(char_dir, "val", 64, 8, shuffle=False, repeat=True, start_step=25), 5)
    assert all(np.array_equal(p[0], q[0]) for p, q in zip(full[25:], later, strict=True))
    assert all(x.shape == (8, 64) for x, _ in full)


def test_sharding_by_file(char_dir: Path) -> None:
    tokens = read_split_tokens(char_dir, "train")
    shards = load_manifest(char_dir)["splits"]["train"]["shards"]
    starts = np.cumsum([0] + [s["tokens"] for s in shards])
    for i in range(2):
        ds = lm_dataset(char_dir, "train", 100, 50, shuffle=False, repeat=False, num_shards=2, shard_index=i)
        assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF
        xs = np.concatenate([x for x, _ in _batches(ds, -1)]).reshape(-1)
        mine = np.concatenate([tokens[starts[j]:starts[j + 1]] for j in range(i, len(shards), 2)])
        assert np.array_equal(xs, mine[:xs.size])  # worker i reads files i, i+2, ... in order
    ds = lm_dataset(char_dir, "val", 64, 8, shuffle=False)
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.FILE
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    x, _ = _batches(lm_dataset(char_dir, "train", 64, 4, seed=0, input_context=ctx), 1)[0]
    assert x.shape == (4, 64)
    with pytest.raises(DataError, match="fewer than num_shards"):
        lm_dataset(char_dir, "val", 64, 8, num_shards=2, shard_index=0)


def test_tokenizer_mismatch_refused_with_both_hashes(char_dir: Path, gpt2_dir_prepared: Path) -> None:
    char_tok = load_data_tokenizer(char_dir)
    lm_dataset(char_dir, "train", 64, 4, tokenizer=char_tok)
    other = load_data_tokenizer(gpt2_dir_prepared)
    with pytest.raises(DataError) as e:
        lm_dataset(char_dir, "train", 64, 4, tokenizer=other)
    assert char_tok.fingerprint() in str(e.value) and other.fingerprint() in str(e.value)


def test_not_a_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        lm_dataset(tmp_path / "nope", "train", 8, 2)
    with pytest.raises(DataError, match="no manifest.json"):
        lm_dataset(tmp_path, "train", 8, 2)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(DataError, match="not valid JSON"):
        lm_dataset(tmp_path, "train", 8, 2)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_truncated_shard_named(char_dir: Path, tmp_path: Path) -> None:
    d = _copy(char_dir, tmp_path / "d")
    shard = d / load_manifest(d)["splits"]["train"]["shards"][1]["file"]
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(DataError, match=f"shard {shard} is truncated"):
        lm_dataset(d, "train", 64, 4)


def test_corrupted_shard_never_silent(char_dir: Path, tmp_path: Path) -> None:
    d = _copy(char_dir, tmp_path / "d")
    m = load_manifest(d)
    shard = d / m["splits"]["val"]["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[5000] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"shard {shard} is corrupt: sha256"):
        lm_dataset(d, "val", 64, 4, verify_hashes=True)
    with pytest.raises(DataError, match="corrupt"):
        verify_shards(d, hashes=True)
    # without hash verification the TFRecord CRC still stops the stream
    for shuffle in (False, True):
        with pytest.raises(tf.errors.DataLossError):
            _batches(lm_dataset(d, "val", 64, 4, shuffle=shuffle), 50)


def test_manifest_counts_must_match_shards(char_dir: Path, tmp_path: Path) -> None:
    d = _copy(char_dir, tmp_path / "d")
    path = d / "manifest.json"
    m = json.loads(path.read_text())
    m["splits"]["train"]["shards"][0]["tokens"] += 10
    path.write_text(json.dumps(m))
    with pytest.raises(tf.errors.InvalidArgumentError, match="train-00000-of-00004.tfrecord"):
        _batches(lm_dataset(d, "train", 64, 4, shards_in_memory=4), 3)
    # what train and eval see (they read under named_shard_errors): one line naming the shard and the manifest,
    # not the assertion's TensorFlow traceback
    with pytest.raises(DataError, match=r"train-00000-of-00004\.tfrecord does not hold the tokens .*manifest\.json"):
        with named_shard_errors(d):
            _batches(lm_dataset(d, "train", 64, 4, shards_in_memory=4), 3)


def test_split_too_small_or_missing(char_dir: Path) -> None:
    with pytest.raises(DataError, match="no split 'test'"):
        lm_dataset(char_dir, "test", 64, 4)
    with pytest.raises(DataError, match="fewer than block_size"):
        lm_dataset(char_dir, "val", 10**6, 4)
