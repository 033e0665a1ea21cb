"""Tokenise kept documents into the staged train/val shard streams, here or in worker processes.

Documents are batched into jobs of about :data:`JOB_CHARS` characters. With ``workers > 1`` the
jobs run on a ``spawn`` pool (each worker loads the tokenizer saved in ``tok_dir`` once) and their
results are written in submission order, through a bounded queue, so the shards are the same
whatever the number of workers. End-of-text follows every document when the vocabulary has one.

Example:
    >>> from tfgpt.tokenizers import build_tokenizer
    >>> tok = build_tokenizer("char", ["ab"], special_tokens=["<|endoftext|>"])
    >>> out = encode_job([JobItem(0, "ab", True), JobItem(1, "ba", False)], tok)
    >>> np.frombuffer(out.train, np.uint16).tolist(), np.frombuffer(out.val, np.uint16).tolist(), out.tokens
    ([0, 1, 2], [1, 0], 5)
"""

from __future__ import annotations

import collections
import functools
import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tfgpt.data.documents import DocPiece
from tfgpt.data.manifest import SPLITS
from tfgpt.data.progress import Progress
from tfgpt.data.shards import ShardWriter, token_dtype
from tfgpt.data.split import SplitStreams, is_val

JOB_CHARS = 1 << 20


class JobItem(NamedTuple):
    """One piece of text to tokenise."""

    split: int  #: 0 = train, 1 = val
    text: str
    end_of_doc: bool  #: append end-of-text after it


class Encoded(NamedTuple):
    """A tokenised job: the raw token bytes of each split, and how many tokens in all."""

    train: bytes
    val: bytes
    tokens: int


def _encode_texts(tok: Any, texts: list[str]) -> list[list[int]]:
    enc = getattr(tok, "encoding", None)
    if enc is not None and hasattr(enc, "encode_ordinary_batch"):
        # Corpus text is text: a literal "<|endoftext|>" in it is not a document boundary.
        return enc.encode_ordinary_batch(texts, num_threads=1)
    return [tok.encode(t) for t in texts]


def encode_job(items: list[JobItem], tok: Any) -> Encoded:
    """Tokenise one job with ``tok``; end-of-text after each piece that ends a document."""
    dtype = token_dtype(tok.vocab_size)
    ids = _encode_texts(tok, [item.text for item in items])
    eot = tok.eot_id
    out: list[list[np.ndarray]] = [[], []]
    n = 0
    for item, toks in zip(items, ids, strict=True):
        if item.end_of_doc and eot is not None:
            toks.append(eot)
        if toks:
            out[item.split].append(np.asarray(toks, dtype=dtype))
            n += len(toks)
    return Encoded(
        np.concatenate(out[0]).tobytes() if out[0] else b"",
        np.concatenate(out[1]).tobytes() if out[1] else b"",
        n,
    )


@functools.lru_cache(maxsize=1)
def _saved_tokenizer(tok_dir: str) -> Any:
    from tfgpt.tokenizers import load_tokenizer

    return load_tokenizer(tok_dir)


def _encode_in_worker(items: list[JobItem], tok_dir: str) -> Encoded:
    return encode_job(items, _saved_tokenizer(tok_dir))


class _Encoder:
    """Runs jobs in order: in this process (``workers`` <= 1) or on a pool, at most 2 per worker pending."""

    def __init__(self, tok: Any, tok_dir: Path, workers: int, collect: Callable[[Encoded], None]) -> None:
        self.tok = tok
        self.tok_dir = str(tok_dir)
        self.workers = workers
        self.collect = collect
        self.pending: collections.deque = collections.deque()
        self.pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None

    def submit(self, job: list[JobItem]) -> None:
        if self.pool is None:
            self.collect(encode_job(job, self.tok))
            return
        self.pending.append(self.pool.apply_async(_encode_in_worker, (job, self.tok_dir)))
        while len(self.pending) > 2 * self.workers:
            self.collect(self.pending.popleft().get())

    def drain(self) -> None:
        while self.pending:
            self.collect(self.pending.popleft().get())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def _jobs(docs: Iterator[DocPiece], seed: int, val_fraction: float, documents: dict[str, int]
          ) -> Iterator[list[JobItem]]:
    """Batch pieces into jobs, each document on the split its key hashes to (counted in ``documents``)."""
    job: list[JobItem] = []
    job_chars = 0
    split = 0
    for key, text, first, last in docs:
        if first:
            split = 1 if is_val(key, seed, val_fraction) else 0
            documents[SPLITS[split]] += 1
        job.append(JobItem(split, text, last))
        job_chars += len(text) + 64
        if job_chars >= JOB_CHARS:
            yield job
            job, job_chars = [], 0
    if job:
        yield job


def tokenize_to_shards(docs: Iterator[DocPiece], tok: Any, tok_dir: Path, staging: Path, *, seed: int,
                       val_fraction: float, shard_tokens: int, record_tokens: int, workers: int,
                       bar: Progress) -> SplitStreams:
    """Tokenise ``docs`` with ``workers`` processes into shards in ``staging``, split by document hash."""
    dtype = token_dtype(tok.vocab_size)
    writers = {name: ShardWriter(staging, name, dtype, shard_tokens, record_tokens) for name in SPLITS}
    documents = dict.fromkeys(SPLITS, 0)

    def collect(result: Encoded) -> None:
        if result.train:
            writers["train"].write(result.train)
        if result.val:
            writers["val"].write(result.val)
        bar.add_tokens(result.tokens)

    encoder = _Encoder(tok, tok_dir, workers, collect)
    try:
        for job in _jobs(docs, seed, val_fraction, documents):
            encoder.submit(job)
        encoder.drain()
    finally:
        encoder.close()
        bar.close()
    return SplitStreams({name: w.close() for name, w in writers.items()}, documents)
