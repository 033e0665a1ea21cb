"""``manifest.json``: what a prepared data directory holds, and checks against it.

A data directory is ``tokenizer/``, ``{train,val}-NNNNN-of-NNNNN.tfrecord`` shards and
``manifest.json`` (written last, atomically: a directory without it is not a data directory).
Top-level keys (format version :data:`FORMAT_VERSION`): ``format``, ``format_version``,
``created``, ``command``, ``config`` (the prepare settings), ``tokenizer`` (``type``,
``fingerprint``, ``vocab_size``, ``eot_id``, ``dir``), ``dtype``, ``record_tokens``,
``shard_tokens``, ``splits`` (per split: ``tokens``, ``documents``, ``shards`` = list of
``{file, tokens, records, bytes, sha256}``), ``split`` (how train/val were split), ``sources``
(path, bytes, mtime_ns, sha256, documents, invalid_utf8_bytes per input file), ``counts``,
``cleaning``, ``timing``.

Example:
    >>> m = load_manifest("data/shakespeare")  # doctest: +SKIP
    >>> m["tokenizer"]["vocab_size"], m["splits"]["train"]["tokens"]  # doctest: +SKIP
    (65, 1003854)
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from tfgpt.errors import DataError

MANIFEST = "manifest.json"
FORMAT = "tfgpt-token-shards"
FORMAT_VERSION = 1
TOKENIZER_DIR = "tokenizer"
SPLITS = ("train", "val")


def load_manifest(data_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``DATA_DIR/manifest.json``; :class:`DataError` if it is not a data dir.

    Example:
        >>> load_manifest("data/owt")["dtype"]  # doctest: +SKIP
        'uint16'
    """
    d = Path(data_dir)
    if not d.exists():
        raise DataError(f"data directory {d} does not exist (create it with `tfgpt prepare`)")
    if not d.is_dir():
        raise DataError(f"{d} is not a directory (expected a data directory made by `tfgpt prepare`)")
    path = d / MANIFEST
    if not path.is_file():
        raise DataError(f"{d} is not a tfgpt data directory: no {MANIFEST} (create it with `tfgpt prepare`)")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise DataError(f"{path}: not a tfgpt data manifest (format is not {FORMAT!r})")
    if m.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {m.get('format_version')!r} is not supported "
                        f"(this tfgpt reads {FORMAT_VERSION}); re-run `tfgpt prepare`")
    for key in ("tokenizer", "dtype", "splits"):
        if key not in m:
            raise DataError(f"{path}: missing key {key!r}")
    for key in ("fingerprint", "vocab_size"):
        if key not in m["tokenizer"]:
            raise DataError(f"{path}: missing key 'tokenizer.{key}'")
    for split, info in m["splits"].items():
        for key in ("tokens", "shards"):
            if key not in info:
                raise DataError(f"{path}: missing key 'splits.{split}.{key}'")
        for i, sh in enumerate(info["shards"]):
            for key in ("file", "tokens", "records", "bytes", "sha256"):
                if key not in sh:
                    raise DataError(f"{path}: missing key 'splits.{split}.shards[{i}].{key}'")
    return m


def check_data_dir(data_dir: str | os.PathLike, expected_tokenizer: str | None = None) -> dict[str, Any]:
    """Validate a DATA_DIR (:func:`tfgpt.data.manifest.load_manifest`); returns its manifest.

    ``expected_tokenizer`` (``data.tokenizer``: "char", "bpe", "gpt2") must match the tokenizer
    type the manifest records. Errors name what is missing or mismatched.
    """
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    if not (data_dir / TOKENIZER_DIR).is_dir():
        raise DataError(f"data dir {data_dir} has no {TOKENIZER_DIR}/ directory")
    check_tokenizer(manifest, data_dir=f"data dir {data_dir}", kind=expected_tokenizer)
    return manifest


def check_tokenizer(manifest: dict[str, Any], tokenizer: Any = None, data_dir: str | os.PathLike = "", *,
                    kind: str | None = None) -> None:
    """Refuse a data dir made with another tokenizer.

    ``tokenizer`` (a Tokenizer or its fingerprint) must be the very one the data was tokenised with;
    ``kind`` ("char", "bpe", "gpt2") only its type, as a config names it. ``None`` skips that check.

    Example:
        >>> m = {"tokenizer": {"type": "char", "fingerprint": "ab12"}}
        >>> check_tokenizer(m, "ab12", kind="char")
        >>> check_tokenizer(m, kind="bpe", data_dir="data/x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tfgpt.errors.DataError: data/x was built with the 'char' tokenizer but the config expects 'bpe'; ...
    """
    where = data_dir or "data directory"
    have_kind = manifest["tokenizer"].get("type")
    if kind is not None and have_kind is not None and have_kind != kind:
        raise DataError(f"{where} was built with the {have_kind!r} tokenizer but the config expects {kind!r}; "
                        f"prepare it again with --tokenizer {kind} or change the config")
    if tokenizer is None:
        return
    want = tokenizer if isinstance(tokenizer, str) else tokenizer.fingerprint()
    have = manifest["tokenizer"]["fingerprint"]
    if want != have:
        raise DataError(
            f"{where} was prepared with another tokenizer: data tokenizer "
            f"{have} != model tokenizer {want}; re-run `tfgpt prepare` with the model's tokenizer"
        )


