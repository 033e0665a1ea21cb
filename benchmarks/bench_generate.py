"""Greedy generation speed: tfgpt's cached XLA decode loop vs keras-hub's GPT2CausalLM.generate.

Both models have the same shape and run side by side in this process; the JSON printed holds
tokens/s of each and the ratio. ``--shape gpt2`` also reports the memory-bound limit: weight
bytes ÷ measured memory bandwidth (a large numpy copy).

    python benchmarks/bench_generate.py --shape char-small
    python benchmarks/bench_generate.py --shape gpt2 --new-tokens 128 --prompt-len 32
    python benchmarks/bench_generate.py --past-block --prompt-len 8   # char-small at its own block 64

``--past-block`` keeps char-small's block_size (64), so 256 new tokens outgrow it: tfgpt's two
``context`` modes (shift, slide), each also streamed through ``tfgpt.generate(stream=...)``, and
the per-token loop (slide, one compiled call per token) against keras-hub, which is given a
position table long enough for the whole text.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from timing import best_of_interleaved  # noqa: E402  (benchmarks/timing.py)

from tfgpt.config import GPTConfig  # noqa: E402
from tfgpt.generate import generate, generate_ids  # noqa: E402
from tfgpt.model import GPT  # noqa: E402
from tfgpt.tokenizers import CharTokenizer  # noqa: E402


def best_of(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def memory_bandwidth_gbs(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """Copy bandwidth (read + write bytes per second) of a large array, in GB/s."""
    a = np.ones(nbytes // 8, dtype=np.float64)
    b = np.empty_like(a)
    best = min(_timed(lambda: np.copyto(b, a)) for _ in range(repeats))
    return 2 * nbytes / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def keras_hub_generate_fn(config: GPTConfig, prompt: np.ndarray, new_tokens: int):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=config.vocab_size, num_layers=config.n_layer, num_heads=config.n_head,
        hidden_dim=config.n_embd, intermediate_dim=4 * config.n_embd, dropout=0.0,
        max_sequence_length=config.block_size,
    )
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy", jit_compile=True)
    total = prompt.shape[1] + new_tokens
    ids = np.zeros((1, total), np.int32)
    ids[:, : prompt.shape[1]] = prompt
    mask = np.zeros((1, total), bool)
    mask[:, : prompt.shape[1]] = True
    inputs = {"token_ids": ids, "padding_mask": mask}
    return lambda: lm.generate(inputs, stop_token_ids=None), backbone.count_params()


def past_block(args: argparse.Namespace, result: dict) -> None:
    """tfgpt at char-small's own block 64 (shift, slide, streamed, per token) vs keras-hub with a long table."""
    config = GPTConfig.preset("char-small")
    model = GPT(config)
    model.build((None, None))
    tok = CharTokenizer.train(["".join(chr(48 + i) for i in range(config.vocab_size))])  # 65 ids, no specials
    text = "".join(chr(48 + i) for i in np.random.default_rng(0).integers(0, config.vocab_size, args.prompt_len))
    prompt = np.array([tok.encode(text)], np.int32)
    n = args.new_tokens
    runs = {
        "shift": lambda: generate_ids(model, prompt, n, temperature=0),
        "shift_streamed": lambda: generate(model, tok, text, n, temperature=0, stream=lambda d: None),
        "shift_text": lambda: generate(model, tok, text, n, temperature=0),
        "slide": lambda: generate_ids(model, prompt, n, temperature=0, context="slide"),
        "slide_streamed": lambda: generate(model, tok, text, n, temperature=0, stream=lambda d: None,
                                           context="slide"),
        "per_token_calls": lambda: generate_ids(model, prompt, n, temperature=0, context="slide",
                                                on_tokens=lambda b: None, stream_chunk=1),
    }
    if not args.no_keras_hub:
        runs["keras_hub"], _ = keras_hub_generate_fn(GPTConfig.preset("char-small", block_size=args.prompt_len + n),
                                                     prompt, n)
    times = best_of_interleaved(runs, args.repeats)
    for name, t in times.items():
        result[f"{name}_tokens_per_s" if name == "keras_hub" else f"tfgpt_{name}_tokens_per_s"] = n / t
    result["stream_over_plain_time"] = times["shift_streamed"] / times["shift_text"]
    if "keras_hub" in times:
        for name, t in times.items():
            if name != "keras_hub":
                result[f"ratio_{name}_vs_keras_hub"] = times["keras_hub"] / t
    print(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="char-small", choices=["char-small", "gpt2"])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-keras-hub", action="store_true")
    parser.add_argument("--past-block", action="store_true", help="char-small at block 64: generation past it")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    if args.past_block:
        past_block(args, {"benchmark": "greedy generation past block_size", "shape": "char-small", "batch": 1,
                          "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                          "machine": f"{platform.machine()} {os.cpu_count()} cores", "keras": keras.__version__})
        return
    block = max(args.prompt_len + args.new_tokens, 64)
    if args.shape == "char-small":
        # char-small's layers/width/vocab; block_size grown to hold prompt + new tokens for both models.
        config = GPTConfig.preset("char-small", block_size=block)
    else:
        config = GPTConfig.preset("gpt2")
    model = GPT(config)
    model.build((None, None))
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, (1, args.prompt_len)).astype(np.int32)
    result: dict = {
        "benchmark": "greedy generation", "shape": args.shape, "config": config.to_dict(),
        "batch": 1, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "machine": f"{platform.machine()} {os.cpu_count()} cores", "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    bandwidths = [memory_bandwidth_gbs()] if args.shape == "gpt2" else []
    ours = best_of(lambda: generate_ids(model, prompt, args.new_tokens, temperature=0), args.repeats)
    result["tfgpt_tokens_per_s"] = args.new_tokens / ours
    if not args.no_keras_hub:
        fn, _ = keras_hub_generate_fn(config, prompt, args.new_tokens)
        theirs = best_of(fn, args.repeats)
        result["keras_hub_tokens_per_s"] = args.new_tokens / theirs
        result["ratio_vs_keras_hub"] = theirs / ours
    if args.shape == "gpt2":
        weight_bytes = sum(int(np.prod(v.shape)) * 4 for v in model.weights)
        bandwidths.append(memory_bandwidth_gbs())  # before and after: the best is the machine's
        bw = max(bandwidths)
        limit = bw * 1e9 / weight_bytes
        result.update(weight_bytes=weight_bytes, memory_bandwidth_gbs=bw,
                      memory_bound_tokens_per_s=limit,
                      fraction_of_memory_bound=result["tfgpt_tokens_per_s"] / limit)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
