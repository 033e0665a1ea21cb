"""SMS spam classification figures (issue 14): test/train/val accuracy and training time per
``--trainable`` mode, from a base LM pretrained here, from a random init of the same shape, and
through the ``tfgpt import-gpt2`` path on a random GPT-2-shaped model built with transformers.

    .venv/bin/python benchmarks/bench_spam.py --base /work/runs/base \\
        --data ../shared/data/SMSSpamCollection.tsv --sources base random gpt2 --epochs 5

Prints one JSON object (``--out FILE`` also writes it). Every run uses ``--balance`` (747/747)
and the seeded 70/10/20 split of ``finetune_classify``. There are no real GPT-2 weights here: the
``gpt2`` source is a *random* ``GPT2LMHeadModel`` saved with ``save_pretrained(safe_serialization=True)``
and imported, so its accuracy shows the path works, not what GPT-2 would reach.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("head", "last-block", "all", "lora")
GPT2_SHAPES = {  # name -> GPT2Config kwargs (vocab 50257 always)
    "small": dict(n_layer=4, n_embd=256, n_head=4, n_positions=256),
    "124m": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024),
}


def random_run(base: str, out: Path, seed: int) -> Path:
    """A run dir with ``base``'s shape and tokenizer but freshly initialised (seeded) weights."""
    import keras

    from tfgpt.config import load_model_config
    from tfgpt.model.gpt import GPT
    from tfgpt.runs import CONFIG_YAML, TOKENIZER_DIR, save_run
    from tfgpt.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(Path(base) / TOKENIZER_DIR)  # shape and tokenizer only, not the weights
    keras.utils.set_random_seed(seed)
    fresh = GPT(load_model_config(Path(base) / CONFIG_YAML))
    fresh.build((None, None))
    return save_run(out, fresh, tokenizer)


def gpt2_run(shape: str, work: Path, seed: int) -> tuple[Path, dict]:
    """Save a random HF GPT-2 (``GPT2_SHAPES[shape]``) as safetensors and ``tfgpt import-gpt2`` it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    hf_dir, run = work / f"hf-gpt2-{shape}", work / f"run-gpt2-{shape}"
    config = GPT2Config(vocab_size=50257, **GPT2_SHAPES[shape])
    GPT2LMHeadModel(config).save_pretrained(hf_dir, safe_serialization=True)
    start = time.perf_counter()
    cmd = [str(Path(sys.executable).parent / "tfgpt"), "import-gpt2", "--from", str(hf_dir), "--out", str(run),
           "--tokenizer", "gpt2"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return run, {"gpt2_config": dict(vocab_size=50257, **GPT2_SHAPES[shape]),
                 "import_seconds": round(time.perf_counter() - start, 1), "command": " ".join(cmd[1:])}


def classify_once(run: Path, mode: str, out: Path, args: argparse.Namespace) -> dict:
    """``finetune_classify`` of ``run`` in ``mode``; the accuracies, losses, parameters and wall time."""
    from tfgpt.finetune.classify import finetune_classify

    start = time.perf_counter()
    m = finetune_classify(run, args.data, out, trainable=mode, balance_classes=True, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed, lora_rank=args.lora_rank)
    seconds = time.perf_counter() - start
    keep = ("test_accuracy", "train_eval_accuracy", "val_accuracy", "accuracy", "test_loss", "val_loss",
            "train_eval_loss", "trainable_params", "total_params")
    row = {k: m[k] for k in keep if k in m}
    row.update(mode=mode if mode != "lora" else f"lora r{args.lora_rank}", train_seconds=round(seconds, 1),
               seconds_per_epoch=round(seconds / args.epochs, 1))
    print(json.dumps({"progress": str(run), **row}), file=sys.stderr, flush=True)
    return row


def bench_source(name: str, run: Path, modes: list[str], work: Path, args: argparse.Namespace) -> list[dict]:
    """One row per mode (a failed mode records its error instead of stopping the benchmark)."""
    rows = []
    for mode in modes:
        try:
            rows.append(classify_once(run, mode, work / f"spam-{name}-{mode}", args))
        except Exception as exc:  # noqa: BLE001 - a benchmark reports what broke and goes on
            rows.append({"mode": mode, "error": f"{type(exc).__name__}: {exc}"})
    return rows


def machine() -> dict:
    """CPU model, core count and load at the start (the CPU is shared with other jobs)."""
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "load_avg_start": os.getloadavg(),
            "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="/work/runs/base", help="the LM run pretrained here")
    ap.add_argument("--data", default="../shared/data/SMSSpamCollection.tsv")
    ap.add_argument("--sources", nargs="+", default=["base", "random", "gpt2"], choices=["base", "random", "gpt2"])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--random-modes", nargs="+", default=["all"], choices=MODES)
    ap.add_argument("--gpt2-shape", default="small", choices=sorted(GPT2_SHAPES))
    ap.add_argument("--gpt2-modes", nargs="+", default=["head", "all"], choices=MODES)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="where runs go (default: a temp dir)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args(argv)
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_spam-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": machine(), "command": " ".join(sys.argv), "data": a.data, "balance": True,
                    "split": "70/10/20 seeded", "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
                    "seed": a.seed, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "sources": {}}
    if "base" in a.sources:
        result["sources"]["base"] = {"run": a.base, "rows": bench_source("base", Path(a.base), a.modes, work, a)}
    if "random" in a.sources:
        run = random_run(a.base, work / "run-random", a.seed)
        result["sources"]["random"] = {"run": str(run), "rows": bench_source("random", run, a.random_modes, work, a)}
    if "gpt2" in a.sources:
        run, info = gpt2_run(a.gpt2_shape, work, a.seed)
        info["rows"] = bench_source(f"gpt2-{a.gpt2_shape}", run, a.gpt2_modes, work, a)
        result["sources"][f"gpt2-{a.gpt2_shape}-random-weights"] = info
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
