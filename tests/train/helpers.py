"""Shared helpers for training tests: tiny configs and an in-memory char corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: The first 64 KiB of tinyshakespeare (tests/fixtures/SOURCES.md).
SHAKESPEARE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus" / "tinyshakespeare-64k.txt"


def char_tokens(n: int = 60000) -> tuple[np.ndarray, int]:
    text = SHAKESPEARE.read_text(encoding="utf-8")[:n]
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    return np.array([lookup[c] for c in text], dtype=np.int32), len(chars)


def tiny_config(**train: Any) -> dict[str, Any]:
    """A 1-layer, 32-wide model and a few steps: seconds per run."""
    base = dict(
        max_steps=8, batch_size=4, learning_rate=3e-3, min_lr=3e-4, warmup_steps=2,
        log_interval=1, eval_interval=4, eval_iters=2, checkpoint_interval=4, sample_tokens=0,
    )
    base.update(train)
    return {
        "model": dict(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.0),
        "train": base,
    }


def train_records(run_dir: Path) -> dict[int, dict[str, Any]]:
    import json

    out = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["kind"] == "train":
            out[rec["step"]] = rec
    return out
