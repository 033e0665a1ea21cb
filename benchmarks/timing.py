"""Timing shared by the benchmark scripts: peers timed in turns, so that a noisy machine's swings hit all alike."""

from __future__ import annotations

import time
from collections.abc import Callable


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
