"""``tfgpt prepare``: stream a corpus → clean → filter → tokenise in parallel → TFRecord shards.

:func:`prepare` reads as its steps, each in a module named for its job, all streaming (memory stays
flat whatever the corpus size):

1. check the settings (:class:`PrepareConfig`) and the output directory (:mod:`tfgpt.data.datadir`:
   a finished one with the same settings and inputs is reused, an interrupted one cleared);
2. read and clean the documents (:mod:`tfgpt.data.sources`, :mod:`tfgpt.data.documents`) and make
   the tokenizer from them where needed (:mod:`tfgpt.data.vocab`);
3. tokenise into train/val shards by a seeded hash of each document (:mod:`tfgpt.data.encode`,
   :mod:`tfgpt.data.shards`), falling back to the stream's tail for val (:mod:`tfgpt.data.split`);
4. move shards and tokenizer into place and write ``manifest.json`` last
   (:func:`tfgpt.data.manifest.build_manifest`).

Example:
    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp()); _ = (tmp / "a.txt").write_text("to be or not to be\\n" * 50)
    >>> m = prepare([str(tmp / "a.txt")], str(tmp / "data"), "char", val_fraction=0.1, workers=0,
    ...             progress=False, command=["example"])
    >>> m["tokenizer"]["vocab_size"], m["split"]["method"], m["splits"]["val"]["tokens"]
    (8, 'tail', 95)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfgpt.atomic import write_text_atomic
from tfgpt.data.clean import CleanStats
from tfgpt.data.datadir import STAGING, move_into_place, reuse_or_clear
from tfgpt.data.documents import Corpus, empty_corpus
from tfgpt.data.encode import tokenize_to_shards
from tfgpt.data.manifest import MANIFEST, TOKENIZER_DIR, build_manifest, dumps
from tfgpt.data.progress import Progress
from tfgpt.data.shards import RECORD_TOKENS, dtype_name, token_dtype
from tfgpt.data.sources import SEGMENT_CHARS, SourceInfo, expand_inputs, source_infos
from tfgpt.data.split import SplitStreams, ensure_val
from tfgpt.data.vocab import corpus_tokenizer
from tfgpt.errors import DataError
from tfgpt.tokenizers import Tokenizer
from tfgpt.tokenizers.build import KINDS

DEFAULT_SHARD_TOKENS = 1 << 25  # 33,554,432 tokens: 64 MiB of uint16 per shard
DEFAULT_MIN_CHARS = 1
DEFAULT_SEED = 1337
DEFAULT_BPE_VOCAB = 8192
DEFAULT_SAMPLE_CHARS = 50_000_000
#: Test-only: seconds prepare sleeps after moving the shards into place and before writing manifest.json, so
#: that a crash test can kill it while the data dir holds finished-looking shards and no manifest yet.
PAUSE_ENV = "TFGPT_TEST_PREPARE_PAUSE"


@dataclasses.dataclass
class PrepareConfig:
    """The settings of a ``prepare`` run; :meth:`to_json` is the manifest's ``config`` (what reuse compares)."""

    tokenizer: str
    vocab_size: int | None = None
    val_fraction: float = 0.0005
    dedupe: bool = False
    near_dedupe: bool = False
    shard_tokens: int = DEFAULT_SHARD_TOKENS
    record_tokens: int = RECORD_TOKENS
    text_field: str = "text"
    min_chars: int = DEFAULT_MIN_CHARS
    seed: int = DEFAULT_SEED
    sample_chars: int = DEFAULT_SAMPLE_CHARS
    gpt2_dir: str | None = None
    unk_token: str | None = None  #: char only: the id unknown characters map to; in the manifest only when set
    workers: int | None = None  #: tokenizer processes; not in the manifest's config (the output is the same)

    def __post_init__(self) -> None:
        if self.tokenizer not in KINDS:
            raise DataError(f"unknown tokenizer {self.tokenizer!r}; choose one of {', '.join(KINDS)}")
        if self.unk_token is not None and (self.tokenizer != "char" or not self.unk_token):
            raise DataError(f"--unk-token applies to the char tokenizer only and must be non-empty "
                            f"(got tokenizer {self.tokenizer!r}, unk token {self.unk_token!r}): byte-level "
                            f"bpe and gpt2 have no unknown characters")
        if self.vocab_size is not None and self.tokenizer != "bpe":
            raise DataError(f"--vocab-size applies to the bpe tokenizer only (got tokenizer {self.tokenizer!r})")
        if not 0.0 <= self.val_fraction < 1.0:
            raise DataError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_tokens <= 0:
            raise DataError(f"shard_tokens must be positive, got {self.shard_tokens}")
        if not 0 <= self.min_chars < SEGMENT_CHARS:
            raise DataError(f"min_chars must be in [0, {SEGMENT_CHARS}), got {self.min_chars}")
        if self.workers is not None and self.workers < 0:
            raise DataError(f"workers must be >= 0, got {self.workers}")
        if self.tokenizer == "bpe" and self.vocab_size is None:
            self.vocab_size = DEFAULT_BPE_VOCAB

    @property
    def n_workers(self) -> int:
        """Tokenizer processes: ``workers``, else the CPU count (0 or 1: in this process)."""
        return (os.cpu_count() or 1) if self.workers is None else self.workers

    def to_json(self) -> dict[str, Any]:
        config = dataclasses.asdict(self)
        del config["workers"]
        if self.unk_token is None:  # absent, not null: data dirs prepared before the option still match
            del config["unk_token"]
        config["sample_chars"] = self.sample_chars if self.tokenizer == "bpe" else None
        config["gpt2_dir"] = str(Path(self.gpt2_dir).resolve()) if self.gpt2_dir else None
        return config


