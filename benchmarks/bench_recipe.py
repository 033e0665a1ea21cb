"""nanoGPT's recipe in tfgpt against nanoGPT itself: val loss at the same settings, seeds and held-out text.

    .venv/bin/python benchmarks/bench_recipe.py --seeds 1337 1338 --out bench_recipe.json
    .venv/bin/python benchmarks/bench_recipe.py --seeds 1337 --iters 200 --variants tfgpt nanogpt

Every run trains nanoGPT's CPU baby GPT (tiny Shakespeare by character, 4 layers, 4 heads, 128 wide, block
64, batch 12, lr 1e-3, warmup 100, cosine to 1e-4 at 2000, AdamW wd 0.1, beta2 0.99, clip 1, dropout 0,
no biases) on nanoGPT's split (first 90%), and is scored on every non-overlapping window of the last 10%.
The variants change one thing at a time (see ``VARIANTS``); nanoGPT's run in a torch subprocess
(``nanogpt_ref.py``). Prints one JSON object: each variant's val loss per seed, the mean, and the mean gap
to nanoGPT's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from nanogpt_ref import DATA, Recipe, char_split, val_windows  # noqa: E402
from timing import report  # noqa: E402

#: name -> (framework, settings beyond the shared recipe)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "nanogpt": ("torch", {}),
    "nanogpt-embeddings-exempt": ("torch", {"--no-embedding-decay": True}),
    "nanogpt-tanh-gelu": ("torch", {"--gelu": "tanh"}),
    "tfgpt": ("tfgpt", {"train.decay_embeddings": "false"}),  # tfgpt's default: embeddings exempt
    "tfgpt-decay-embeddings": ("tfgpt", {}),  # configs/nanogpt-cpu.yaml as it is
    "tfgpt-prepared-data": ("tfgpt-prepare", {}),
    "tfgpt-prepared-from-90pct": ("tfgpt-prepare-90", {}),
    "tfgpt-biases": ("tfgpt", {"model.bias": "true"}),
}

#: the tfgpt kinds that train on a ``tfgpt prepare`` data dir: the fraction of the text prepared
PREPARED = {"tfgpt-prepare": 1.0, "tfgpt-prepare-90": 0.9}


def tfgpt_config(r: Recipe, seed: int, vocab: int) -> dict[str, Any]:
    """``configs/nanogpt-cpu.yaml`` (nanoGPT's settings, named tfgpt's way), checked against ``r``, with the
    run's seed and length and no evals, samples or data dir of its own."""
    from tfgpt.config import read_yaml

    config = read_yaml(HERE.parent / "configs" / "nanogpt-cpu.yaml")
    model, train = config["model"], config["train"]
    ours = {"block_size": model["block_size"], "n_layer": model["n_layer"], "n_head": model["n_head"],
            "n_embd": model["n_embd"], "batch_size": train["batch_size"], "learning_rate": train["learning_rate"],
            "min_lr": train["min_lr"], "warmup_iters": train["warmup_steps"], "weight_decay": train["weight_decay"],
            "beta1": train["beta1"], "beta2": train["beta2"], "grad_clip": train["grad_clip"]}
    mismatch = {k: (v, getattr(r, k)) for k, v in ours.items() if v != getattr(r, k)}
    if mismatch or model["bias"] or not train["decay_embeddings"]:
        raise SystemExit(f"configs/nanogpt-cpu.yaml is not nanogpt_ref.Recipe: {mismatch}")
    train.update(max_steps=r.iters, lr_decay_steps=r.iters, seed=seed, steps_per_execution=50, log_interval=50,
                 eval_interval=r.iters, eval_iters=1, checkpoint_interval=r.iters, sample_tokens=0)
    if vocab:
        model["vocab_size"] = vocab
    return {"model": model, "train": train, "data": {"tokenizer": "char"}}


def tf_score(model: Any, windows: np.ndarray) -> float:
    """The same mean cross-entropy as ``nanogpt_ref.score``, on a tfgpt model."""
    import tensorflow as tf

    total, count = 0.0, 0
    for chunk in np.array_split(windows, max(1, len(windows) // 64)):
        logits = model(tf.constant(chunk[:, :-1], tf.int32), training=False)
        total += float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(chunk[:, 1:], logits)))
        count += chunk[:, 1:].size
    return total / count


