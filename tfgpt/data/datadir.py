"""The output side of ``tfgpt prepare``: reuse a finished data dir, stage a new one, move it into place.

A run writes everything into ``DATA_DIR/.prepare-tmp/`` (:data:`STAGING`), moves the shards (now
with their final ``-of-N`` names) and the tokenizer into ``DATA_DIR``, and writes ``manifest.json``
last, atomically. So a killed run leaves either a finished data dir or one without a manifest, which
the next run clears and prepares from scratch; re-running a finished one with the same settings and
unchanged inputs is a no-op.

Example:
    >>> import tempfile
    >>> reuse_or_clear(Path(tempfile.mkdtemp()) / "new", {"seed": 1}, []) is None
    True
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from tfgpt.data.manifest import MANIFEST, SPLITS, TOKENIZER_DIR, load_manifest, verify_shards
from tfgpt.data.shards import shard_name
from tfgpt.data.split import TAIL_VAL, SplitStreams
from tfgpt.errors import DataError

STAGING = ".prepare-tmp"
_SHARD_RE = re.compile(r"(train|val)-\d{5}-of-\d{5}\.tfrecord")


def reuse_or_clear(out_dir: Path, config: dict[str, Any], identity: list) -> dict[str, Any] | None:
    """The manifest when ``out_dir`` is already done with these settings; clear leftovers otherwise."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} exists and is not a directory")
    if (out_dir / MANIFEST).is_file():
        m = load_manifest(out_dir)
        if m.get("config") == config and m.get("source_identity") == identity:
            verify_shards(out_dir, manifest=m)
            return m
        old = m.get("config", {})
        diff = [k for k in config if old.get(k) != config[k]] or ["inputs (files, sizes or times changed)"]
        raise DataError(
            f"{out_dir} already holds a prepared dataset made with different {', '.join(diff)}; "
            f"use another --out or delete it"
        )
    if out_dir.is_dir():
        foreign = [p.name for p in out_dir.iterdir() if not _ours(p.name)]
        if foreign:
            raise DataError(
                f"--out {out_dir} is not empty and is not a tfgpt data directory (holds {foreign[0]!r}); "
                f"choose a new or empty directory"
            )
        for p in out_dir.iterdir():  # leftovers of an interrupted run: start again
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    return None


def _ours(name: str) -> bool:
    return (name in (STAGING, TOKENIZER_DIR) or bool(_SHARD_RE.fullmatch(name))
            or name.startswith(f".{MANIFEST}."))


def move_into_place(staging: Path, out_dir: Path, streams: SplitStreams) -> dict[str, Any]:
    """Give the staged shards and tokenizer their final names in ``out_dir``; return the manifest's
    ``splits`` section (``tokens``, ``documents``, ``shards`` per split)."""
    splits: dict[str, Any] = {}
    for name in SPLITS:
        shards = streams.shards[name]
        for i, sh in enumerate(shards):
            final = shard_name(name, i, len(shards))
            os.replace(staging / sh["file"], out_dir / final)
            sh["file"] = final
        splits[name] = {"tokens": streams.tokens(name), "documents": streams.documents[name], "shards": shards}
    if streams.method == "tail":  # val holds no whole document: say what it is instead of "documents": 0
        splits["val"]["documents"] = None
        splits["val"]["holds"] = TAIL_VAL
    os.replace(staging / TOKENIZER_DIR, out_dir / TOKENIZER_DIR)
    return splits
