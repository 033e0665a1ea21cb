"""Tokenising kept documents into train/val shard streams: jobs, end-of-text, workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfgpt.data import encode
from tfgpt.data.documents import DocPiece
from tfgpt.data.encode import Encoded, JobItem, encode_job, tokenize_to_shards
from tfgpt.data.progress import Progress
from tfgpt.data.shards import read_shard_tokens
from tfgpt.data.split import is_val
from tfgpt.tokenizers import build_tokenizer


@pytest.fixture(scope="module")
def char_tok():
    return build_tokenizer("char", ["abc"], special_tokens=["<|endoftext|>"])  # a=0 b=1 c=2 eot=3


def test_encode_job_splits_and_end_of_text(char_tok) -> None:
    out = encode_job([JobItem(0, "ab", False), JobItem(0, "c", True), JobItem(1, "ca", True), JobItem(1, "", False)],
                     char_tok)
    assert isinstance(out, Encoded) and out.tokens == 7
    assert np.frombuffer(out.train, "<u2").tolist() == [0, 1, 2, 3]
    assert np.frombuffer(out.val, "<u2").tolist() == [2, 0, 3]


def test_encode_job_without_eot_and_literal_special_is_text() -> None:
    char = build_tokenizer("char", ["ab"])  # no end-of-text in the vocabulary: nothing appended
    assert encode_job([JobItem(0, "ba", True)], char) == Encoded(np.array([1, 0], "<u2").tobytes(), b"", 2)
    gpt2 = build_tokenizer("gpt2")
    out = encode_job([JobItem(0, "<|endoftext|>", True)], gpt2)
    assert np.frombuffer(out.train, "<u2").tolist() == [27, 91, 437, 1659, 5239, 91, 29, 50256]


def _docs(texts: list[str]) -> list[DocPiece]:
    return [DocPiece(bytes([i]) * 16, t, True, True) for i, t in enumerate(texts)]


def test_jobs_batch_by_chars_and_count_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encode, "JOB_CHARS", 130)  # each piece counts len(text) + 64: 65 + 66 >= 130
    documents = {"train": 0, "val": 0}
    jobs = list(encode._jobs(iter(_docs(["a", "bb", "ccc"])), seed=1337, val_fraction=0.5, documents=documents))
    # keys 0 and 1 hash to val, key 2 to train (see test_split)
    assert jobs == [[JobItem(1, "a", True), JobItem(1, "bb", True)], [JobItem(0, "ccc", True)]]
    assert documents == {"train": 1, "val": 2}


@pytest.mark.parametrize("workers", [0, 2])
def test_tokenize_to_shards(tmp_path: Path, char_tok, workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encode, "JOB_CHARS", 200)  # several jobs, so the pool's ordering is exercised
    texts = ["abc" * (i + 1) for i in range(12)]
    char_tok.save(tmp_path / "tokenizer")
    streams = tokenize_to_shards(iter(_docs(texts)), char_tok, tmp_path / "tokenizer", tmp_path, seed=1337,
                                 val_fraction=0.3, shard_tokens=16, record_tokens=8, workers=workers,
                                 bar=Progress(0, False, "test"))
    want = {"train": [], "val": []}
    for i, t in enumerate(texts):
        want["val" if is_val(bytes([i]) * 16, 1337, 0.3) else "train"] += char_tok.encode(t) + [3]
    for split in ("train", "val"):
        got = [t for s in streams.shards[split] for t in read_shard_tokens(tmp_path / s["file"], "uint16").tolist()]
        assert got == want[split]
    assert streams.documents == {"train": 6, "val": 6} and streams.method == "hash"
    assert streams.tokens("train") + streams.tokens("val") == sum(3 * (i + 1) + 1 for i in range(12))
