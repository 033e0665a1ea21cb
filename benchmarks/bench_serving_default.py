"""SavedModel decode (no XLA) against the Keras XLA loop, per token, side by side in one process.

    .venv/bin/python benchmarks/bench_serving_default.py --shape char25m
    .venv/bin/python benchmarks/bench_serving_default.py --shape gpt2 --repeats 3

A random GPT of the shape is exported the way ``tfgpt export`` writes its SavedModel
(:class:`tfgpt.export.savedmodel.ServingModule`, ``tf.saved_model.save``), loaded back with
``tf.saved_model.load`` and its ``generate_ids`` signature (the decode loop ``serving_default`` runs,
without the in-graph tokenizer) is timed against ``tfgpt.generate_ids`` (XLA) on the same weights.
Calls alternate (a, b, a, b, ...) and the best of ``--repeats`` counts. Per-token time is
``(t(long) - t(short)) / (long - short)``: the prefill and the fixed per-call cost cancel.
Greedy ids of both paths must agree. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

SHAPES = {
    "char25m": dict(vocab_size=65, block_size=256, n_layer=8, n_head=8, n_embd=512),
    "gpt2": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
    "char-small": dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128),
}


class _Tok:
    """The least a ServingModule needs from a tokenizer when only ``generate_ids`` is timed."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size, self.eot_id = vocab_size, None

    def graph_tokenizer(self):
        from tfgpt.tokenizers import CharTokenizer

        return CharTokenizer.train(["".join(chr(32 + i % 90) for i in range(200))]).graph_tokenizer()


def _timed(fn) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(shape: str, prompt_len: int, short: int, long: int, repeats: int, threads: int | None) -> dict:
    """Best-of-``repeats`` seconds per path and length, interleaved; per-token figures and their ratio."""
    import tensorflow as tf

    import tfgpt
    from tfgpt.config import GPTConfig
    from tfgpt.export.savedmodel import ServingModule
    from tfgpt.model import GPT

    config = GPTConfig(**SHAPES[shape])
    model = GPT(config)
    model.build((None, None))
    ids = (np.arange(prompt_len, dtype=np.int32)[None] * 7 + 3) % config.vocab_size
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        module = ServingModule(model, _Tok(config.vocab_size))
        t = time.perf_counter()
        tf.saved_model.save(module, f"{tmp}/sm", signatures=module.signatures())
        export_s = time.perf_counter() - t
        sig = tf.saved_model.load(f"{tmp}/sm").signatures["generate_ids"]
        greedy = dict(temperature=tf.constant(0.0), top_k=tf.constant(0), seed=tf.constant(0))
        paths = {
            "savedmodel": lambda n: sig(ids=tf.constant(ids), max_new_tokens=tf.constant(n), **greedy)["ids"].numpy(),
            "keras_xla": lambda n: tfgpt.generate_ids(model, ids, max_new_tokens=n, temperature=0),
        }
        best = {(p, n): float("inf") for p in paths for n in (short, long)}
        outs = {}
        for n in (short, long):  # warm-up: compile / first run
            for p, fn in paths.items():
                outs[p, n] = fn(n)
        for _ in range(repeats):
            for n in (short, long):
                for p, fn in paths.items():
                    s, _ = _timed(lambda fn=fn, n=n: fn(n))
                    best[p, n] = min(best[p, n], s)
    per_token = {p: 1000 * (best[p, long] - best[p, short]) / (long - short) for p in paths}
    return {
        "shape": shape, "config": SHAPES[shape], "n_params": int(model.count_params()),
        "prompt_tokens": prompt_len, "new_tokens": [short, long], "repeats": repeats, "intra_op_threads": threads,
        "export_s": round(export_s, 1),
        "best_s": {f"{p}[{n}]": round(s, 4) for (p, n), s in best.items()},
        "ms_per_token": {p: round(v, 2) for p, v in per_token.items()},
        "ratio_savedmodel_over_xla": round(per_token["savedmodel"] / per_token["keras_xla"], 3),
        "greedy_ids_equal": all(np.array_equal(outs["savedmodel", n], outs["keras_xla", n]) for n in (short, long)),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="char25m")
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--short", type=int, default=16, help="new tokens of the short call")
    p.add_argument("--long", type=int, default=144, help="new tokens of the long call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: TensorFlow's)")
    a = p.parse_args()
    if a.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    print(json.dumps(measure(a.shape, a.prompt_tokens, a.short, a.long, a.repeats, a.threads), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
