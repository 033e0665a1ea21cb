"""A tqdm bar over input bytes with a tokens-per-second readout; silent when disabled."""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts input bytes (the bar) and tokens (the rate shown beside it).

    Example:
        >>> bar = Progress(total=100, enabled=False, desc="prepare")
        >>> bar.bytes(10); bar.add_tokens(5); bar.close(); bar.tokens
        5
    """

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
            self.bar.set_postfix_str(f"{self.tokens / max(now - self.t0, 1e-9) / 1e6:.2f}M tok/s", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
