"""Load test for ``tfgpt serve`` on 127.0.0.1: N requests, C concurrent; throughput, p50/p99, failures.

    .venv/bin/python benchmarks/bench_serve.py --export EXPORT --requests 200 --concurrency 16 --out serve.json
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
from timing import report  # benchmarks/timing.py (the script's own directory is on sys.path)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--export", required=True)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--prompt", default="ROMEO:")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["timeout", "1800", sys.executable, "-m", "tfgpt", "serve", "--export", a.export,
                             "--port", str(port), "--workers", "4"],
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        body = {"prompt": a.prompt, "max_tokens": a.max_tokens}
        requests.post(f"{base}/v1/completions", json=body, timeout=300)  # warm up

        def one(i: int) -> tuple[bool, float]:
            t = time.perf_counter()
            try:
                r = requests.post(f"{base}/v1/completions", json={**body, "seed": i, "temperature": 0.8}, timeout=300)
                return r.status_code == 200, time.perf_counter() - t
            except requests.RequestException:
                return False, time.perf_counter() - t

        start = time.perf_counter()
        with ThreadPoolExecutor(a.concurrency) as pool:
            results = list(pool.map(one, range(a.requests)))
        wall = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lat = np.array([t for _, t in results])
    out = {
        "requests": a.requests, "concurrency": a.concurrency, "max_tokens": a.max_tokens,
        "failed": sum(not ok for ok, _ in results), "wall_s": wall, "requests_per_s": a.requests / wall,
        "p50_ms": float(np.percentile(lat, 50) * 1000), "p99_ms": float(np.percentile(lat, 99) * 1000),
    }
    report(out, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