def prepare(
    inputs: list[str], out: str, tokenizer: str, vocab_size: int | None = None, val_fraction: float = 0.0005,
    dedupe: bool = False, near_dedupe: bool = False, workers: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS, text_field: str = "text", min_chars: int = DEFAULT_MIN_CHARS,
    seed: int = DEFAULT_SEED, gpt2_dir: str | None = None, progress: bool = True, *,
    sample_chars: int = DEFAULT_SAMPLE_CHARS, record_tokens: int = RECORD_TOKENS, command: list[str] | None = None,
    unk_token: str | None = None,
) -> dict[str, Any]:
    """Prepare ``inputs`` into the data directory ``out``; return the manifest (see module doc).

    ``tokenizer`` is ``"char"``, ``"bpe"`` (trained; ``vocab_size`` defaults to 8192) or ``"gpt2"``
    (``gpt2_dir`` holds encoder.json + vocab.bpe; else ``$TFGPT_GPT2_BPE_DIR``, else the copy in the
    package). ``unk_token`` (char only) gives the tokenizer an id for characters the corpus lacks.
    ``workers`` tokenizer processes (default: CPU count; 0 or 1 tokenises in this process; the output
    does not depend on it). ``command`` (default ``sys.argv``) is recorded in the manifest.
    """
    t_start = time.perf_counter()
    cfg = PrepareConfig(tokenizer, vocab_size=vocab_size, val_fraction=val_fraction, dedupe=dedupe,
                        near_dedupe=near_dedupe, shard_tokens=shard_tokens, record_tokens=record_tokens,
                        text_field=text_field, min_chars=min_chars, seed=seed, sample_chars=sample_chars,
                        gpt2_dir=gpt2_dir, unk_token=unk_token, workers=workers)
    out_dir = Path(out)
    files = expand_inputs(list(inputs))
    infos = source_infos(files)
    done = _finished(out_dir, cfg, infos, progress)
    if done is not None:
        return done

    with _staging(out_dir) as staging:
        corpus = Corpus(files, infos, text_field=text_field, min_chars=min_chars, dedupe=dedupe,
                        near_dedupe=near_dedupe, spool_dir=staging)
        tok = corpus_tokenizer(corpus, cfg.tokenizer, cfg.vocab_size, gpt2_dir, sample_chars, progress,
                               cfg.unk_token)
        tok.save(staging / TOKENIZER_DIR)
        stats = CleanStats()
        streams = _tokenize(corpus, tok, staging, cfg, stats, progress)
        dtype = token_dtype(tok.vocab_size)
        streams = ensure_val(staging, streams, val_fraction, dtype, shard_tokens, record_tokens)
        splits = move_into_place(staging, out_dir, streams)
        if os.environ.get(PAUSE_ENV):
            time.sleep(float(os.environ[PAUSE_ENV]))
    _warn_if_val_small(splits, val_fraction)
    manifest = build_manifest(cfg.to_json(), tok, dtype_name(dtype), splits, streams.method, infos, stats,
                              time.perf_counter() - t_start, cfg.n_workers, command)
    write_text_atomic(out_dir / MANIFEST, dumps(manifest))
    shutil.rmtree(staging, ignore_errors=True)
    return manifest


#: A val split under this many tokens is too small to evaluate most models: prepare warns.
SMALL_VAL_TOKENS = 4096


def _warn_if_val_small(splits: dict[str, Any], val_fraction: float) -> None:
    tokens = splits.get("val", {}).get("tokens", 0)
    if val_fraction > 0 and tokens < SMALL_VAL_TOKENS:
        warnings.warn(f"the val split holds only {tokens:,} tokens (--val-fraction {val_fraction}); training "
                      f"needs more than block_size of them to evaluate: raise --val-fraction", stacklevel=2)


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """``out_dir/.prepare-tmp`` for the run's work; removed again when prepare fails (bad input, an
    error, Ctrl-C), with ``out_dir`` itself if this run made it and nothing else is there."""
    made = not out_dir.exists()
    staging = out_dir / STAGING
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if made and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _finished(out_dir: Path, cfg: PrepareConfig, infos: list[SourceInfo], progress: bool) -> dict[str, Any] | None:
    """The manifest of ``out_dir`` when it is already prepared with these settings and inputs."""
    done = reuse_or_clear(out_dir, cfg.to_json(), [i.identity() for i in infos])
    if done is not None and progress:
        print(f"{out_dir}: already prepared with these settings and inputs (nothing to do)", file=sys.stderr)
    return done


def _tokenize(corpus: Corpus, tok: Tokenizer, staging: Path, cfg: PrepareConfig, stats: CleanStats,
              progress: bool) -> SplitStreams:
    """The main pass: every kept document tokenised into the staged train/val shards."""
    bar = Progress(corpus.total_bytes, progress, "prepare")
    streams = tokenize_to_shards(corpus.documents(stats, bar.bytes), tok, staging / TOKENIZER_DIR, staging,
                                 seed=cfg.seed, val_fraction=cfg.val_fraction, shard_tokens=cfg.shard_tokens,
                                 record_tokens=cfg.record_tokens, workers=cfg.n_workers, bar=bar)
    if stats.documents_kept == 0:
        raise empty_corpus(stats)
    return streams
