"""The matrix products of one char-small training step: XLA:CPU (TensorFlow) vs PyTorch, side by side.

    .venv/bin/python benchmarks/bench_dots.py --threads 2 --out bench_dots.json

Each Dense layer of a block costs three products per step: forward ``x @ W``, input gradient
``dy @ W^T`` and weight gradient ``x^T @ dy``. This times each one at the char-small shapes
(768 rows = batch 12 x block 64, width 128) under ``tf.function(jit_compile=True)`` (``--reps``
products in one XLA loop, so dispatch is excluded) and in PyTorch eager with ``--threads``
threads, plus the weight gradient of the MLP output projection computed the other way round
(``dy^T @ x``, the ``[out, in]`` form PyTorch's ``nn.Linear`` stores). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

ROWS = 768  # batch 12 x block 64

#: (name, in, out) of the Dense layers of one char-small block.
LAYERS = [("c_attn", 128, 384), ("attn.c_proj", 128, 128), ("mlp.c_fc", 128, 512), ("mlp.c_proj", 512, 128)]


def products(d_in: int, d_out: int) -> dict[str, tuple[tuple[int, int], tuple[int, int], bool, bool]]:
    """name -> (lhs shape, rhs shape, transpose_a, transpose_b) of the step's products for one layer."""
    return {
        "forward x@W": ((ROWS, d_in), (d_in, d_out), False, False),
        "input grad dy@W^T": ((ROWS, d_out), (d_in, d_out), False, True),
        "weight grad x^T@dy": ((ROWS, d_in), (ROWS, d_out), True, False),
        "weight grad [out,in] dy^T@x": ((ROWS, d_out), (ROWS, d_in), True, False),
    }


def time_xla(a_shape: tuple, b_shape: tuple, ta: bool, tb: bool, reps: int, rounds: int) -> float:
    """Median microseconds of one product, ``reps`` of them in one compiled while loop."""
    import tensorflow as tf

    a = tf.random.normal(a_shape)
    b = tf.random.normal(b_shape)

    @tf.function(jit_compile=True)
    def run(a: Any, b: Any) -> Any:
        def body(i: Any, acc: Any) -> tuple[Any, Any]:
            # acc * 0 keeps the product inside the loop (XLA would hoist a loop-invariant one).
            out = tf.matmul(a + acc[0, 0] * 0.0, b, transpose_a=ta, transpose_b=tb)
            return i + 1, acc + out[0:1, 0:1]

        return tf.while_loop(lambda i, _: i < reps, body, (0, tf.zeros((1, 1))))[1]

    run(a, b)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run(a, b).numpy()
        times.append((time.perf_counter() - t0) / reps)
    return float(np.median(times)) * 1e6


def time_torch(a_shape: tuple, b_shape: tuple, ta: bool, tb: bool, reps: int, rounds: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    a, b = torch.randn(*a_shape), torch.randn(*b_shape)
    a_op, b_op = (a.T if ta else a), (b.T if tb else b)
    for _ in range(10):
        a_op @ b_op
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            a_op @ b_op
        times.append((time.perf_counter() - t0) / reps)
    return float(np.median(times)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    rows = []
    for layer, d_in, d_out in LAYERS:
        for kind, (a_shape, b_shape, ta, tb) in products(d_in, d_out).items():
            flops = 2 * ROWS * d_in * d_out
            xla = time_xla(a_shape, b_shape, ta, tb, args.reps, args.rounds)
            ref = time_torch(a_shape, b_shape, ta, tb, args.reps, args.rounds)
            rows.append({
                "layer": layer, "product": kind, "lhs": list(a_shape), "rhs": list(b_shape),
                "transpose_a": ta, "transpose_b": tb, "xla_us": round(xla, 1),
                "xla_gflops": round(flops / xla / 1e3, 1),
                "torch_us": None if ref is None else round(ref, 1),
                "torch_gflops": None if ref is None else round(flops / ref / 1e3, 1),
            })
    result = {"threads": args.threads, "cpus": os.cpu_count(), "tensorflow": tf.__version__, "torch": torch_version,
              "load_avg": os.getloadavg()[0], "products": rows}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
