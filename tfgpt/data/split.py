"""Train/val split of a prepared corpus: by document hash, or by the tail of the token stream.

Each document goes to val when a seeded hash of its first piece falls under ``val_fraction``
(``method = "hash"``), so the split does not depend on file order or worker count. When that leaves
one split empty although ``val_fraction > 0`` (e.g. a one-document corpus such as tinyshakespeare),
the last ``val_fraction`` of the token stream becomes val instead (``method = "tail"``).

Example:
    >>> [is_val(bytes([i]) * 16, seed=1337, val_fraction=0.5) for i in range(4)]
    [True, True, False, False]
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from tfgpt.data.shards import ShardWriter, read_shard_tokens

#: How each method assigns tokens to val, as written to the manifest's ``split.rule``.
SPLIT_RULES = {
    "hash": "val if blake2b(first-piece digest, key=seed) / 2**64 < val_fraction",
    "tail": "last val_fraction of the train token stream",
}


#: What a tail split's val holds, as the manifest says in ``splits.val.holds`` (its ``documents`` is null).
TAIL_VAL = "the last val_fraction of the token stream, cut from the end of the train documents"


def is_val(key: bytes, seed: int, val_fraction: float) -> bool:
    """Whether the document with split key ``key`` goes to val (see :data:`SPLIT_RULES`)."""
    if val_fraction <= 0:
        return False
    h = hashlib.blake2b(key, key=str(seed).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64 < val_fraction


@dataclasses.dataclass
class SplitStreams:
    """The staged shards (``ShardWriter.close`` entries) and document counts of train and val."""

    shards: dict[str, list[dict[str, Any]]]
    documents: dict[str, int]
    method: str = "hash"

    def tokens(self, split: str) -> int:
        return int(sum(s["tokens"] for s in self.shards[split]))


def ensure_val(staging: Path, streams: SplitStreams, val_fraction: float, dtype: np.dtype, shard_tokens: int,
               record_tokens: int) -> SplitStreams:
    """``streams`` when the hash split filled both splits (or no val was asked for); else the tail split."""
    if val_fraction <= 0 or (streams.tokens("train") and streams.tokens("val")):
        return streams
    # Too few documents for a by-document split (e.g. one book): split the token stream instead.
    stream = streams.shards["train"] or streams.shards["val"]
    for i, sh in enumerate(stream):
        os.replace(staging / sh["file"], staging / f"train-{i:05d}")
        sh["file"] = f"train-{i:05d}"
    n_stream = streams.tokens("train") + streams.tokens("val")
    if n_stream > 1:
        shards = _tail_split(staging, stream, n_stream, val_fraction, dtype, shard_tokens, record_tokens)
    else:
        shards = {"train": stream, "val": []}
    documents = {"train": streams.documents["train"] + streams.documents["val"], "val": 0}
    return SplitStreams(shards, documents, method="tail")


def _tail_split(staging: Path, train: list[dict[str, Any]], train_tokens: int, val_fraction: float,
                dtype: np.dtype, shard_tokens: int, record_tokens: int) -> dict[str, list[dict[str, Any]]]:
    """Move the last ``val_fraction`` of the train stream into val (one shard in memory at a time)."""
    need = min(max(1, round(val_fraction * train_tokens)), train_tokens - 1)
    cut = train_tokens - need
    start = 0
    k = 0
    while start + train[k]["tokens"] <= cut:
        start += train[k]["tokens"]
        k += 1
    offset = cut - start
    val_w = ShardWriter(staging, "val", dtype, shard_tokens, record_tokens)
    tokens = read_shard_tokens(staging / train[k]["file"], dtype, train[k]["tokens"])
    os.unlink(staging / train[k]["file"])
    val_w.write(tokens[offset:])
    for sh in train[k + 1:]:
        val_w.write(read_shard_tokens(staging / sh["file"], dtype, sh["tokens"]))
        os.unlink(staging / sh["file"])
    train_w = ShardWriter(staging, "train", dtype, shard_tokens, record_tokens)
    train_w.shards = list(train[:k])
    if offset:
        train_w.write(tokens[:offset])
    return {"train": train_w.close(), "val": val_w.close()}
