"""Export benchmarks: SavedModel serving_default latency (non-XLA), TFLite per-token decode, file sizes.

    .venv/bin/python benchmarks/bench_export.py --preset char-small --out /tmp/bench_export.json
    .venv/bin/python benchmarks/bench_export.py --preset gpt2 --new-tokens 16 --skip-tflite

Random weights (timing does not depend on them); one prompt of 16 tokens; prints and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import report  # benchmarks/timing.py (the script's own directory is on sys.path)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="char-small")
    p.add_argument("--new-tokens", type=int, nargs="+", default=[16, 128])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-tflite", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args()

    import tensorflow as tf

    from tfgpt.config import GPTConfig
    from tfgpt.export.savedmodel import ServingModule
    from tfgpt.export.tflite import convert_tflite
    from tfgpt.export.tflite_runner import TFLiteGenerator
    from tfgpt.model import GPT
    from tfgpt.tokenizers import CharTokenizer

    config = GPTConfig.preset(a.preset)
    tok = CharTokenizer.train(["".join(chr(32 + i % 90) for i in range(200))])
    model = GPT(config)
    model.build((None, None))
    result: dict = {"preset": a.preset, "n_params": int(model.count_params()), "xla": False}
    prompt = "".join(tok.chars[i % len(tok.chars)] for i in range(16))
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        module = ServingModule(model, tok)
        tf.saved_model.save(module, f"{tmp}/sm", signatures=module.signatures())
        result["savedmodel_bytes"] = sum(f.stat().st_size for f in Path(f"{tmp}/sm").rglob("*") if f.is_file())
        fn = tf.saved_model.load(f"{tmp}/sm").signatures["serving_default"]
        sm = {}
        for n in a.new_tokens:
            args = dict(prompts=tf.constant([prompt]), max_new_tokens=tf.constant(n), temperature=tf.constant(0.0),
                        top_k=tf.constant(0), seed=tf.constant(0))
            fn(**args)  # warm up
            times = []
            for _ in range(a.repeats):
                t = time.perf_counter()
                fn(**args)["completions"].numpy()
                times.append(time.perf_counter() - t)
            made = min(n, config.block_size - 1)  # max_new_tokens is clipped to block_size - 1
            sm[f"{n}_new_tokens"] = {"produced": made, "median_s": statistics.median(times),
                                     "ms_per_token": 1000 * statistics.median(times) / made}
        result["savedmodel_serving_default"] = sm
        if not a.skip_tflite:
            sizes = convert_tflite(model, f"{tmp}/tflite", quantize="int8")
            result["tflite_sizes_bytes"] = sizes
            result["int8_size_ratio"] = sizes["model_int8.tflite"] / sizes["model.tflite"]
            ids = np.arange(16, dtype=np.int32) % config.vocab_size
            for name in sizes:
                gen = TFLiteGenerator(f"{tmp}/tflite/{name}")
                steps = min(64, config.block_size - 17)
                # as the runner does (cache cropped to prompt + new tokens, rounded up), and with the full block
                for label, length in (("", gen.cache_length(16, steps)), (", full block cache", config.block_size)):
                    r = gen.prefill(ids=ids[None])
                    cache, times = np.ascontiguousarray(r["cache"][:, :, :, :length]), []
                    for i in range(steps):
                        t = time.perf_counter()
                        r = gen.decode(token=np.array([[1]], np.int32), index=np.array(16 + i, np.int32), cache=cache)
                        times.append(time.perf_counter() - t)
                        cache = r["cache"]
                    key = f"tflite_decode_ms_per_token[{name}{label}]"
                    result[key] = {"cache_length": length, "ms": 1000 * statistics.median(times)}
    result["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    report(result, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
