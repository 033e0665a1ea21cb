"""DPO figures (issue 14 item 3): reward margin and loss curves, and the val margin after one epoch.

    .venv/bin/python benchmarks/bench_dpo.py --run /work/runs/dpo/base \\
        --data ../shared/data/instruction-data.json --instruct-epochs 2 --lr 1e-4 --beta 0.1

Preference pairs are built from the instruction data with ``pairs_from_instructions`` (chosen: an
entry's output; rejected: a seeded other entry's output). With ``--instruct-epochs N`` the run is
first instruction-tuned (``finetune_instruct``, no responses generated), and DPO starts from that.
Prints one JSON object: the per-step train curve in windows of ``--window`` steps, every val
evaluation, and the val metrics before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METRICS = ("loss", "chosen_reward", "rejected_reward", "margin", "accuracy")


def _windows(lines: list[dict], size: int) -> list[dict]:
    """Means of the train lines over consecutive windows of ``size`` steps (the last may be shorter)."""
    out = []
    for start in range(0, len(lines), size):
        chunk = lines[start : start + size]
        row = {"steps": f"{chunk[0]['step']}-{chunk[-1]['step']}"}
        row.update({k: round(sum(r[k] for r in chunk) / len(chunk), 4) for k in METRICS})
        out.append(row)
    return out


def _instruct(args: argparse.Namespace, where: Path) -> tuple[str, dict]:
    """The run DPO starts from: ``--run`` itself, or it instruction-tuned for ``--instruct-epochs``."""
    if not args.instruct_epochs:
        return args.run, {}
    from tfgpt.finetune.tune_instruct import finetune_instruct

    start = time.perf_counter()
    m = finetune_instruct(args.run, args.data, where / "instruct", epochs=args.instruct_epochs,
                          batch_size=args.batch_size, lr=args.instruct_lr, seed=args.seed, max_new_tokens=0,
                          score_start=False)
    info = {k: m[k] for k in ("val_loss_before", "val_loss_after", "split")}
    info.update(epochs=args.instruct_epochs, lr=args.instruct_lr, wall_seconds=round(time.perf_counter() - start, 1))
    return str(where / "instruct"), info


def _prefer(args: argparse.Namespace, start_run: str, prefs: Path, out: Path) -> dict:
    from tfgpt.finetune.prefer import STEPS_JSONL, finetune_prefer

    start = time.perf_counter()
    m = finetune_prefer(start_run, prefs, out, beta=args.beta, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, seed=args.seed, trainable=args.trainable, eval_every=args.eval_every)
    wall = round(time.perf_counter() - start, 1)
    lines = [json.loads(x) for x in (out / "logs" / STEPS_JSONL).read_text().splitlines()]
    train = [x for x in lines if x["split"] == "train"]
    val = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in x.items() if k != "split"}
           for x in lines if x["split"] == "val"]
    per_epoch = len(train) // args.epochs
    after_one = next(x for x in val if x["step"] == per_epoch)
    keep = ("split", "steps", "trainable_params", "total_params", "train_seconds", "steps_per_s")
    summary = {k: m[k] for k in keep}
    summary.update({k: round(v, 4) for k, v in m.items() if k.startswith("val_")})
    return {"wall_seconds": wall, **summary, "val_after_one_epoch": after_one,
            "train_curve": _windows(train, args.window), "val_curve": val}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="the LM run to start from")
    p.add_argument("--data", required=True, help="instruction-data.json (pairs are built from it)")
    p.add_argument("--instruct-epochs", type=int, default=0, help="instruction-tune first for this many epochs")
    p.add_argument("--instruct-lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trainable", default="all")
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--window", type=int, default=10, help="train steps averaged per curve point")
    p.add_argument("--keep", default=None, help="write the runs here instead of a temp dir")
    args = p.parse_args()

    from tfgpt.finetune.dpo import pairs_from_instructions
    from tfgpt.finetune.instruct import read_instruction_data

    where = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_dpo."))
    where.mkdir(parents=True, exist_ok=True)
    prefs = where / "prefs.json"
    prefs.write_text(json.dumps(pairs_from_instructions(read_instruction_data(args.data), seed=args.seed)))
    start_run, instruct = _instruct(args, where)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), {platform.python_version()}",
        "command": " ".join(["benchmarks/bench_dpo.py", *sys.argv[1:]]),
        "start_run": args.run,
        "pairs": "pairs_from_instructions(instruction-data.json, seed): chosen = the entry's output, "
                 "rejected = another entry's output",
        "instruct_first": instruct or None,
        "dpo": {"beta": args.beta, "lr": args.lr, "epochs": args.epochs, "batch_size": args.batch_size,
                "trainable": args.trainable, **_prefer(args, start_run, prefs, where / "dpo")},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
