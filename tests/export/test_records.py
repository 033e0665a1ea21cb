"""tfgpt.export.records: a .tflite in its export dir is checked against export.json's size and sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tfgpt.errors import ExportError
from tfgpt.export.records import check_tflite_digest


def _export(tmp_path: Path, data: bytes) -> Path:
    (tmp_path / "tflite").mkdir()
    path = tmp_path / "tflite" / "model.tflite"
    path.write_bytes(data)
    entry = {"size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (tmp_path / "export.json").write_text(json.dumps({"tflite": {"files": {"tflite/model.tflite": entry}}}))
    return path


def test_an_intact_file_passes_and_a_flipped_byte_is_named(tmp_path: Path) -> None:
    path = _export(tmp_path, bytes(range(256)) * 4)
    check_tflite_digest(path)
    data = bytearray(path.read_bytes())
    data[512] ^= 0xFF  # same size: only the digest can tell (a flatbuffer has no checksum)
    path.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"model\.tflite is corrupt: its size or sha256 differs"):
        check_tflite_digest(path)


def test_no_record_means_no_check_and_a_broken_record_is_named(tmp_path: Path) -> None:
    lone = tmp_path / "elsewhere" / "model.tflite"
    lone.parent.mkdir()
    lone.write_bytes(b"anything")
    check_tflite_digest(lone)  # copied out of its export: nothing to compare with
    (tmp_path / "e").mkdir()
    path = _export(tmp_path / "e", b"x" * 64)
    (tmp_path / "e" / "export.json").write_text("[1, 2")
    with pytest.raises(ExportError, match=r"export\.json: not a readable export record"):
        check_tflite_digest(path)
