"""A bounded load soak of one real ``tfgpt serve`` (uvicorn, 127.0.0.1): 32 concurrent clients (threads, one
keep-alive ``requests.Session`` each) send a fixed mix of valid requests (short completions, chat, predict,
a stream) and invalid ones for ``TFGPT_SOAK_S`` seconds (default 30; ``make reliability`` sets 60).

Every answer must be the expected one (200, or the 4xx that request must get): zero 5xx, zero connection
failures. The server's RSS is read after a short warm-up (``WARMUP_S``: the model load and each request
shape's first run are over by then, so they do not count as growth) and at the end; it must grow under 10%.
Throughput, tokens/s and the valid requests' p50/p99 latency are recorded (figures ``60-soak``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter

import numpy as np
import pytest
import requests

from .helpers import rss_bytes, serve_process

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

TEST = "tests/serve/test_soak.py"
SOAK_S = float(os.environ.get("TFGPT_SOAK_S", "30"))  # make reliability: 60
WARMUP_S = min(8.0, SOAK_S / 4)
CLIENTS = 32
CAP = 8
CMPL, CHAT, PREDICT = "/v1/completions", "/v1/chat/completions", "/v1/models/tiny:predict"

#: (name, path, body (bytes: sent as is), expected status, valid?) — each client cycles through these.
MIX = [
    ("completion", CMPL, {"prompt": "ROMEO:", "max_tokens": 4}, 200, True),
    ("completion, sampled", CMPL, {"prompt": "The quick", "max_tokens": CAP, "temperature": 0.8, "seed": 3},
     200, True),
    ("completion, 2 prompts", CMPL, {"prompt": ["hello", "JULIET:"], "max_tokens": 2}, 200, True),
    ("chat", CHAT, {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}, 200, True),
    ("predict", PREDICT, {"instances": [{"prompts": "the fox", "max_new_tokens": 4}]}, 200, True),
    ("stream", CMPL, {"prompt": "ROMEO:", "max_tokens": 4, "stream": True}, 200, True),
    ("over the cap", CMPL, {"prompt": "ROMEO:", "max_tokens": CAP + 1}, 400, False),
    ("unknown field", CMPL, {"prompt": "ROMEO:", "bogus": 1}, 400, False),
    ("malformed JSON", CMPL, b'{"prompt": ', 400, False),
    ("not in the vocabulary", CMPL, {"prompt": "Zebra €"}, 400, False),
    ("other model", CHAT, {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404, False),
    ("bad predict", PREDICT, {"instances": []}, 400, False),
]


class Results:
    """What the clients saw, under a lock: statuses by request name, latencies of valid requests, tokens,
    unexpected answers and connection failures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter = Counter()
        self.latencies: list[float] = []
        self.tokens = 0
        self.unexpected: list[str] = []
        self.failures: list[str] = []

    def record(self, name: str, valid: bool, status: int, expected: int, seconds: float, tokens: int) -> None:
        with self.lock:
            self.statuses[status] += 1
            if valid:
                self.latencies.append(seconds)
                self.tokens += tokens
            if status != expected:
                self.unexpected.append(f"{name}: {status} (expected {expected})")


def _tokens(path: str, r: requests.Response, stream: bool) -> int:
    """Completion tokens an answer carries (usage, num_tokens, or one per streamed chunk with text)."""
    if stream:
        chunks = [line[6:] for line in r.text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]
        return sum(1 for c in chunks if json.loads(c)["choices"] and json.loads(c)["choices"][0].get("text"))
    body = r.json()
    if path == PREDICT:
        return sum(p["num_tokens"] for p in body["predictions"])
    return body["usage"]["completion_tokens"]


def _client(base: str, offset: int, stop_at: float, results: Results) -> None:
    """One client: the MIX in turn (from ``offset``) on one keep-alive session until ``stop_at``."""
    with requests.Session() as session:
        i = offset
        while time.monotonic() < stop_at:
            name, path, body, expected, valid = MIX[i % len(MIX)]
            i += 1
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            start = time.monotonic()
            try:
                r = session.post(base + path, data=data, headers={"content-type": "application/json"}, timeout=30)
                seconds = time.monotonic() - start
                tokens = _tokens(path, r, body.get("stream", False)) if r.status_code == 200 else 0
            except (requests.RequestException, ValueError, KeyError) as e:
                with results.lock:
                    results.failures.append(f"{name}: {type(e).__name__}: {e}")
                continue
            results.record(name, valid, r.status_code, expected, seconds, tokens)


def test_a_soak_of_32_clients_sees_no_5xx_and_bounded_memory(tiny_export, figures):
    with serve_process(tiny_export, "--max-new-tokens-cap", str(CAP), "--workers", "2") as served:
        results = Results()
        start = time.monotonic()
        stop_at = start + SOAK_S
        threads = [threading.Thread(target=_client, args=(served.base, k, stop_at, results), daemon=True)
                   for k in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(WARMUP_S)
        before = rss_bytes(served.pid)
        for t in threads:
            t.join(SOAK_S + 60)
        elapsed = time.monotonic() - start
        after = rss_bytes(served.pid)
        assert requests.get(f"{served.base}/healthz", timeout=10).status_code == 200
    _record(figures, results, elapsed, before, after)
    assert not any(t.is_alive() for t in threads)
    assert not results.failures, results.failures[:5]
    assert not [s for s in results.statuses if s >= 500], results.statuses
    assert not results.unexpected, Counter(results.unexpected).most_common(5)
    assert after < 1.10 * before, f"RSS grew from {before / 2**20:.0f} MiB to {after / 2**20:.0f} MiB"


def _record(figures, results: Results, elapsed: float, before: int, after: int) -> None:
    total = sum(results.statuses.values())
    p50, p99 = (np.percentile(results.latencies, [50, 99]) * 1000).round(1) if results.latencies else (0, 0)
    fivexx = sum(n for s, n in results.statuses.items() if s >= 500)
    figures("60-soak", title="Load soak of tfgpt serve",
            columns=["seconds", "clients", "requests", "valid", "req/s", "tokens/s", "p50 ms", "p99 ms", "5xx",
                     "connection failures", "RSS after warm-up MiB", "RSS end MiB", "RSS growth"],
            rows=[[f"{elapsed:.0f}", CLIENTS, total, len(results.latencies), f"{total / elapsed:.1f}",
                   f"{results.tokens / elapsed:.1f}", p50, p99, fivexx, len(results.failures),
                   f"{before / 2**20:.0f}", f"{after / 2**20:.0f}", f"{(after - before) / before:+.1%}"]],
            test=TEST,
            note=f"One server (tiny char export, --max-new-tokens-cap {CAP}, --workers 2) on loopback; "
                 f"{CLIENTS} threads with keep-alive sessions cycle through {len(MIX)} requests "
                 f"({sum(m[4] for m in MIX)} valid: completions, chat, predict, a stream; the others must get "
                 f"their 4xx). Latency percentiles are over valid requests, client-side. RSS before: after a "
                 f"{WARMUP_S:g} s warm-up. Duration: {SOAK_S:g} s (TFGPT_SOAK_S; 30 in make test, 60 in "
                 "make reliability).")
