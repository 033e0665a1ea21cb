"""``tfgpt prepare``: stream a corpus → clean → filter → tokenise in parallel → TFRecord shards.

Steps, all streaming (memory stays flat whatever the corpus size):

1. expand the inputs (:mod:`tfgpt.data.sources`), read documents piece by piece;
2. clean (:func:`tfgpt.data.clean.clean_text`) and drop empty / short / duplicate documents;
3. build the tokenizer: ``gpt2`` loads GPT-2's files from ``gpt2_dir``; ``bpe`` trains a byte-level BPE
   on the first ``sample_chars`` characters of the cleaned corpus; ``char`` makes one streaming pass
   collecting every character (so no character is ever unknown) and adds ``<|endoftext|>`` only when
   the corpus has more than one document (tinyshakespeare as one document gives the classic 65);
4. tokenise in ``workers`` processes (ordered, bounded queue), append end-of-text after every document
   (when the vocabulary has one), assign each document to train or val by a seeded hash of its text
   (if no document lands in val although ``val_fraction > 0`` — e.g. a one-document corpus — the last
   ``val_fraction`` of the train tokens become val: ``split.method = "tail"``);
5. write shards (:mod:`tfgpt.data.shards`) and the tokenizer into ``DATA_DIR/.prepare-tmp/``, move them
   into place, and write ``manifest.json`` last, atomically.

Re-running on a finished DATA_DIR with the same settings and unchanged inputs is a no-op; a DATA_DIR
without a manifest (an interrupted run) is cleaned and prepared from scratch, so a kill leaves either
finished shards or nothing that looks finished.

Example:
    >>> m = prepare(["/work/shared/data/tinyshakespeare.txt"], "data/shakespeare_char", "char",
    ...             val_fraction=0.1)
    >>> m["tokenizer"]["vocab_size"]
    65
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import multiprocessing
import os
import re
import shlex
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tfgpt.atomic import write_text_atomic
from tfgpt.data.clean import CleanStats, DocDigest, DocFilter, clean_text, doc_digest, shingles
from tfgpt.data.manifest import FORMAT, FORMAT_VERSION, MANIFEST, TOKENIZER_DIR, load_manifest, verify_shards
from tfgpt.data.shards import RECORD_TOKENS, ShardWriter, dtype_name, read_shard_tokens, shard_name, token_dtype
from tfgpt.data.sources import SEGMENT_CHARS, expand_inputs, iter_pieces, source_infos
from tfgpt.errors import DataError

DEFAULT_SHARD_TOKENS = 1 << 25  # 33,554,432 tokens: 64 MiB of uint16 per shard
DEFAULT_MIN_CHARS = 1
DEFAULT_SEED = 1337
DEFAULT_BPE_VOCAB = 8192
DEFAULT_SAMPLE_CHARS = 50_000_000
JOB_CHARS = 1 << 20
STAGING = ".prepare-tmp"
TOKENIZERS = ("char", "bpe", "gpt2")
_SHARD_RE = re.compile(r"(train|val)-\d{5}-of-\d{5}\.tfrecord")

Kept = tuple[bytes, str, bool, bool]


# ---------------------------------------------------------------------------------------------- documents
def kept_pieces(
    pieces: Iterator[tuple[int, str, bool, bool]],
    filt: DocFilter,
    spool_dir: str | os.PathLike | None = None,
) -> Iterator[Kept]:
    """Clean pieces and drop filtered documents; yield ``(doc_key, text, first, last)``.

    ``doc_key`` (16 bytes) is the digest of the document's first piece: the train/val split key.
    Long multi-piece documents are spooled to a temp file while their duplicate status is decided.

    Example:
        >>> f = DocFilter(min_chars=1)
        >>> [t for _, t, _, _ in kept_pieces(iter([(0, "a\\r\\nb", True, True)]), f)]
        ['a\\nb']
    """
    stats = filt.stats
    need_whole = filt.dedupe or filt.near_dedupe
    mode = None  # None | "stream" | "spool"
    key = b""
    spool = None
    digest: DocDigest | None = None
    minhash = None
    n_chars = 0
    for _src, raw, first, last in pieces:
        text, _ = clean_text(raw, stats)
        if first:
            stats.documents_read += 1
            n_chars = 0
        n_chars += len(text)
        stats.chars_read += len(text)
        if first and last:
            if not filt.check_short(text):
                continue
            key = doc_digest(text)
            mh = None
            if filt.near_dedupe:
                mh = filt.new_minhash()
                mh.update_batch(shingles(text))
            if not filt.check_duplicate(key, mh):
                continue
            stats.documents_kept += 1
            stats.chars_kept += len(text)
            yield key, text, True, True
            continue
        if first:
            key = doc_digest(text)
            if not need_whole:
                mode = "stream"
                stats.documents_kept += 1
            else:
                mode = "spool"
                digest = DocDigest()
                minhash = filt.new_minhash() if filt.near_dedupe else None
                spool = tempfile.TemporaryFile(dir=spool_dir)
        if mode == "stream":
            stats.chars_kept += len(text)
            yield key, text, first, last
        else:
            assert spool is not None and digest is not None
            digest.update(text)
            if minhash is not None:
                minhash.update_batch(shingles(text))
            data = text.encode("utf-8", "surrogatepass")
            spool.write(struct.pack("<Q", len(data)) + data)
            if last:
                keep = filt.check_duplicate(digest.digest(), minhash)
                if keep:
                    stats.documents_kept += 1
                    stats.chars_kept += n_chars
                    spool.seek(0)
                    i = 0
                    while head := spool.read(8):
                        (n,) = struct.unpack("<Q", head)
                        piece = spool.read(n).decode("utf-8", "surrogatepass")
                        yield key, piece, i == 0, False
                        i += 1
                    # the closing marker: an empty last piece carries the end-of-document flag
                    yield key, "", False, True
                spool.close()
                spool = None
        if last:
            mode = None


def _is_val(key: bytes, seed: int, val_fraction: float) -> bool:
    if val_fraction <= 0:
        return False
    h = hashlib.blake2b(key, key=str(seed).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64 < val_fraction


# ---------------------------------------------------------------------------------------------- workers
_WORKER_TOK: Any = None


def _init_worker(tok_dir: str) -> None:
    global _WORKER_TOK
    from tfgpt.tokenizers import load_tokenizer

    _WORKER_TOK = load_tokenizer(tok_dir)


def _encode_texts(tok: Any, texts: list[str]) -> list[list[int]]:
    enc = getattr(tok, "encoding", None)
    if enc is not None and hasattr(enc, "encode_ordinary_batch"):
        # Corpus text is text: a literal "<|endoftext|>" in it is not a document boundary.
        return enc.encode_ordinary_batch(texts, num_threads=1)
    return [tok.encode(t) for t in texts]


def encode_job(items: list[tuple[int, str, bool]], tok: Any = None) -> tuple[bytes, bytes, int]:
    """Tokenise one job: ``[(split 0=train/1=val, text, append_eot)]`` → (train bytes, val bytes, n)."""
    tok = tok if tok is not None else _WORKER_TOK
    dtype = token_dtype(tok.vocab_size)
    ids = _encode_texts(tok, [t for _, t, _ in items])
    eot = tok.eot_id
    out: list[list[np.ndarray]] = [[], []]
    n = 0
    for (split, _, add_eot), toks in zip(items, ids, strict=True):
        if add_eot and eot is not None:
            toks.append(eot)
        if toks:
            out[split].append(np.asarray(toks, dtype=dtype))
            n += len(toks)
    return (
        np.concatenate(out[0]).tobytes() if out[0] else b"",
        np.concatenate(out[1]).tobytes() if out[1] else b"",
        n,
    )


# ---------------------------------------------------------------------------------------------- progress
class _Progress:
    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar = None
        self.tokens = 0
        self.t0 = time.perf_counter()
        self._last = 0.0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                            file=sys.stderr, dynamic_ncols=True)

    def bytes(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def add_tokens(self, n: int) -> None:
        self.tokens += n
        now = time.perf_counter()
        if self.bar is not None and now - self._last > 0.5:
            self._last = now
            self.bar.set_postfix_str(f"{self.tokens / max(now - self.t0, 1e-9) / 1e6:.2f}M tok/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------- prepare
def prepare(
    inputs: list[str],
    out: str,
    tokenizer: str,
    vocab_size: int | None = None,
    val_fraction: float = 0.0005,
    dedupe: bool = False,
    near_dedupe: bool = False,
    workers: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    text_field: str = "text",
    min_chars: int = DEFAULT_MIN_CHARS,
    seed: int = DEFAULT_SEED,
    gpt2_dir: str | None = None,
    progress: bool = True,
    *,
    sample_chars: int = DEFAULT_SAMPLE_CHARS,
    record_tokens: int = RECORD_TOKENS,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Prepare ``inputs`` into the data directory ``out``; return the manifest (see module doc).

    ``tokenizer`` is ``"char"``, ``"bpe"`` (trained; ``vocab_size`` defaults to 8192) or ``"gpt2"``
    (``gpt2_dir`` holds encoder.json + vocab.bpe; else ``$TFGPT_GPT2_BPE_DIR``, else the copy in the
    package). ``workers`` tokenizer processes (default: CPU count; 0 or 1 tokenises in this process;
    the output does not depend on it).

    Example:
        >>> m = prepare(["corpus/*.jsonl.gz"], "data/web", "gpt2", gpt2_dir="gpt2_bpe", dedupe=True)
        >>> m["splits"]["train"]["tokens"], m["cleaning"]["dropped"]  # doctest: +SKIP
    """
    t_start = time.perf_counter()
    if tokenizer not in TOKENIZERS:
        raise DataError(f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")
    if vocab_size is not None and tokenizer != "bpe":
        raise DataError(f"--vocab-size applies to the bpe tokenizer only (got tokenizer {tokenizer!r})")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if shard_tokens <= 0:
        raise DataError(f"shard_tokens must be positive, got {shard_tokens}")
    if not 0 <= min_chars < SEGMENT_CHARS:
        raise DataError(f"min_chars must be in [0, {SEGMENT_CHARS}), got {min_chars}")
    if workers is not None and workers < 0:
        raise DataError(f"workers must be >= 0, got {workers}")
    if tokenizer == "bpe" and vocab_size is None:
        vocab_size = DEFAULT_BPE_VOCAB
    out_dir = Path(out)
    files = expand_inputs(list(inputs))
    infos = source_infos(files)
    config = {
        "tokenizer": tokenizer,
        "vocab_size": vocab_size,
        "val_fraction": val_fraction,
        "dedupe": dedupe,
        "near_dedupe": near_dedupe,
        "shard_tokens": shard_tokens,
        "record_tokens": record_tokens,
        "text_field": text_field,
        "min_chars": min_chars,
        "seed": seed,
        "sample_chars": sample_chars if tokenizer == "bpe" else None,
        "gpt2_dir": str(Path(gpt2_dir).resolve()) if gpt2_dir else None,
    }
    identity = [i.identity() for i in infos]

    done = _check_existing(out_dir, config, identity)
    if done is not None:
        if progress:
            print(f"{out_dir}: already prepared with these settings and inputs (nothing to do)", file=sys.stderr)
        return done

    staging = out_dir / STAGING
    staging.mkdir(parents=True)
    total_bytes = sum(i.bytes for i in infos)

    def documents(stats: CleanStats, bar: _Progress | None = None) -> Iterator[Kept]:
        filt = DocFilter(min_chars=min_chars, dedupe=dedupe, near_dedupe=near_dedupe, stats=stats)
        pieces = iter_pieces(files, infos, text_field=text_field, on_bytes=bar.bytes if bar else None)
        return kept_pieces(pieces, filt, spool_dir=staging)

    # 1. tokenizer
    tok = _build_tokenizer(tokenizer, vocab_size, gpt2_dir, sample_chars, documents, progress, total_bytes)
    tok_dir = staging / TOKENIZER_DIR
    tok.save(tok_dir)
    dtype = token_dtype(tok.vocab_size)
    eot = tok.eot_id

    # 2. main pass
    stats = CleanStats()
    writers = [ShardWriter(staging, "train", dtype, shard_tokens, record_tokens),
               ShardWriter(staging, "val", dtype, shard_tokens, record_tokens)]
    docs = [0, 0]
    bar = _Progress(total_bytes, progress, "prepare")
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    pool = None
    try:
        if n_workers > 1:
            ctx = multiprocessing.get_context("spawn")
            pool = ctx.Pool(n_workers, initializer=_init_worker, initargs=(str(tok_dir),))
        pending: collections.deque = collections.deque()

        def collect(result: tuple[bytes, bytes, int]) -> None:
            train_b, val_b, n = result
            if train_b:
                writers[0].write(train_b)
            if val_b:
                writers[1].write(val_b)
            bar.add_tokens(n)

        def submit(job: list[tuple[int, str, bool]]) -> None:
            if pool is None:
                collect(encode_job(job, tok))
                return
            pending.append(pool.apply_async(encode_job, (job,)))
            while len(pending) > 2 * n_workers:
                collect(pending.popleft().get())

        job: list[tuple[int, str, bool]] = []
        job_chars = 0
        split = 0
        for key, text, first, last in documents(stats, bar):
            if first:
                split = 1 if _is_val(key, seed, val_fraction) else 0
                docs[split] += 1
            job.append((split, text, last))
            job_chars += len(text) + 64
            if job_chars >= JOB_CHARS:
                submit(job)
                job, job_chars = [], 0
        if job:
            submit(job)
        while pending:
            collect(pending.popleft().get())
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        bar.close()
    if stats.documents_kept == 0:
        raise DataError(f"empty corpus: no documents left after cleaning ({stats.summary()})")
    shards = {"train": writers[0].close(), "val": writers[1].close()}
    method = "hash"
    if val_fraction > 0 and (writers[0].tokens == 0 or writers[1].tokens == 0):
        # Too few documents for a by-document split (e.g. one book): split the token stream instead.
        method = "tail"
        stream = shards["train"] or shards["val"]
        for i, sh in enumerate(stream):
            os.replace(staging / sh["file"], staging / f"train-{i:05d}")
            sh["file"] = f"train-{i:05d}"
        n_stream = writers[0].tokens + writers[1].tokens
        if n_stream > 1:
            shards = _tail_split(staging, stream, n_stream, val_fraction, dtype, shard_tokens, record_tokens)
        else:
            shards = {"train": stream, "val": []}
        docs = [docs[0] + docs[1], 0]

    # 3. move into place, manifest last
    split_info: dict[str, Any] = {}
    for name in ("train", "val"):
        lst = shards[name]
        for i, sh in enumerate(lst):
            final = shard_name(name, i, len(lst))
            os.replace(staging / sh["file"], out_dir / final)
            sh["file"] = final
        split_info[name] = {
            "tokens": int(sum(s["tokens"] for s in lst)),
            "documents": docs[0 if name == "train" else 1],
            "shards": lst,
        }
    os.replace(tok_dir, out_dir / TOKENIZER_DIR)
    seconds = time.perf_counter() - t_start
    total_tokens = split_info["train"]["tokens"] + split_info["val"]["tokens"]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(command if command is not None else sys.argv),
        "config": config,
        "tokenizer": {
            "type": tok.kind,
            "fingerprint": tok.fingerprint(),
            "vocab_size": tok.vocab_size,
            "eot_id": eot,
            "dir": TOKENIZER_DIR,
        },
        "dtype": dtype_name(dtype),
        "record_tokens": min(record_tokens, shard_tokens),
        "shard_tokens": shard_tokens,
        "splits": split_info,
        "split": {
            "method": method,
            "val_fraction": val_fraction,
            "seed": seed,
            "rule": "val if blake2b(first-piece digest, key=seed) / 2**64 < val_fraction"
            if method == "hash" else "last val_fraction of the train token stream",
        },
        "sources": [i.to_json() for i in infos],
        "source_identity": identity,
        "counts": {
            "documents_read": stats.documents_read,
            "documents_kept": stats.documents_kept,
            "tokens": total_tokens,
            "input_bytes": total_bytes,
            "invalid_utf8_bytes_replaced": sum(i.invalid_utf8_bytes for i in infos),
        },
        "cleaning": {
            "normalization": "NFC",
            "line_endings": "\\r\\n and \\r -> \\n",
            "control_chars": "Unicode Cc except \\n and \\t removed",
            "min_chars": min_chars,
            **stats.to_json(),
            "invalid_utf8_bytes_replaced": sum(i.invalid_utf8_bytes for i in infos),
            "files_with_invalid_utf8": [i.path for i in infos if i.invalid_utf8_bytes],
        },
        "timing": {
            "seconds": round(seconds, 3),
            "input_mb_per_s": round(total_bytes / 1e6 / max(seconds, 1e-9), 3),
            "tokens_per_s": round(total_tokens / max(seconds, 1e-9), 1),
            "workers": n_workers,
        },
    }
    write_text_atomic(out_dir / MANIFEST, _dumps(manifest))
    shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=1, ensure_ascii=False) + "\n"


