"""tf.data pipelines over prepared token shards.

:func:`lm_dataset` gives ``(x, y)`` int32 ``[batch, block_size]`` batches with ``y`` = ``x`` shifted by
one token.

* ``shuffle=True`` (training): random windows, like nanoGPT's ``get_batch``, with flat memory. The
  stream is made of *rounds*: each epoch visits the shards in a seeded random order, ``shards_in_memory``
  at a time (read in parallel with ``interleave``, the next round prefetched while the current one is
  served); a round draws ``batches_per_round`` batches of window starts uniformly over the windows that
  lie inside one *unit* (consecutive shards holding at least ``block_size + 1`` tokens), so every
  window is a contiguous slice of the token stream, with a stateless RNG seeded by ``(seed, round)``.
  Batch ``N`` of the stream depends only on (seed, shards, block_size, batch_size, N), so
  ``start_step=N`` resumes the exact stream without replaying it. ``repeat=False`` stops after one
  epoch (≈ tokens / block_size windows).
* ``shuffle=False`` (evaluation): sequential non-overlapping windows (stride ``block_size``) over the
  split's shards in order; the last partial batch is kept unless ``repeat``.

Multi-worker: pass ``num_shards``/``shard_index`` (or ``input_context`` from
``strategy.distribute_datasets_from_function``) to give each worker its own files; otherwise the
evaluation dataset carries ``AutoShardPolicy.FILE`` and the training dataset ``AutoShardPolicy.DATA``.

Checks: the manifest is read and validated, the tokenizer fingerprint compared (``tokenizer=``),
every shard's size checked (``verify_hashes=True`` also checks sha256). Tokens decoded from each shard
are counted against the manifest in-graph, so a shard that changed under a running job fails loudly
(naming the file) instead of training on garbage; TFRecord CRCs catch flipped bits.

Example:
    >>> ds = lm_dataset("data/owt", "train", block_size=1024, batch_size=8, seed=0)  # doctest: +SKIP
    >>> x, y = next(iter(ds)); x.shape  # doctest: +SKIP
    TensorShape([8, 1024])
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tfgpt.data.manifest import MANIFEST, check_tokenizer, load_manifest, split_shards, tokenizer_dir, verify_shards
from tfgpt.data.shards import FEATURE_TOKENS, dtype_from_name, read_shard_tokens
from tfgpt.errors import DataError

DEFAULT_SHARDS_IN_MEMORY = 4


def _select(shards: list[dict[str, Any]], num_shards: int | None, shard_index: int | None,
            data_dir: Any, split: str) -> list[dict[str, Any]]:
    if num_shards is None and shard_index is None:
        return shards
    if num_shards is None or shard_index is None or not 0 <= shard_index < num_shards:
        raise DataError(f"num_shards and shard_index go together with 0 <= shard_index < num_shards, "
                        f"got {num_shards}, {shard_index}")
    if num_shards > len(shards):
        raise DataError(f"{data_dir}: split {split!r} has {len(shards)} shard file(s), fewer than "
                        f"num_shards={num_shards}; prepare with a smaller --shard-tokens")
    return shards[shard_index::num_shards]


#: What the failed byte count assertion of :meth:`_Rounds.read_shard` says, as TensorFlow prints it.
_COUNT_FAILED = re.compile(r"\[token shard\] \[(?P<path>[^\]]+)\] \[does not hold the tokens its manifest lists "
                           r"\(bytes:\] \[(?P<got>\d+)\] \[expected:\] \[(?P<want>\d+)\]")


def _parse_tokens(record: tf.Tensor) -> tf.Tensor:
    spec = {FEATURE_TOKENS: tf.io.FixedLenFeature([], tf.string)}
    return tf.io.parse_single_example(record, spec)[FEATURE_TOKENS]


def lm_dataset(
    data_dir: str | os.PathLike,
    split: str,
    block_size: int,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    repeat: bool = True,
    *,
    start_step: int = 0,
    num_shards: int | None = None,
    shard_index: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
    tokenizer: Any = None,
    verify_hashes: bool = False,
    shards_in_memory: int = DEFAULT_SHARDS_IN_MEMORY,
) -> tf.data.Dataset:
    """``(x, y)`` int32 ``[batch_size, block_size]`` batches from ``data_dir``'s ``split`` (see module doc).

    ``tokenizer`` (a Tokenizer or its fingerprint) must match the data's; ``start_step`` skips that many
    batches of the same stream in O(1) for training (for evaluation it skips batches by reading).

    Example:
        >>> ds = lm_dataset("data/shakespeare", "val", 256, 32, seed=0, shuffle=False, repeat=False)  # doctest: +SKIP
        >>> sum(1 for _ in ds)  # doctest: +SKIP
        14
    """
    if block_size <= 0 or batch_size <= 0:
        raise DataError(f"block_size and batch_size must be positive, got {block_size}, {batch_size}")
    if start_step < 0:
        raise DataError(f"start_step must be >= 0, got {start_step}")
    if input_context is not None:
        num_shards, shard_index = input_context.num_input_pipelines, input_context.input_pipeline_id
    manifest = load_manifest(data_dir)
    check_tokenizer(manifest, tokenizer, data_dir)
    verify_shards(data_dir, split if split in manifest["splits"] else None, hashes=verify_hashes,
                  manifest=manifest)
    shards = _select(split_shards(manifest, data_dir, split), num_shards, shard_index, data_dir, split)
    dtype = tf.uint16 if dtype_from_name(manifest["dtype"]).itemsize == 2 else tf.uint32
    total = sum(s["tokens"] for s in shards)
    if total < block_size + 1:
        raise DataError(f"{data_dir}: split {split!r} holds {total} tokens, fewer than block_size + 1 = "
                        f"{block_size + 1}")
    if shuffle:
        ds = _random_windows(shards, dtype, block_size, batch_size, seed, repeat, start_step, shards_in_memory)
    else:
        ds = _sequential_windows(shards, dtype, block_size, batch_size, repeat, start_step)
    return ds.with_options(_options(shuffle, explicit=num_shards is not None))


def _options(shuffle: bool, explicit: bool) -> tf.data.Options:
    """Deterministic; auto-shard by data (random windows) or by file (sequential), off when sharded here."""
    options = tf.data.Options()
    options.deterministic = True
    policy = tf.data.experimental.AutoShardPolicy
    if explicit:
        options.experimental_distribute.auto_shard_policy = policy.OFF
    else:
        options.experimental_distribute.auto_shard_policy = policy.DATA if shuffle else policy.FILE
    return options


def _units(shards: list[dict[str, Any]], block_size: int) -> list[list[int]]:
    """Consecutive shards grouped so that every unit holds at least ``block_size + 1`` tokens."""
    units: list[list[int]] = []
    cur: list[int] = []
    n = 0
    for i, s in enumerate(shards):
        cur.append(i)
        n += s["tokens"]
        if n >= block_size + 1:
            units.append(cur)
            cur, n = [], 0
    if cur:
        if units:
            units[-1].extend(cur)
        else:
            units.append(cur)
    return units


def random_stream_layout(shards: list[dict[str, Any]], block_size: int, batch_size: int,
                         shards_in_memory: int = DEFAULT_SHARDS_IN_MEMORY) -> dict[str, Any]:
    """How the random-window stream is laid out: units, groups per epoch, batches per round/epoch."""
    units = _units(shards, block_size)
    per_round = max(1, min(shards_in_memory, len(units)))
    groups = math.ceil(len(units) / per_round)
    windows = sum(s["tokens"] for s in shards) // block_size
    batches_per_epoch = max(1, windows // batch_size)
    return {
        "units": units,
        "groups_per_epoch": groups,
        "group_bounds": np.linspace(0, len(units), groups + 1).round().astype(np.int64).tolist(),
        "batches_per_round": math.ceil(batches_per_epoch / groups),
        "batches_per_epoch": math.ceil(batches_per_epoch / groups) * groups,
    }


def _random_windows(shards: list[dict[str, Any]], dtype: tf.DType, block_size: int, batch_size: int,
                    seed: int, repeat: bool, start_step: int, shards_in_memory: int) -> tf.data.Dataset:
    """Random windows, round after round (see the module doc), starting at batch ``start_step``."""
    rounds = _Rounds(shards, dtype, block_size, batch_size, seed, shards_in_memory)
    first_round, first_offset = divmod(start_step, rounds.batches_per_round)
    offsets = tf.range(block_size + 1, dtype=tf.int64)

    def load_round(r: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        tokens, starts = rounds.load(r)
        offset = tf.where(r == first_round, tf.constant(first_offset, tf.int64), tf.constant(0, tf.int64))
        return tokens, starts[offset:]

    def windows(tokens: tf.Tensor, starts: tf.Tensor) -> tf.data.Dataset:
        def batch(s: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            w = tf.cast(tf.gather(tokens, s[:, None] + offsets[None, :]), tf.int32)  # [batch, block_size + 1]
            return w[:, :-1], w[:, 1:]

        return tf.data.Dataset.from_tensor_slices(starts).map(batch)

    end = np.iinfo(np.int64).max if repeat else rounds.groups
    ds = tf.data.Dataset.range(first_round, end)
    ds = ds.map(load_round, num_parallel_calls=1, deterministic=True).prefetch(1)
    ds = ds.flat_map(windows)
    return ds.prefetch(tf.data.AUTOTUNE)


class _Rounds:
    """The random-window stream's rounds: which units round ``r`` holds, their tokens, its window starts."""

    def __init__(self, shards: list[dict[str, Any]], dtype: tf.DType, block_size: int, batch_size: int,
                 seed: int, shards_in_memory: int) -> None:
        layout = random_stream_layout(shards, block_size, batch_size, shards_in_memory)
        self.units = tf.ragged.constant(layout["units"], dtype=tf.int64)
        self.unit_tokens = tf.constant([sum(shards[i]["tokens"] for i in u) for u in layout["units"]], tf.int64)
        self.n_units = len(layout["units"])
        self.groups = layout["groups_per_epoch"]
        self.bounds = tf.constant(layout["group_bounds"], tf.int64)
        self.batches_per_round = layout["batches_per_round"]
        self.paths = tf.constant([s["path"] for s in shards])
        self.records = tf.constant([s["records"] for s in shards], tf.int64)
        self.nbytes = tf.constant([s["tokens"] * dtype.size for s in shards], tf.int64)
        self.dtype, self.block_size, self.batch_size = dtype, block_size, batch_size
        self.shards_in_memory = shards_in_memory
        self.seed = tf.constant(seed, tf.int64)

    def read_shard(self, i: tf.Tensor) -> tf.data.Dataset:
        """Shard ``i``'s token bytes as one string, checked against the manifest's byte count."""
        raw = tf.data.TFRecordDataset(self.paths[i], buffer_size=1 << 22).map(_parse_tokens).batch(self.records[i])
        raw = raw.map(lambda parts: tf.strings.reduce_join(parts))

        def check(blob: tf.Tensor) -> tf.Tensor:
            ok = tf.equal(tf.cast(tf.strings.length(blob), tf.int64), self.nbytes[i])
            with tf.control_dependencies([tf.debugging.Assert(
                    ok, ["token shard", self.paths[i], "does not hold the tokens its manifest lists (bytes:",
                         tf.strings.length(blob), "expected:", self.nbytes[i], ")"])]):
                return tf.identity(blob)

        return raw.map(check)

    def load(self, r: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Round ``r``'s tokens (its units side by side) and window starts ``[batches_per_round, batch]``."""
        epoch, g = r // self.groups, r % self.groups
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(self.n_units, dtype=tf.int64), seed=tf.stack([self.seed, epoch]))
        members = perm[self.bounds[g]:self.bounds[g + 1]]
        shard_ids = tf.gather(self.units, members).flat_values
        k = tf.size(shard_ids, out_type=tf.int64)
        blobs = (tf.data.Dataset.from_tensor_slices(shard_ids)
                 .interleave(self.read_shard, cycle_length=self.shards_in_memory,
                             num_parallel_calls=self.shards_in_memory, deterministic=True)
                 .batch(k).get_single_element())
        tokens = tf.io.decode_raw(tf.strings.reduce_join(blobs), self.dtype)
        return tokens, self._starts(members, r)

    def _starts(self, members: tf.Tensor, r: tf.Tensor) -> tf.Tensor:
        """The round's units lie side by side in its tokens but are not neighbours in the stream: draw
        window starts that stay inside a unit, uniformly (a unit with probability proportional to its
        usable length, then a start inside it)."""
        bpr, batch_size = self.batches_per_round, self.batch_size
        lengths = tf.gather(self.unit_tokens, members)
        usable = lengths - self.block_size
        usable_end = tf.cumsum(usable)
        draws = tf.random.stateless_uniform([bpr, batch_size], seed=tf.stack([self.seed + 1, r]), minval=0,
                                            maxval=usable_end[-1], dtype=tf.int64)
        unit = tf.searchsorted(usable_end, tf.reshape(draws, [-1]), side="right")  # [bpr * batch]
        shift = tf.gather(tf.cumsum(lengths, exclusive=True) - (usable_end - usable), unit)
        return draws + tf.reshape(shift, [bpr, batch_size])  # [bpr, batch]


