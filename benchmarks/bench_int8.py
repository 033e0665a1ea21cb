"""int8 decoding on CPU: where the time goes, float32 against Keras's int8 and weight-only int8 kernels.

Three parts, all timed in turns in this process (JSON out):

1. ``matvec``: one batch-1 matrix-vector product of a ``[768, 12288]`` kernel (GPT-2's MLP rows
   ×4), the decode step's core, under XLA: float32 ``dot``; int8 weights dequantized then ``dot``;
   weight-only int8 as a fused multiply-reduce (reads 1 byte per weight); int8 × int8 → int32 ``dot``
   (Keras's int8 Dense path) under XLA and under plain TensorFlow.
2. ``decode``: greedy ``generate_ids`` on the gpt2 shape (random weights), float32 against the
   attention/MLP Dense layers quantized with Keras (``quantize_dense``, as ``--quantize int8`` does).
3. ``perplexity`` (with ``--run RUN``): the run's perplexity on its held-out val split (or on
   ``--text FILE``), float32 and int8.

    python benchmarks/bench_int8.py
    python benchmarks/bench_int8.py --run demo-out/run --skip-decode
"""

from __future__ import annotations

import argparse
import json
import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import best_of_interleaved  # noqa: E402  (benchmarks/timing.py)

from tfgpt.config import GPTConfig  # noqa: E402
from tfgpt.generate import generate_ids  # noqa: E402
from tfgpt.model import GPT  # noqa: E402
from tfgpt.model.quantize import quantize_dense  # noqa: E402


def matvec(repeats: int) -> dict:
    rng = np.random.default_rng(0)
    n_in, n_out = 768, 12288
    kf = tf.constant(rng.standard_normal((n_in, n_out)).astype(np.float32))
    kq = tf.constant(rng.integers(-127, 128, (n_in, n_out)).astype(np.int8))
    scale = tf.constant(rng.random(n_out).astype(np.float32))
    x = tf.constant(rng.standard_normal((1, n_in)).astype(np.float32))
    xq = tf.constant(rng.integers(-127, 128, (1, n_in)).astype(np.int8))
    xla = tf.function(jit_compile=True)
    fns = {
        "f32_dot": xla(lambda: tf.matmul(x, kf)),
        "int8_dequantize_then_dot": xla(lambda: tf.matmul(x, tf.cast(kq, tf.float32)) * scale),
        "int8_weight_only_fused_reduce": xla(
            lambda: tf.reduce_sum(tf.transpose(x) * tf.cast(kq, tf.float32), axis=0, keepdims=True) * scale),
        "int8_x_int8_dot_xla": xla(lambda: tf.cast(tf.matmul(xq, kq, output_type=tf.int32), tf.float32) * scale),
        "int8_x_int8_dot_tf": tf.function(
            lambda: tf.cast(tf.matmul(xq, kq, output_type=tf.int32), tf.float32) * scale),
    }
    times = best_of_interleaved({k: (lambda f=f: f().numpy()) for k, f in fns.items()}, repeats)
    out = {"kernel": [n_in, n_out]}
    for name, t in times.items():
        nbytes = n_in * n_out * (4 if name.startswith("f32") else 1)
        out[name] = {"ms": t * 1e3, "weight_GB_per_s": nbytes / t / 1e9}
    return out


def decode(new_tokens: int, repeats: int) -> dict:
    cfg = GPTConfig.preset("gpt2")
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, 8)).astype(np.int32)
    models = {}
    for name in ("float32", "int8"):
        keras.utils.set_random_seed(0)
        models[name] = GPT(cfg)
        models[name].build((None, None))
        if name == "int8":
            quantize_dense(models[name])
    times = best_of_interleaved(
        {k: (lambda m=m: generate_ids(m, prompt, new_tokens, temperature=0)) for k, m in models.items()}, repeats)
    same = (generate_ids(models["float32"], prompt, 16, temperature=0)
            == generate_ids(models["int8"], prompt, 16, temperature=0)).mean()
    return {"new_tokens": new_tokens, **{f"{k}_tokens_per_s": new_tokens / t for k, t in times.items()},
            "int8_over_float32": times["float32"] / times["int8"], "greedy_tokens_equal_fraction_16": float(same)}


def perplexity(run: str, text: str | None, eval_iters: int) -> dict:
    """The run's perplexity, float32 and int8: on ``text`` (every window) or on its val split (seeded windows)."""
    from tfgpt.train.evaluate import evaluate_run, evaluate_text

    def score(quantize):
        if text is not None:
            return evaluate_text(run, text, quantize=quantize)
        return evaluate_run(run, split="val", eval_iters=eval_iters, quantize=quantize)

    f, q = score(None), score("int8")
    return {"run": run, "scored": text or "val split", "tokens": f["tokens"], "float32_loss": f["loss"],
            "int8_loss": q["loss"], "float32_perplexity": f["perplexity"], "int8_perplexity": q["perplexity"],
            "relative_change": q["perplexity"] / f["perplexity"] - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--run", default=None, help="a trained run dir, for the perplexity change")
    parser.add_argument("--text", default=None, help="a held-out UTF-8 text to score (default: the run's val split)")
    parser.add_argument("--eval-iters", type=int, default=200, help="val batches (without --text)")
    parser.add_argument("--skip-decode", action="store_true")
    args = parser.parse_args()
    result: dict = {"benchmark": "int8 decoding", "machine": f"{platform.machine()} {os.cpu_count()} cores",
                    "keras": keras.__version__, "tensorflow": tf.__version__}
    result["matvec"] = matvec(20 * args.repeats)
    if not args.skip_decode:
        result["decode_gpt2"] = decode(args.new_tokens, args.repeats)
    if args.run:
        result["perplexity"] = perplexity(args.run, args.text, args.eval_iters)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