def _check_existing(out_dir: Path, config: dict[str, Any], identity: list) -> dict[str, Any] | None:
    """The manifest when ``out_dir`` is already done with these settings; clean leftovers otherwise."""
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


def _build_tokenizer(kind: str, vocab_size: int | None, gpt2_dir: str | None, sample_chars: int,
                     documents: Any, progress: bool, total_bytes: int) -> Any:
    from tfgpt.tokenizers import BPETokenizer, CharTokenizer
    from tfgpt.tokenizers.base import END_OF_TEXT

    if kind == "gpt2":
        return BPETokenizer.gpt2(gpt2_dir)
    stats = CleanStats()
    if kind == "char":
        bar = _Progress(total_bytes, progress, "char vocabulary")
        chars: set[str] = set()
        try:
            for _, text, _, _ in documents(stats, bar):
                chars.update(text)
        finally:
            bar.close()
        if stats.documents_kept == 0:
            raise DataError(f"empty corpus: no documents left after cleaning ({stats.summary()})")
        specials = (END_OF_TEXT,) if stats.documents_kept > 1 else ()
        return CharTokenizer.train(["".join(sorted(chars))], special_tokens=specials)

    def sample() -> Iterator[str]:
        n = 0
        for _, text, _, _ in documents(stats):
            yield text
            n += len(text)
            if n >= sample_chars:
                return

    if progress:
        print(f"training a {vocab_size}-token BPE on up to {sample_chars:,} characters...", file=sys.stderr)
    texts = sample()
    first = next(texts, None)
    if first is None:
        raise DataError(f"empty corpus: no documents left after cleaning ({stats.summary()})")
    import itertools

    assert vocab_size is not None
    return BPETokenizer.train(itertools.chain([first], texts), vocab_size, special_tokens=(END_OF_TEXT,))


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