def _sequential_windows(shards: list[dict[str, Any]], dtype: tf.DType, block_size: int, batch_size: int,
                        repeat: bool, start_step: int) -> tf.data.Dataset:
    ds = tf.data.TFRecordDataset([s["path"] for s in shards], buffer_size=1 << 22)
    ds = ds.map(lambda r: tf.cast(tf.io.decode_raw(_parse_tokens(r), dtype), tf.int32),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    offsets = tf.range(block_size + 1)

    def cut(carry: tf.Tensor, chunk: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        buf = tf.concat([carry, chunk], 0)
        m = tf.maximum((tf.size(buf) - 1) // block_size, 0)
        w = tf.gather(buf, tf.range(m)[:, None] * block_size + offsets[None, :])
        return buf[m * block_size:], w

    ds = ds.scan(tf.zeros([0], tf.int32), cut).unbatch()
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=repeat)
    ds = ds.map(lambda w: (w[:, :-1], w[:, 1:]))
    if start_step:
        ds = ds.skip(start_step)
    return ds.prefetch(tf.data.AUTOTUNE)


def load_data_tokenizer(data_dir: str | os.PathLike) -> Any:
    """The tokenizer saved with a prepared data directory.

    Example:
        >>> tok = load_data_tokenizer("data/shakespeare"); tok.vocab_size  # doctest: +SKIP
        65
    """
    from tfgpt.tokenizers import load_tokenizer

    return load_tokenizer(tokenizer_dir(data_dir, load_manifest(data_dir)))


def read_split_tokens(data_dir: str | os.PathLike, split: str) -> np.ndarray:
    """All tokens of a split as one numpy array (for small splits, tests and inspection).

    Example:
        >>> read_split_tokens("data/shakespeare", "val")[:5]  # doctest: +SKIP
    """
    m = load_manifest(data_dir)
    dtype = dtype_from_name(m["dtype"])
    parts = [read_shard_tokens(s["path"], dtype, s["tokens"]) for s in split_shards(m, data_dir, split)]
    return np.concatenate(parts)


@contextlib.contextmanager
def named_shard_errors(data_dir: str | os.PathLike | None) -> Iterator[None]:
    """Turn TensorFlow's ``DataLossError`` from reading ``data_dir``'s shards (a corrupt record, deep in
    the input pipeline) into a one-line :class:`DataError` naming the shard whose sha256 differs from
    the manifest's. The shards are hashed only when reading failed, so a healthy run pays nothing.

    Example:
        >>> with named_shard_errors("data/shakespeare"):  # doctest: +SKIP
        ...     model.fit(lm_dataset("data/shakespeare", "train", 256, 64))
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as e:  # the in-graph byte count check of _Rounds.read_shard
        found = _COUNT_FAILED.search(e.message or "")
        if data_dir is None or found is None:
            raise
        raise DataError(f"shard {found['path']} does not hold the tokens {Path(data_dir) / MANIFEST} lists for it "
                        f"({found['got']} bytes of tokens, the manifest says {found['want']}): the manifest or the "
                        "shard changed after `tfgpt prepare`; prepare the data again") from None
    except tf.errors.DataLossError as e:
        if data_dir is None:
            raise
        verify_shards(data_dir, hashes=True)  # raises the DataError naming the altered shard
        first = (e.message or "").strip().splitlines()[0][-200:] if (e.message or "").strip() else "no detail"
        raise DataError(f"{data_dir}: a shard could not be read although every shard's sha256 matches the "
                        f"manifest ({first})") from None