def tokenizer_dir(data_dir: str | os.PathLike, manifest: dict[str, Any] | None = None) -> Path:
    """The data dir's saved tokenizer directory; :class:`DataError` when it is missing.

    Example:
        >>> tokenizer_dir("data/shakespeare")  # doctest: +SKIP
        PosixPath('data/shakespeare/tokenizer')
    """
    name = (manifest or {}).get("tokenizer", {}).get("dir", TOKENIZER_DIR)
    path = Path(data_dir) / name
    if not path.is_dir():
        raise DataError(f"data directory {data_dir} has no {name}/ directory (re-run `tfgpt prepare`)")
    return path


def split_shards(manifest: dict[str, Any], data_dir: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """The shard entries of ``split`` with absolute ``path``; :class:`DataError` if empty."""
    if split not in manifest["splits"]:
        raise DataError(f"{data_dir}: no split {split!r} (has {', '.join(manifest['splits'])})")
    shards = [dict(s, path=str(Path(data_dir) / s["file"])) for s in manifest["splits"][split]["shards"]]
    if not shards:
        raise DataError(f"{data_dir}: split {split!r} is empty (prepare with a larger --val-fraction)")
    return shards


def verify_shards(data_dir: str | os.PathLike, split: str | None = None, hashes: bool = False,
                  manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check every shard exists with the manifest's size (and sha256 when ``hashes``); return the
    manifest. A missing, truncated or altered shard raises :class:`DataError` naming it.

    Example:
        >>> verify_shards("data/owt", hashes=True)  # doctest: +SKIP
    """
    from tfgpt.data.shards import file_sha256

    m = manifest if manifest is not None else load_manifest(data_dir)
    for name in [split] if split else list(m["splits"]):
        for sh in m["splits"][name]["shards"]:
            p = Path(data_dir) / sh["file"]
            if not p.is_file():
                raise DataError(f"shard {p} listed in the manifest is missing")
            size = p.stat().st_size
            if size != sh["bytes"]:
                raise DataError(f"shard {p} is truncated or altered: {size} bytes, manifest says {sh['bytes']}")
            if hashes:
                digest = file_sha256(p)
                if digest != sh["sha256"]:
                    raise DataError(f"shard {p} is corrupt: sha256 {digest} != manifest {sh['sha256']}")
    return m


def build_manifest(config: dict[str, Any], tokenizer: Any, dtype: str, splits: dict[str, Any], method: str,
                   sources: list[Any], stats: Any, seconds: float, workers: int,
                   command: list[str] | None = None) -> dict[str, Any]:
    """The manifest of a finished ``prepare`` run (see the module doc for its keys).

    ``splits`` maps each split to its ``tokens``/``documents``/``shards``; ``sources`` are
    :class:`~tfgpt.data.sources.SourceInfo` s and ``stats`` the main pass's
    :class:`~tfgpt.data.clean.CleanStats`. ``command`` defaults to ``sys.argv``.
    """
    from tfgpt.data.split import SPLIT_RULES

    total_tokens = sum(s["tokens"] for s in splits.values())
    total_bytes = sum(i.bytes for i in sources)
    invalid = sum(i.invalid_utf8_bytes for i in sources)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(command if command is not None else sys.argv),
        "config": config,
        "tokenizer": {"type": tokenizer.kind, "fingerprint": tokenizer.fingerprint(),
                      "vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id, "dir": TOKENIZER_DIR},
        "dtype": dtype,
        "record_tokens": min(config["record_tokens"], config["shard_tokens"]),
        "shard_tokens": config["shard_tokens"],
        "splits": splits,
        "split": {"method": method, "val_fraction": config["val_fraction"], "seed": config["seed"],
                  "rule": SPLIT_RULES[method]},
        "sources": [i.to_json() for i in sources],
        "source_identity": [i.identity() for i in sources],
        "counts": {"documents_read": stats.documents_read, "documents_kept": stats.documents_kept,
                   "tokens": total_tokens, "input_bytes": total_bytes, "invalid_utf8_bytes_replaced": invalid},
        "cleaning": _cleaning(config, stats, sources, invalid),
        "timing": {"seconds": round(seconds, 3), "input_mb_per_s": round(total_bytes / 1e6 / max(seconds, 1e-9), 3),
                   "tokens_per_s": round(total_tokens / max(seconds, 1e-9), 1), "workers": workers},
    }


def _cleaning(config: dict[str, Any], stats: Any, sources: list[Any], invalid: int) -> dict[str, Any]:
    return {
        "normalization": "NFC",
        "line_endings": "\\r\\n and \\r -> \\n",
        "control_chars": "Unicode Cc except \\n and \\t removed",
        "min_chars": config["min_chars"],
        **stats.to_json(),
        "invalid_utf8_bytes_replaced": invalid,
        "files_with_invalid_utf8": [i.path for i in sources if i.invalid_utf8_bytes],
    }


def dumps(manifest: dict[str, Any]) -> str:
    """The text of ``manifest.json``: indented, UTF-8 kept as is, newline-terminated."""
    return json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
