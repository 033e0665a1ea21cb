"""Pickle refusal (never opened), file digests for source.json, one-line library errors."""

from __future__ import annotations

import hashlib

import pytest

from tfgpt.convert.files import PICKLE_SUFFIXES, file_record, one_line, pickle_files, refuse_pickle, sha256_file
from tfgpt.errors import ConvertError


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.pth", "w.pkl", "w.pickle",
                                  "last.ckpt", "m.joblib", "MODEL.BIN"])
def test_pickle_names_refused(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    assert pickle_files(tmp_path) == [tmp_path / name] == pickle_files(tmp_path / name)
    with pytest.raises(ConvertError, match=rf"{name}: a pickle-based file.*never opens pickle.*safetensors"):
        refuse_pickle(tmp_path)


def test_safe_names_pass(tmp_path):
    for name in ("model.safetensors", "model.ckpt.index", "model.ckpt.data-00000-of-00001", "config.json"):
        (tmp_path / name).write_bytes(b"")
    refuse_pickle(tmp_path)
    assert pickle_files(tmp_path) == [] and pickle_files(tmp_path / "absent") == []
    assert ".bin" in PICKLE_SUFFIXES


def test_digests(tmp_path):
    data = b"x" * (3 << 20) + b"tail"
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "w.safetensors"
    f.write_bytes(data)
    assert sha256_file(f, chunk=1000) == hashlib.sha256(data).hexdigest()
    assert file_record(f, tmp_path) == {"path": "sub/w.safetensors", "sha256": hashlib.sha256(data).hexdigest(),
                                        "size_bytes": len(data)}
    assert file_record(f, tmp_path / "elsewhere")["path"] == str(f.resolve())


def test_one_line():
    assert one_line(ValueError("a\n  b\n\tc")) == "ValueError: a b c"
