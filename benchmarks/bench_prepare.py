"""Benchmark ``tfgpt.data.prepare``: MB/s, tokens/s and peak RSS for char and GPT-2 BPE.

The corpus is the bundled text (tinyshakespeare + wizard_of_oz + the-verdict) replicated into
``--copies`` × 3 ``.txt`` documents (150 copies ≈ 206 MB). Prints one JSON object.

Usage:
    .venv/bin/python benchmarks/bench_prepare.py --copies 150 --tokenizers char gpt2 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILES = ("tinyshakespeare.txt", "wizard_of_oz.txt", "the-verdict.txt")


def make_corpus(directory: Path, copies: int) -> int:
    """Write ``copies`` × 3 documents; return the total bytes."""
    texts = [(SHARED / f).read_bytes() for f in FILES]
    total = 0
    for i in range(copies):
        for name, data in zip(FILES, texts, strict=True):
            p = directory / f"{i:04d}-{name}"
            blob = f"copy {i}\n".encode() + data
            p.write_bytes(blob)
            total += len(blob)
    return total


class TreeRSS:
    """Samples the summed RSS of this process and its children (from /proc) every 0.1 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _rss(self, pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _children(self, pid: int) -> list[int]:
        out = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(c) for c in f.read().split()]
        except OSError:
            pass
        return out

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            pids, todo = [], [me]
            while todo:
                p = todo.pop()
                pids.append(p)
                todo += self._children(p)
            self.peak = max(self.peak, sum(self._rss(p) for p in pids))
            time.sleep(0.1)

    def __enter__(self) -> TreeRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=150)
    ap.add_argument("--tokenizers", nargs="+", default=["char", "gpt2"], choices=["char", "bpe", "gpt2"])
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--workdir", default=None, help="where to write the corpus and outputs (temp dir)")
    args = ap.parse_args()

    from tfgpt.data.prepare import prepare

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_prepare_"))
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    nbytes = make_corpus(corpus, args.copies)
    results = []
    for kind in args.tokenizers:
        out = work / f"out-{kind}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        with TreeRSS() as rss:
            m = prepare([str(corpus)], str(out), kind, gpt2_dir=str(SHARED / "gpt2_bpe"), workers=args.workers,
                        progress=False, command=["bench_prepare", kind])
        sec = time.perf_counter() - t0
        tokens = m["counts"]["tokens"]
        results.append({
            "tokenizer": kind,
            "seconds": round(sec, 2),
            "mb_per_s": round(nbytes / 1e6 / sec, 2),
            "tokens_per_s": round(tokens / sec),
            "tokens": tokens,
            "shards": {s: len(m["splits"][s]["shards"]) for s in ("train", "val")},
            "vocab_size": m["tokenizer"]["vocab_size"],
            "peak_rss_tree_mb": round(rss.peak / 2**20),
        })
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({
        "benchmark": "prepare",
        "corpus_mb": round(nbytes / 1e6, 1),
        "documents": 3 * args.copies,
        "workers": args.workers,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "peak_rss_main_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_largest_child_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "results": results,
    }, indent=1))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