def run_tfgpt(r: Recipe, seed: int, extra: dict[str, Any], prepared: float = 0.0) -> dict[str, Any]:
    """Train through ``tfgpt.train``: on nanoGPT's arrays, or on ``tfgpt prepare``'s data dir of the first
    ``prepared`` fraction of the text (1.0: all of it, as a user would; 0.9: nanoGPT's train split only,
    so training sees 81% and the val split is the 9% before nanoGPT's)."""
    from tfgpt.runs import load, load_run_model
    from tfgpt.train.data import array_source
    from tfgpt.train.fit import train

    text = DATA.read_text(encoding="utf-8")
    train_ids, val_ids, vocab = char_split(text)
    overrides = [f"{k}={v}" for k, v in extra.items()]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        if prepared:
            kwargs, vocab = {"data_dir": prepare_data(Path(tmp), text[: int(prepared * len(text))])}, 0
            overrides.append("model.vocab_size=null")
        else:
            kwargs = {"source": array_source({"train": train_ids, "val": val_ids[: 4 * r.block_size]})}
        t0 = time.perf_counter()
        train(tfgpt_config(r, seed, vocab), run_dir=run_dir, progress=False, overrides=overrides, **kwargs)
        wall = time.perf_counter() - t0
        model = load_run_model(run_dir)[0]
        if prepared:  # the run's own character ids, on the same held-out text
            val_ids = np.asarray(load(run_dir)[1].encode(text[int(0.9 * len(text)):]), np.int64)
        loss = tf_score(model, val_windows(val_ids, r.block_size))
    return {"seed": seed, "val_loss": loss, "train_s": wall}


def prepare_data(tmp: Path, text: str) -> str:
    """``tfgpt prepare --tokenizer char --val-fraction 0.1`` over ``text``, as a user would run it."""
    from tfgpt.data.prepare import prepare

    src = tmp / "tinyshakespeare.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp / "data"
    manifest = prepare([str(src)], str(out), "char", val_fraction=0.1, workers=0, progress=False)
    print(json.dumps({"prepared": manifest["splits"]}, default=str)[:400], file=sys.stderr, flush=True)
    return str(out)


def run_torch(r: Recipe, seed: int, extra: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "nanogpt_ref.py"), "--seed", str(seed), "--iters", str(r.iters)]
    for flag, value in extra.items():
        cmd += [flag] if value is True else [flag, str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"nanogpt_ref failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per variant: its losses, their mean, and the mean gap to nanoGPT's over the shared seeds."""
    out: dict[str, Any] = {}
    ref = {x["seed"]: x["val_loss"] for x in runs.get("nanogpt", [])}
    for name, xs in runs.items():
        losses = [x["val_loss"] for x in xs]
        row: dict[str, Any] = {"val_loss": losses, "mean": float(np.mean(losses)), "seeds": [x["seed"] for x in xs]}
        gaps = [x["val_loss"] - ref[x["seed"]] for x in xs if x["seed"] in ref]
        if gaps and name != "nanogpt":
            row["gap_vs_nanogpt"] = gaps
            row["mean_gap"] = float(np.mean(gaps))
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337, 1338])
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    r = Recipe(iters=args.iters)
    runs: dict[str, list[dict[str, Any]]] = {}
    for seed in args.seeds:
        for name in args.variants:
            kind, extra = VARIANTS[name]
            if kind == "torch":
                result = run_torch(r, seed, extra)
            else:
                result = run_tfgpt(r, seed, extra, prepared=PREPARED.get(kind, 0.0))
            runs.setdefault(name, []).append(result)
            print(json.dumps({"variant": name, **result}), file=sys.stderr, flush=True)
    report({"recipe": dataclasses.asdict(r), "iters": args.iters, "date": time.strftime("%Y-%m-%d"),
            "runs": runs, "summary": summarize(runs)}, args.out)


if __name__ == "__main__":
    main()
