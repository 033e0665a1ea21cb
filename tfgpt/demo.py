"""``make demo`` / ``tfgpt demo``: the whole path on the bundled corpus, on a CPU, in minutes.

prepare (char-level tinyshakespeare shipped in the package) → train ``char-small`` → print a
sample → export (SavedModel + TFLite) → tell the user how to open TensorBoard.

Example:
    >>> bundled_corpus().name
    'tinyshakespeare.txt'
    >>> demo_config(200)["train"]["max_steps"], demo_config(200)["model"]["preset"]
    (200, 'char-small')
    >>> summary = run_demo("demo-out", steps=100)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path
from typing import Any

from tfgpt.layout import CHECKPOINTS, MODEL_KERAS

CORPUS = "assets/corpus/tinyshakespeare.txt"


def bundled_corpus() -> Path:
    """Path of the tinyshakespeare text shipped inside the package."""
    return Path(str(importlib.resources.files("tfgpt") / CORPUS))


def demo_config(steps: int) -> dict[str, Any]:
    """The char-small benchmark shape, trained for ``steps`` optimizer steps."""
    return {
        "model": {"preset": "char-small", "dropout": 0.0},
        "train": {
            "max_steps": steps, "batch_size": 12, "learning_rate": 1e-3, "min_lr": 0.0,
            "lr_schedule": "wsd", "lr_cooldown": 0.3,  # as configs/char-small.yaml: val 1.86 at 2000 steps
            "warmup_steps": min(20, max(1, steps // 10)), "weight_decay": 0.1, "beta2": 0.99, "grad_clip": 1.0,
            "jit_compile": True, "steps_per_execution": 50 if steps % 50 == 0 else 1,
            "log_interval": 50 if steps % 50 == 0 else 1, "eval_interval": max(1, steps // 4),
            "eval_iters": 20, "checkpoint_interval": max(1, steps // 2), "keep_checkpoints": 2,
            "sample_tokens": 200,
        },
        "data": {"tokenizer": "char"},
    }


def run_demo(out: str | Path = "demo-out", steps: int = 2000, export: bool = True, prompt: str = "ROMEO:") -> dict:
    """Run the demo into ``out`` (re-running reuses prepared data and a finished run, and resumes a killed one)."""
    import tfgpt
    from tfgpt.data.prepare import prepare
    from tfgpt.train.fit import train

    out = Path(out)
    data_dir, run_dir = out / "data", out / "run"
    print(f"[1/4] preparing {bundled_corpus().name} (bundled) into {data_dir}", flush=True)
    prepare([str(bundled_corpus())], str(data_dir), "char", val_fraction=0.1)
    summary: dict[str, Any] = {}
    if (run_dir / MODEL_KERAS).is_file():
        print(f"[2/4] {run_dir} is already trained; reusing it (delete it to train again)", flush=True)
    else:
        resume = (run_dir / CHECKPOINTS / "latest.json").is_file()  # a demo killed after its first checkpoint
        what = "resuming the interrupted training of" if resume else "training"
        print(f"[2/4] {what} char-small for {steps} steps into {run_dir}", flush=True)
        summary = train(demo_config(steps), data_dir=data_dir, run_dir=run_dir, resume=resume)
    model, tokenizer = tfgpt.load(run_dir)
    print(f"[3/4] a sample from {prompt!r}:\n", flush=True)
    sys.stdout.write(prompt)
    tfgpt.generate(model, tokenizer, prompt, max_new_tokens=400, temperature=0.8, top_k=40, seed=1,
                   stream=lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    print("\n", flush=True)
    exported = None
    if export:
        from tfgpt.export import export_run

        export_dir = out / "export"
        if (export_dir / "export.json").is_file():
            print(f"[4/4] {export_dir} already exists; keeping it (delete it to export again)", flush=True)
        else:
            print(f"[4/4] exporting to {export_dir} (SavedModel for TF Serving + TFLite)", flush=True)
            exported = export_run(run_dir, export_dir, formats=("savedmodel", "tflite"), quantize="int8",
                                  verify=True)
            cli = Path(sys.executable).parent / "tfgpt"
            checks = exported.get("verification", {})
            sm = checks.get("savedmodel", {})
            tfl = checks.get("tflite", {}).get("model.tflite", {})
            print(f"      verified: SavedModel logits max |diff| {sm.get('logits_max_abs_diff')}, greedy equal "
                  f"{sm.get('greedy_completions_equal')}; TFLite greedy equal {tfl.get('greedy_tokens_equal')}",
                  flush=True)
            print(f"      SavedModel: {export_dir}/savedmodel  TFLite: {export_dir}/tflite", flush=True)
            print(f"      serve it: {cli} serve --export {export_dir} --port 8501", flush=True)
    venv_tb = Path(sys.executable).parent / "tensorboard"
    tb = str(venv_tb) if venv_tb.exists() else "tensorboard"
    print(f"TensorBoard: {tb} --logdir {run_dir / 'logs'}   (then open http://localhost:6006)")
    cli = Path(sys.executable).parent / "tfgpt"
    print(f"Generate more: {cli} generate --run {run_dir} --prompt 'JULIET:' --stream")
    return {"data_dir": str(data_dir), "run_dir": str(run_dir), "train": summary, "export": exported}
