"""Batched serving: `tfgpt serve` with concurrent clients, batching on against batching off, one run.

    .venv/bin/python benchmarks/bench_serve_batching.py --shape small10m
    .venv/bin/python benchmarks/bench_serve_batching.py --shape gpt2 --rounds 2

A random GPT of the shape is saved as a run (a char tokenizer; a model vocabulary larger than it is
masked, as for any padded vocabulary) and exported as `tfgpt export` does. For each server (default
`--batch-rows 16`, then `--batch-rows 1`: one SavedModel call per request) it measures one client in
a loop, then `--clients` clients at once, each sending `--rounds` sampled `/v1/completions` requests
of `--max-tokens` tokens (seeded per request). Tokens are the replies' `usage.completion_tokens`.
First, the SavedModel's `complete` signature is timed in process at batch 1, 4 and 16 (what
`serving/batching_parameters.txt` is tuned from).
Prints JSON: tokens/s, p50/p99 latency, failures, and the ratios against one client and against the
unbatched server.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from timing import report  # benchmarks/timing.py (the script's own directory is on sys.path)

SHAPES = {
    "small10m": dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384),
    "char25m": dict(vocab_size=65, block_size=256, n_layer=8, n_head=8, n_embd=512),
    "gpt2": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
}
PROMPT = "ROMEO: Is the day so young? "


def make_export(tmp: Path, shape: str) -> Path:
    """A random model of ``shape`` saved as a run and exported (SavedModel only) under ``tmp``."""
    from tfgpt.config import GPTConfig
    from tfgpt.export import export_run
    from tfgpt.model import GPT
    from tfgpt.runs import save_run
    from tfgpt.tokenizers import CharTokenizer

    tok = CharTokenizer.train(["".join(chr(32 + i) for i in range(95)) + "\n"])
    model = GPT(GPTConfig(**{**SHAPES[shape], "vocab_size": max(SHAPES[shape]["vocab_size"], tok.vocab_size)}))
    model.build((None, None))
    run = save_run(tmp / "run", model, tok)
    export_run(run, tmp / "export", formats="savedmodel", verify=False, name="bench")
    return tmp / "export"


def start(export: Path, batch_rows: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = ["timeout", "3600", sys.executable, "-m", "tfgpt", "serve", "--export", str(export), "--port", str(port),
           "--workers", "16", "--batch-rows", str(batch_rows), "--max-new-tokens-cap", "256"]
    proc = subprocess.Popen(cmd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if requests.get(f"{base}/healthz", timeout=1).ok:
                return proc, base
        except requests.ConnectionError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start")


def load(base: str, clients: int, rounds: int, max_tokens: int) -> dict:
    """``clients`` concurrent loops of ``rounds`` requests each; tokens/s over the wall time."""
    def client(c: int) -> list[tuple[bool, float, int]]:
        out = []
        for r in range(rounds):
            body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.8, "seed": 1000 * c + r}
            t = time.perf_counter()
            try:
                reply = requests.post(f"{base}/v1/completions", json=body, timeout=600)
                ok = reply.status_code == 200
                tokens = reply.json()["usage"]["completion_tokens"] if ok else 0
            except requests.RequestException:
                ok, tokens = False, 0
            out.append((ok, time.perf_counter() - t, tokens))
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [x for chunk in pool.map(client, range(clients)) for x in chunk]
    wall = time.perf_counter() - t0
    lat = np.array([t for _, t, _ in results])
    tokens = sum(n for _, _, n in results)
    return {"clients": clients, "requests": len(results), "failed": sum(not ok for ok, _, _ in results),
            "tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1000),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1000)}


def savedmodel_batches(export: Path, sizes: list[int], max_tokens: int, repeats: int = 2) -> dict:
    """The SavedModel's ``complete`` at each batch size, in this process (what TF Serving's batcher runs)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 - the in-graph tokenizer's ops

    info = json.loads((export / "export.json").read_text())
    fn = tf.saved_model.load(str(export / info["savedmodel"]["path"])).signatures["complete"]
    out = {}
    for n in sizes:
        feeds = dict(prompts=tf.constant([PROMPT] * n), max_new_tokens=tf.fill([n], max_tokens),
                     temperature=tf.fill([n], 0.8), top_k=tf.zeros([n], tf.int32), seed=tf.range(n))
        fn(**feeds)  # warm up
        best = min(_timed(lambda: fn(**feeds)["completions"].numpy()) for _ in range(repeats))  # noqa: B023
        out[str(n)] = {"call_s": round(best, 3), "tokens_per_s": round(n * max_tokens / best, 1)}
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="small10m", choices=sorted(SHAPES))
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="requests per client at --clients")
    p.add_argument("--single-rounds", type=int, default=6, help="requests of the lone client")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    result: dict = {"shape": a.shape, **SHAPES[a.shape], "max_tokens": a.max_tokens}
    with tempfile.TemporaryDirectory(prefix="bench_batching_") as tmp:
        export = make_export(Path(tmp), a.shape)
        result["savedmodel_complete_by_batch"] = savedmodel_batches(export, [1, 4, 16], a.max_tokens)
        print(json.dumps(result["savedmodel_complete_by_batch"]), file=sys.stderr, flush=True)
        for label, rows in (("batched", 16), ("unbatched", 1)):
            proc, base = start(export, rows)
            try:
                load(base, 2, 1, a.max_tokens)  # warm up: the first calls trace and optimize the graph
                one = load(base, 1, a.single_rounds, a.max_tokens)
                many = load(base, a.clients, a.rounds, a.max_tokens)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            result[label] = {"one_client": one, f"{a.clients}_clients": many,
                             "ratio_vs_one_client": round(many["tokens_per_s"] / one["tokens_per_s"], 2)}
            print(json.dumps({label: result[label]}), file=sys.stderr, flush=True)
    key = f"{a.clients}_clients"
    result["batched_vs_unbatched_at_clients"] = round(
        result["batched"][key]["tokens_per_s"] / result["unbatched"][key]["tokens_per_s"], 2)
    report(result, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
