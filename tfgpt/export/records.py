"""What an export dir records about its files, and the checks a loader makes against it (no TensorFlow).

``export.json`` (:data:`EXPORT_JSON`) lists each exported file's size and sha256. A loader checks a
file against it before parsing, because neither a ``.tflite`` flatbuffer nor TensorFlow's loader says
which file is damaged: a flipped weight byte in a ``.tflite`` runs silently.

Example:
    >>> import tempfile
    >>> check_tflite_digest(Path(tempfile.mkdtemp()) / "model.tflite")  # no export.json beside: nothing to check
"""

from __future__ import annotations

import json
from pathlib import Path

from tfgpt.data.shards import file_sha256
from tfgpt.errors import ExportError

EXPORT_JSON = "export.json"


def check_tflite_digest(path: Path) -> None:
    """When ``path`` sits in its export dir (``EXPORT/tflite/NAME``), its size and sha256 must be the ones
    ``EXPORT/export.json`` recorded: a flatbuffer has no checksum, so flipped weight bytes would run silently.
    A file copied out of its export has no record to check against."""
    export_json = path.parent.parent / EXPORT_JSON
    if path.parent.name != "tflite" or not export_json.is_file():
        return
    try:
        files = json.loads(export_json.read_text(encoding="utf-8")).get("tflite", {}).get("files", {})
        entry = files.get(f"tflite/{path.name}")
    except (ValueError, AttributeError) as e:
        raise ExportError(f"{export_json}: not a readable export record ({type(e).__name__})") from None
    if not isinstance(entry, dict):
        return
    size, want = entry.get("size_bytes"), entry.get("sha256")
    if (isinstance(size, int) and path.stat().st_size != size) or (isinstance(want, str) and file_sha256(path) != want):
        raise ExportError(f"{path} is corrupt: its size or sha256 differs from the one {export_json} recorded; "
                          "re-export")
