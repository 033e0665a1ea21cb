"""The on-disk token shard format (TFRecord) and its writer/reader.

A shard ``{split}-{i:05d}-of-{n:05d}.tfrecord`` is a TFRecord file of ``tf.train.Example``s, each
holding a run of consecutive tokens of the split's stream:

* ``tokens``: ONE bytes feature, the raw little-endian ``uint16`` (vocab ≤ 65,536) or ``uint32`` ids;
* ``n``: int64, how many tokens the record holds.

Records hold :data:`RECORD_TOKENS` tokens (the last of a shard fewer); a shard holds ``shard_tokens``
tokens (the last of a split fewer). Each shard is written to a hidden temp file and renamed when
complete, so a shard that exists under its name is whole; its sha256, size, record and token counts
go into ``manifest.json``. Decode in TensorFlow with ``tf.io.decode_raw(tokens, tf.uint16)``.

Example:
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> w = ShardWriter(out, "train", np.uint16, shard_tokens=1 << 20)
    >>> w.write(np.arange(10, dtype=np.uint16)); shards = w.close()
    >>> shards[0]["file"], shards[0]["tokens"], shards[0]["records"]
    ('train-00000', 10, 1)
    >>> read_shard_tokens(out / shards[0]["file"], np.uint16)[:3]
    array([0, 1, 2], dtype=uint16)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from tfgpt.errors import DataError

RECORD_TOKENS = 1 << 20
FEATURE_TOKENS = "tokens"
FEATURE_COUNT = "n"


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (vocab ≤ 65,536), else ``uint32``."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def dtype_name(dtype: np.dtype) -> str:
    return {2: "uint16", 4: "uint32"}[np.dtype(dtype).itemsize]


def dtype_from_name(name: str) -> np.dtype:
    if name not in ("uint16", "uint32"):
        raise DataError(f"manifest dtype must be uint16 or uint32, got {name!r}")
    return np.dtype("<u2") if name == "uint16" else np.dtype("<u4")


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _example(payload: bytes, n: int) -> bytes:
    import tensorflow as tf

    feature = {
        FEATURE_TOKENS: tf.train.Feature(bytes_list=tf.train.BytesList(value=[payload])),
        FEATURE_COUNT: tf.train.Feature(int64_list=tf.train.Int64List(value=[n])),
    }
    # deterministic: the feature map in key order, so the same tokens give the same shard bytes (and sha256)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


class ShardWriter:
    """Appends a split's token stream to shards in ``directory`` (staged names ``{split}-{i:05d}``).

    :meth:`close` returns one dict per shard: ``file`` (staged name), ``tokens``, ``records``,
    ``bytes``, ``sha256``. Final names (``-of-N``) are given by the caller when the count is known.
    """

    def __init__(self, directory: str | os.PathLike, split: str, dtype: np.dtype, shard_tokens: int,
                 record_tokens: int = RECORD_TOKENS) -> None:
        if shard_tokens <= 0 or record_tokens <= 0:
            raise DataError(f"shard_tokens and record_tokens must be positive, got {shard_tokens}, "
                            f"{record_tokens}")
        self.directory = Path(directory)
        self.split = split
        self.dtype = np.dtype(dtype)
        self.shard_tokens = shard_tokens
        self.record_tokens = min(record_tokens, shard_tokens)
        self.shards: list[dict[str, Any]] = []
        self.tokens = 0
        self._buf = bytearray()
        self._writer = None
        self._tmp: Path | None = None
        self._in_shard = 0
        self._records = 0

    def write(self, data: bytes | np.ndarray) -> None:
        """Append tokens (an array of this writer's dtype, or its raw bytes)."""
        if isinstance(data, np.ndarray):
            data = data.astype(self.dtype, copy=False).tobytes()
        self._buf += data
        self.tokens += len(data) // self.dtype.itemsize
        self._drain(final=False)

    def _drain(self, final: bool) -> None:
        size = self.dtype.itemsize
        while self._buf:
            room = min(self.record_tokens, self.shard_tokens - self._in_shard)
            avail = len(self._buf) // size
            if avail < room and not final:
                return
            n = min(room, avail)
            self._write_record(bytes(self._buf[: n * size]), n)
            del self._buf[: n * size]

    def _write_record(self, payload: bytes, n: int) -> None:
        import tensorflow as tf

        if self._writer is None:
            name = f"{self.split}-{len(self.shards):05d}"
            self._tmp = self.directory / f".{name}.tmp"
            self._writer = tf.io.TFRecordWriter(str(self._tmp))
        self._writer.write(_example(payload, n))
        self._in_shard += n
        self._records += 1
        if self._in_shard >= self.shard_tokens:
            self._finish_shard()

    def _finish_shard(self) -> None:
        assert self._writer is not None and self._tmp is not None
        self._writer.close()
        name = f"{self.split}-{len(self.shards):05d}"
        final = self.directory / name
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, final)
        self.shards.append({
            "file": name,
            "tokens": self._in_shard,
            "records": self._records,
            "bytes": final.stat().st_size,
            "sha256": file_sha256(final),
        })
        self._writer = None
        self._tmp = None
        self._in_shard = 0
        self._records = 0

    def close(self) -> list[dict[str, Any]]:
        """Flush the last (partial) record and shard; return the shard list."""
        self._drain(final=True)
        if self._writer is not None:
            self._finish_shard()
        return self.shards


def read_shard_tokens(path: str | os.PathLike, dtype: np.dtype | str, expected_tokens: int | None = None
                      ) -> np.ndarray:
    """All tokens of one shard as a numpy array; a corrupt or truncated shard raises
    :class:`DataError` naming it.

    Example:
        >>> read_shard_tokens("data/train-00000-of-00001.tfrecord", "uint16")[:5]  # doctest: +SKIP
    """
    import tensorflow as tf

    if isinstance(dtype, str):
        dtype = dtype_from_name(dtype)
    dtype = np.dtype(dtype)
    spec = {FEATURE_TOKENS: tf.io.FixedLenFeature([], tf.string),
            FEATURE_COUNT: tf.io.FixedLenFeature([], tf.int64)}
    parts = []
    try:
        for i, rec in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            ex = tf.io.parse_single_example(rec, spec)
            arr = np.frombuffer(ex[FEATURE_TOKENS].numpy(), dtype=dtype)
            if arr.size != int(ex[FEATURE_COUNT]):
                raise DataError(f"shard {path}: record {i} holds {arr.size} tokens but says {int(ex['n'])}")
            parts.append(arr)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        raise DataError(f"shard {path} is corrupt or truncated: {e.message.splitlines()[0]}") from None
    except tf.errors.NotFoundError:
        raise DataError(f"shard {path} is missing") from None
    tokens = np.concatenate(parts) if parts else np.zeros([0], dtype)
    if expected_tokens is not None and tokens.size != expected_tokens:
        raise DataError(f"shard {path} holds {tokens.size} tokens; the manifest says {expected_tokens}")
    return tokens
