"""Instruction tuning figures (issue 14 item 2): val loss and ROUGE-L/BLEU before/after, samples,
training tokens/s, and the response-masked vs unmasked loss, on the Alpaca-style instruction data.

    .venv/bin/python benchmarks/bench_instruct.py --run /work/runs/base \\
        --data ../shared/data/instruction-data.json --epochs 2 --lr 5e-4

Prints one JSON object. Both runs (masked, unmasked) start from the same run, split and seed;
the unmasked one skips re-scoring the starting model (the same split gives the same numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _subset(data: str, n: int | None, where: Path) -> str:
    """``data`` itself, or a seeded ``n``-entry sample of it written under ``where``."""
    if not n:
        return data
    entries = json.loads(Path(data).read_text(encoding="utf-8"))
    sample = random.Random(0).sample(entries, n)
    path = where / f"subset-{n}.json"
    path.write_text(json.dumps(sample), encoding="utf-8")
    return str(path)


def _run(args: argparse.Namespace, data: str, out: Path, mask: bool) -> dict:
    from tfgpt.finetune.tune_instruct import finetune_instruct

    start = time.perf_counter()
    metrics = finetune_instruct(args.run, data, out, mask_prompt=mask, epochs=args.epochs,
                                batch_size=args.batch_size, lr=args.lr, seed=args.seed, trainable=args.trainable,
                                max_new_tokens=args.max_new_tokens, score_start=mask)
    metrics["wall_seconds"] = round(time.perf_counter() - start, 1)
    rows = json.loads((out / "responses.json").read_text(encoding="utf-8"))
    metrics["samples"] = rows[:3]
    return metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="the base LM run to tune")
    p.add_argument("--data", required=True, help="instruction-data.json")
    p.add_argument("--subset", type=int, default=None, help="use a seeded sample of this many entries")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trainable", default="all")
    p.add_argument("--max-new-tokens", type=int, default=64)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = _subset(args.data, args.subset, tmp_path)
        masked = _run(args, data, tmp_path / "masked", True)
        unmasked = _run(args, data, tmp_path / "unmasked", False)
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), {platform.python_version()}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {k: v for k, v in vars(args).items()},
        "masked": masked,
        "unmasked": unmasked,
    }, indent=2))


if __name__ == "__main__":
    main()
