"""Timing shared by the benchmark scripts: peers timed in turns, so that a noisy machine's swings hit all alike;
and the JSON report each prints (and writes with ``--out``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path


def best_of_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best seconds of each function after one warm-up call each, timed in turns (a, b, c, a, b, c, ...)."""
    for fn in fns.values():
        fn()  # compile / warm up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def report(result: dict, out: str | None) -> None:
    """Print ``result`` as JSON and, with ``out``, write the same to that file."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
