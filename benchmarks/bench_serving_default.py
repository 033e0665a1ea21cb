"""SavedModel decode (no XLA) against the Keras XLA loop, per token, side by side in one process.

    .venv/bin/python benchmarks/bench_serving_default.py --shape char25m
    .venv/bin/python benchmarks/bench_serving_default.py --shape gpt2 --repeats 3

A random GPT of the shape is exported the way ``tfgpt export`` writes its SavedModel
(:class:`tfgpt.export.savedmodel.ServingModule`, ``tf.saved_model.save``), loaded back with
``tf.saved_model.load`` and its ``generate_ids`` signature (the decode loop ``serving_default`` runs,
without the in-graph tokenizer) is timed against ``tfgpt.generate_ids`` (XLA) on the same weights.
Calls alternate (a, b, a, b, ...) and the best of ``--repeats`` counts. Per-token time is
``(t(long) - t(short)) / (long - short)``: the prefill and the fixed per-call cost cancel.
Greedy ids of both paths must agree. ``--with-model-call`` adds a third path, the same SavedModel
traced with every step through the model's own cached call (the loop before ``decode_step``).
Prints JSON.
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


def _export(tmp: str, name: str, model, model_call: bool):
    """Save a ServingModule of ``model`` under ``tmp/name`` and load its ``generate_ids`` back."""
    import tensorflow as tf

    from tfgpt.export import savedmodel

    module = savedmodel.ServingModule(model, _Tok(model.config.vocab_size))
    supported = savedmodel.fast_step_supported
    if model_call:  # traced while decode_step is refused: each step is the model's cached call
        savedmodel.fast_step_supported = lambda m: False
    try:
        tf.saved_model.save(module, f"{tmp}/{name}", signatures=module.signatures())
    finally:
        savedmodel.fast_step_supported = supported
    return tf.saved_model.load(f"{tmp}/{name}").signatures["generate_ids"]


def measure(shape: str, prompt_len: int, short: int, long: int, repeats: int, model_call: bool) -> dict:
    """Best-of-``repeats`` seconds per path and length, interleaved; per-token figures and their ratio."""
    import tensorflow as tf

    import tfgpt
    from tfgpt.config import GPTConfig
    from tfgpt.model import GPT

    config = GPTConfig(**SHAPES[shape])
    model = GPT(config)
    model.build((None, None))
    ids = (np.arange(prompt_len, dtype=np.int32)[None] * 7 + 3) % config.vocab_size
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        t = time.perf_counter()
        sigs = {"savedmodel": _export(tmp, "sm", model, False)}
        export_s = time.perf_counter() - t
        if model_call:
            sigs["savedmodel_model_call"] = _export(tmp, "sm_model_call", model, True)
        greedy = dict(temperature=tf.constant(0.0), top_k=tf.constant(0), seed=tf.constant(0))
        paths = {
            name: lambda n, sig=sig: sig(ids=tf.constant(ids), max_new_tokens=tf.constant(n), **greedy)["ids"].numpy()
            for name, sig in sigs.items()
        }
        paths["keras_xla"] = lambda n: tfgpt.generate_ids(model, ids, max_new_tokens=n, temperature=0)
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
        "prompt_tokens": prompt_len, "new_tokens": [short, long], "repeats": repeats,
        "export_s": round(export_s, 1),
        "best_s": {f"{p}[{n}]": round(s, 4) for (p, n), s in best.items()},
        "ms_per_token": {p: round(v, 2) for p, v in per_token.items()},
        "ratio_over_xla": {p: round(per_token[p] / per_token["keras_xla"], 3) for p in sigs},
        "greedy_ids_equal": all(
            np.array_equal(outs[p, n], outs["keras_xla", n]) for p in sigs for n in (short, long)
        ),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="char25m")
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--short", type=int, default=16, help="new tokens of the short call")
    p.add_argument("--long", type=int, default=None,
                   help="new tokens of the long call (default 144, or what fits the block after the prompt)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--with-model-call", action="store_true", help="also time the loop through the model's call")
    a = p.parse_args()
    fits = SHAPES[a.shape]["block_size"] - a.prompt_tokens  # both paths must stay inside one cache
    a.long = min(144, fits) if a.long is None else a.long
    if not a.short < a.long <= fits:
        p.error(f"need --short < --long <= block_size - prompt tokens = {fits}")
    print(json.dumps(measure(a.shape, a.prompt_tokens, a.short, a.long, a.repeats, a.with_model_call), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
