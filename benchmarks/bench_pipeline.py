"""Benchmark ``tfgpt.data.lm_dataset`` for GPT-2 shapes vs what a GPT-2 (124M) training step consumes.

1. Prepares the bundled corpus (replicated ``--copies`` times) with the GPT-2 tokenizer into small
   shards (so rounds rotate over several shards), then times ``--batches`` batches of ``(x, y)``
   [8, 1024] from the training stream (random windows) and from the eval stream (sequential).
2. Unless ``--skip-model``: times a jit-compiled training step (AdamW, cross-entropy) of keras-hub's
   ``GPT2Backbone`` (12 layers, 768 wide, random weights) at batch 1 × 1024 and extrapolates linearly
   to batch 8 × 1024 (the full batch is heavy on 2 cores); tokens/s consumed = 8192 / step time.

Prints one JSON object with ``ratio`` = pipeline tokens/s ÷ training tokens/s (goal ≥ 10).

Usage:
    .venv/bin/python benchmarks/bench_pipeline.py --copies 8 --batches 400
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pipeline_rate(data_dir: Path, batches: int, shuffle: bool) -> dict:
    from tfgpt.data.pipeline import lm_dataset

    ds = lm_dataset(data_dir, "train", 1024, 8, seed=0, shuffle=shuffle, repeat=True)
    it = iter(ds)
    for _ in range(20):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        x, y = next(it)
    sec = time.perf_counter() - t0
    return {"batches_per_s": round(batches / sec, 1), "tokens_per_s": round(batches * 8 * 1024 / sec)}


def train_step_rate(steps: int) -> dict:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import keras_hub
    import tensorflow as tf

    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=50257, num_layers=12, num_heads=12,
                                             hidden_dim=768, intermediate_dim=3072, max_sequence_length=1024)
    opt = keras.optimizers.AdamW(learning_rate=1e-4)
    x = tf.random.uniform([1, 1024], maxval=50257, dtype=tf.int32)
    y = tf.random.uniform([1, 1024], maxval=50257, dtype=tf.int32)
    mask = tf.ones_like(x)
    emb = backbone.token_embedding

    @tf.function(jit_compile=True)
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            h = backbone({"token_ids": x, "padding_mask": mask}, training=True)
            logits = emb(h, reverse=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        grads = tape.gradient(loss, backbone.trainable_variables)
        opt.apply_gradients(zip(grads, backbone.trainable_variables, strict=True))
        return loss

    t0 = time.perf_counter()
    step(x, y).numpy()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y).numpy()
    sec = (time.perf_counter() - t0) / steps
    return {
        "params": backbone.count_params(),
        "compile_s": round(compile_s, 1),
        "step_s_batch1": round(sec, 3),
        "step_s_batch8_extrapolated": round(8 * sec, 2),
        "tokens_per_s": round(1024 / sec),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--model-steps", type=int, default=3)
    ap.add_argument("--skip-model", action="store_true")
    args = ap.parse_args()

    from tfgpt.data.prepare import prepare

    work = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        srcs = []
        for i in range(args.copies):
            for name in ("tinyshakespeare.txt", "wizard_of_oz.txt"):
                p = work / f"{i}-{name}"
                p.write_bytes(f"copy {i}\n".encode() + (SHARED / name).read_bytes())
                srcs.append(str(p))
        data = work / "data"
        m = prepare(srcs, str(data), "gpt2", gpt2_dir=str(SHARED / "gpt2_bpe"), val_fraction=0.0,
                    shard_tokens=1 << 20, workers=2, progress=False, command=["bench_pipeline"])
        result = {
            "benchmark": "pipeline",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "shape": {"block_size": 1024, "batch_size": 8},
            "train_tokens": m["splits"]["train"]["tokens"],
            "train_shards": len(m["splits"]["train"]["shards"]),
            "random_windows": pipeline_rate(data, args.batches, shuffle=True),
            "sequential_windows": pipeline_rate(data, args.batches, shuffle=False),
        }
        if not args.skip_model:
            result["gpt2_train_step"] = train_step_rate(args.model_steps)
            result["ratio"] = round(result["random_windows"]["tokens_per_s"]
                                    / result["gpt2_train_step"]["tokens_per_s"], 1)
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
