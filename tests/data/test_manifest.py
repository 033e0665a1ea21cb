"""manifest.json: building it, reading and validating it, and the checks data users make against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tfgpt.data.clean import CleanStats
from tfgpt.data.manifest import (
    build_manifest,
    check_tokenizer,
    dumps,
    load_manifest,
    split_shards,
    tokenizer_dir,
    verify_shards,
)
from tfgpt.data.sources import SourceInfo
from tfgpt.errors import DataError

CONFIG = {"tokenizer": "char", "vocab_size": None, "val_fraction": 0.1, "dedupe": False, "near_dedupe": False,
          "shard_tokens": 100, "record_tokens": 1000, "text_field": "text", "min_chars": 1, "seed": 7,
          "sample_chars": None, "gpt2_dir": None}


class _Tok:
    kind, vocab_size, eot_id = "char", 65, None

    def fingerprint(self) -> str:
        return "f" * 64


def _manifest(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "train-00000-of-00001.tfrecord").write_bytes(b"x" * 10)
    shard = {"file": "train-00000-of-00001.tfrecord", "tokens": 4, "records": 1, "bytes": 10,
             "sha256": "0" * 64}
    splits = {"train": {"tokens": 4, "documents": 2, "shards": [shard]},
              "val": {"tokens": 0, "documents": 0, "shards": []}}
    stats = CleanStats(documents_read=3, documents_kept=2, dropped_empty=1, chars_read=9, chars_kept=8)
    src = SourceInfo(path="/in/a.txt", bytes=12, mtime_ns=5, sha256="ab", documents=3, invalid_utf8_bytes=2)
    return build_manifest(CONFIG, _Tok(), "uint16", splits, "hash", [src], stats, seconds=2.0, workers=0,
                          command=["tfgpt", "prepare", "--out", "my data"])


def test_build_manifest_sections(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    assert list(m) == ["format", "format_version", "created", "command", "config", "tokenizer", "dtype",
                       "record_tokens", "shard_tokens", "splits", "split", "sources", "source_identity",
                       "counts", "cleaning", "timing"]
    assert m["format"] == "tfgpt-token-shards" and m["format_version"] == 1
    assert m["command"] == "tfgpt prepare --out 'my data'"
    assert m["tokenizer"] == {"type": "char", "fingerprint": "f" * 64, "vocab_size": 65, "eot_id": None,
                              "dir": "tokenizer"}
    assert (m["record_tokens"], m["shard_tokens"]) == (100, 100)  # a record never exceeds a shard
    assert m["split"] == {"method": "hash", "val_fraction": 0.1, "seed": 7,
                          "rule": "val if blake2b(first-piece digest, key=seed) / 2**64 < val_fraction"}
    assert m["source_identity"] == [["/in/a.txt", 12, 5]]
    assert m["counts"] == {"documents_read": 3, "documents_kept": 2, "tokens": 4, "input_bytes": 12,
                           "invalid_utf8_bytes_replaced": 2}
    assert m["cleaning"]["dropped"]["empty"] == 1 and m["cleaning"]["files_with_invalid_utf8"] == ["/in/a.txt"]
    assert m["cleaning"]["line_endings"] == "\\r\\n and \\r -> \\n"
    assert m["timing"] == {"seconds": 2.0, "input_mb_per_s": 0.0, "tokens_per_s": 2.0, "workers": 0}


def _write(tmp_path: Path, m: dict[str, Any]) -> Path:
    (tmp_path / "manifest.json").write_text(dumps(m), encoding="utf-8")
    return tmp_path


def test_load_and_verify(tmp_path: Path) -> None:
    d = _write(tmp_path, _manifest(tmp_path))
    assert load_manifest(d)["splits"]["train"]["tokens"] == 4
    assert verify_shards(d)["dtype"] == "uint16"
    with pytest.raises(DataError, match="is corrupt: sha256 "):
        verify_shards(d, "train", hashes=True)
    (tmp_path / "train-00000-of-00001.tfrecord").write_bytes(b"x" * 9)
    with pytest.raises(DataError, match="truncated or altered: 9 bytes, manifest says 10"):
        verify_shards(d)
    (tmp_path / "train-00000-of-00001.tfrecord").unlink()
    with pytest.raises(DataError, match="listed in the manifest is missing"):
        verify_shards(d)


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.update(format="other"), "not a tfgpt data manifest"),
    (lambda m: m.update(format_version=2), "format_version 2 is not supported"),
    (lambda m: m.pop("dtype"), "missing key 'dtype'"),
    (lambda m: m["tokenizer"].pop("fingerprint"), "missing key 'tokenizer.fingerprint'"),
    (lambda m: m["splits"]["val"].pop("tokens"), "missing key 'splits.val.tokens'"),
    (lambda m: m["splits"]["train"]["shards"][0].pop("sha256"), r"missing key 'splits.train.shards\[0\].sha256'"),
])
def test_load_refuses_bad_manifests(tmp_path: Path, change, message: str) -> None:
    m = _manifest(tmp_path)
    change(m)
    with pytest.raises(DataError, match=message):
        load_manifest(_write(tmp_path, m))


def test_load_refuses_non_data_dirs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_manifest(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a directory"):
        load_manifest(tmp_path / "file")
    with pytest.raises(DataError, match="no manifest.json"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(DataError, match="manifest.json: not valid JSON"):
        load_manifest(tmp_path)


def test_check_tokenizer_by_kind_and_fingerprint(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    check_tokenizer(m, _Tok(), tmp_path, kind="char")
    check_tokenizer(m)  # nothing to check
    with pytest.raises(DataError, match="built with the 'char' tokenizer but the config expects 'bpe'"):
        check_tokenizer(m, kind="bpe", data_dir=tmp_path)
    with pytest.raises(DataError, match=f"data tokenizer {'f' * 64} != model tokenizer abc"):
        check_tokenizer(m, "abc", tmp_path)


def test_tokenizer_dir_and_split_shards(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    with pytest.raises(DataError, match="has no tokenizer/ directory"):
        tokenizer_dir(tmp_path, m)
    (tmp_path / "tokenizer").mkdir()
    assert tokenizer_dir(tmp_path) == tmp_path / "tokenizer"
    (shard,) = split_shards(m, tmp_path, "train")
    assert shard["path"] == str(tmp_path / "train-00000-of-00001.tfrecord")
    with pytest.raises(DataError, match="split 'val' is empty"):
        split_shards(m, tmp_path, "val")
    with pytest.raises(DataError, match="no split 'test' \\(has train, val\\)"):
        split_shards(m, tmp_path, "test")


def test_dumps_keeps_unicode_and_ends_with_newline() -> None:
    assert dumps({"a": "é"}) == '{\n "a": "é"\n}\n'
    assert json.loads(dumps({"a": [1]})) == {"a": [1]}
