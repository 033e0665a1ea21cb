"""Token sources for training: a DATA_DIR (``tfgpt prepare``) or in-memory token arrays.

A *source* is a callable ``source(split, batch_size, block_size, seed, start_step=0,
num_shards=1, shard_index=0) -> tf.data.Dataset`` of ``(x, y)`` int32 batches
``[batch_size // num_shards, block_size]``, infinite, deterministic in ``(seed, step)`` and
resumable: the dataset built with ``start_step=k`` yields what the one built with
``start_step=0`` yields from its k-th element on. With ``num_shards`` workers, shard ``i`` yields
its slice of the same global batch, so N workers together see what one worker would.

Example:
    >>> import numpy as np
    >>> src = array_source({"train": np.arange(1000) % 65, "val": np.arange(300) % 65})
    >>> x, y = next(iter(src("train", batch_size=4, block_size=8, seed=0)))
    >>> tuple(x.shape), bool((x[:, 1:] == y[:, :-1]).numpy().all())
    ((4, 8), True)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from tfgpt.data.manifest import check_data_dir  # noqa: F401  (the TF-free check, re-exported for train)
from tfgpt.errors import DataError


class Source(Protocol):
    """Builds the ``(x, y)`` dataset of one split (see the module docstring)."""

    def __call__(
        self, split: str, batch_size: int, block_size: int, seed: int,
        start_step: int = 0, num_shards: int = 1, shard_index: int = 0,
    ) -> tf.data.Dataset: ...


def _check_shards(batch_size: int, num_shards: int, shard_index: int) -> int:
    if batch_size % num_shards:
        raise DataError(f"batch size {batch_size} does not divide among {num_shards} workers")
    if not 0 <= shard_index < num_shards:
        raise DataError(f"shard_index {shard_index} out of range for {num_shards} shards")
    return batch_size // num_shards


def array_source(tokens: Mapping[str, Any]) -> Source:
    """A source over in-memory token arrays, one per split (random windows, as nanoGPT's get_batch).

    The window offsets of step ``s`` come from ``tf.random.stateless_uniform`` seeded with
    ``(seed, s)``, so any step can be regenerated without replaying the ones before it.
    """
    arrays = {k: np.asarray(v, dtype=np.int32).reshape(-1) for k, v in tokens.items()}

    def source(
        split: str, batch_size: int, block_size: int, seed: int,
        start_step: int = 0, num_shards: int = 1, shard_index: int = 0,
    ) -> tf.data.Dataset:
        if split not in arrays:
            raise DataError(f"no split {split!r}; available: {', '.join(sorted(arrays))}")
        data = arrays[split]
        if len(data) <= block_size + 1:
            raise DataError(f"split {split!r} has {len(data)} tokens, fewer than block_size + 2")
        per = _check_shards(batch_size, num_shards, shard_index)
        table = tf.constant(data)
        high = len(data) - block_size - 1

        def window(step: Any) -> tuple[Any, Any]:
            offsets = tf.random.stateless_uniform(
                (batch_size,), seed=tf.stack([tf.cast(seed, tf.int64), step]), minval=0, maxval=high,
                dtype=tf.int64,
            )[shard_index * per:(shard_index + 1) * per]
            idx = offsets[:, None] + tf.range(block_size + 1, dtype=tf.int64)[None, :]
            chunk = tf.gather(table, idx)
            return chunk[:, :-1], chunk[:, 1:]

        ds = tf.data.Dataset.counter(start=start_step, dtype=tf.int64).map(window)
        return ds.prefetch(2)

    return source


def data_dir_source(data_dir: str | Path, shuffle: bool = True) -> Source:
    """A source over a DATA_DIR via :func:`tfgpt.data.pipeline.lm_dataset`.

    Resumes with ``start_step``; with several workers each reads its own shard files
    (``num_shards``/``shard_index``), or — when the split has fewer files than workers — the
    same stream as one worker would, keeping its rows of each global batch.
    """
    from tfgpt.data.pipeline import lm_dataset

    def source(
        split: str, batch_size: int, block_size: int, seed: int,
        start_step: int = 0, num_shards: int = 1, shard_index: int = 0,
    ) -> tf.data.Dataset:
        per = _check_shards(batch_size, num_shards, shard_index)
        if num_shards > 1:
            try:
                return lm_dataset(str(data_dir), split, block_size, per, seed, shuffle=shuffle, repeat=True,
                                  start_step=start_step, num_shards=num_shards, shard_index=shard_index)
            except DataError as e:
                warnings.warn(f"sharding {split!r} by file failed ({e}); each worker slices the global batch",
                              stacklevel=2)
        ds = lm_dataset(str(data_dir), split, block_size, batch_size, seed, shuffle=shuffle, repeat=True,
                        start_step=start_step)
        if num_shards > 1:
            lo, hi = shard_index * per, (shard_index + 1) * per
            ds = ds.map(lambda x, y: (x[lo:hi], y[lo:hi]))
        return ds

    return source
