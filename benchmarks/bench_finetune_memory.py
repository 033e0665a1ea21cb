"""Fine-tuning memory (issue 14): peak memory and trainable parameters of full fine-tuning vs
LoRA r16 vs QLoRA-style int8 base + LoRA r16, one training step each on a GPT-2 124M shape.

    .venv/bin/python benchmarks/bench_finetune_memory.py --seq 256 --batch 2

Prints one JSON object. Each mode runs in its own fresh subprocess (``--child MODE``), so peaks do
not mix. The model is ``GPT(GPTConfig())`` (12 layers, 768 wide, 12 heads, vocab 50257, block 1024,
tied embeddings), random weights, trained as an LM (next-token cross-entropy) with the training
stack's AdamW (``make_optimizer``), ``model.compile(jit_compile=False)`` and ``train_on_batch`` on
a ``[batch, seq]`` batch of random ids. Figures per mode:

- ``ru_maxrss_mb``: the child's whole-life peak RSS (``getrusage``), which includes building the
  float32 model first (the int8 base is quantized from it, as ``quantize_base`` works);
- ``step_peak_rss_mb``: the peak RSS during the two training steps alone (``VmHWM`` reset through
  ``/proc/self/clear_refs`` just before them): resident model + optimizer state + activations;
- ``weight_bytes``: the bytes of the model's variables (int8 kernels 1 byte a value);
- ``optimizer_bytes``: the bytes of the optimizer's variables after the step (AdamW m and v);
- ``trainable_params``/``total_params`` from :func:`tfgpt.finetune.lora.param_counts`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("all", "lora", "qlora-int8")
MB = 1024 * 1024


def _status_kb(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _bytes(variables: list) -> int:
    """Total bytes of ``variables`` (each counted once)."""
    import numpy as np

    seen = {id(v): v for v in variables}
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in seen.values())


def _model(mode: str, rank: int):
    """The 124M-shaped GPT, built, quantized/LoRA'd and frozen for ``mode``."""
    from tfgpt.config import GPTConfig
    from tfgpt.finetune.lora import enable_lora_on, freeze, quantize_base
    from tfgpt.model.gpt import GPT

    model = GPT(GPTConfig())  # GPT-2 124M: 12 x 768, 12 heads, vocab 50257, block 1024
    model.build((None, None))
    if mode == "qlora-int8":
        quantize_base(model, "int8")
    if mode in ("lora", "qlora-int8"):
        enable_lora_on(model, rank)
    freeze(model, "all" if mode == "all" else "lora")
    return model


def child(mode: str, seq: int, batch: int, rank: int) -> dict:
    """Build ``mode``'s model, run two training steps, and measure (runs in its own process)."""
    import keras
    import numpy as np

    from tfgpt.finetune.lora import param_counts
    from tfgpt.train.config import TrainConfig
    from tfgpt.train.optim import make_optimizer

    keras.utils.set_random_seed(0)
    model = _model(mode, rank)
    gc.collect()
    trainable, total = param_counts(model)
    row = {"mode": mode, "trainable_params": trainable, "total_params": total,
           "weight_bytes": _bytes(model.weights), "rss_before_step_mb": round(_status_kb("VmRSS") / 1024, 1),
           "build_peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1)}
    model.compile(optimizer=make_optimizer(TrainConfig(max_steps=10, warmup_steps=0), model),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50257, size=(batch, seq), dtype=np.int32)
    y = rng.integers(0, 50257, size=(batch, seq), dtype=np.int32)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak of the steps alone
    times, losses = [], []
    for _ in range(2):
        start = time.perf_counter()
        losses.append(float(model.train_on_batch(x, y)))
        times.append(round(time.perf_counter() - start, 2))
    row.update(step_peak_rss_mb=round(_status_kb("VmHWM") / 1024, 1),
               ru_maxrss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               optimizer_bytes=_bytes(model.optimizer.variables), step_seconds=times, losses=losses)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--seq", type=int, default=256, help="training sequence length (block stays 1024)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.seq, a.batch, a.rank)))
        return 0
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine())
    result = {"machine": {"cpu": cpu, "cores": os.cpu_count(), "load_avg_start": os.getloadavg()},
              "shape": "GPT-2 124M (12 layers, 768 wide, 12 heads, vocab 50257, block 1024), random weights",
              "batch": a.batch, "seq": a.seq, "lora_rank": a.rank, "jit_compile": False,
              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "modes": []}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for mode in a.modes:
        cmd = [sys.executable, __file__, "--child", mode, "--seq", str(a.seq), "--batch", str(a.batch),
               "--rank", str(a.rank)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            result["modes"].append({"mode": mode, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        result["modes"].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(result["modes"][-1]), file=sys.stderr, flush=True)
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
