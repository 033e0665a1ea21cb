"""Benchmark the in-graph GPT-2 tokenizer's worst case on 8 KB prompts of several kinds.

For each kind of prompt (one long letter word, random words, random bytes, CJK, Shakespeare, ...) it
times ``GraphBPETokenizer.tokenize`` eagerly, inside a ``tf.function`` and through a real exported
SavedModel's ``serving_default`` (a 1-layer GPT-2-vocabulary model, 2 new tokens), next to tiktoken's
Python ``encode`` of the same text. Every repetition uses a fresh prompt (the old tokenizer cached
the words it had seen), and the figure reported is the worst repetition. Prints one JSON object.

``--before TREE`` also runs the same measurement in a subprocess with ``TREE`` (a git worktree of an
older commit) first on ``sys.path``, and prints both side by side.

Usage:
    .venv/bin/python benchmarks/bench_graph_tokenizer.py --reps 3 --before /tmp/h8-before
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = 8192
SHAKESPEARE = ROOT / "tfgpt" / "assets" / "corpus" / "tinyshakespeare.txt"


def _fit(text: str, size: int = SIZE) -> str:
    """``text`` cut to at most ``size`` UTF-8 bytes, at a character boundary."""
    return text.encode("utf-8")[:size].decode("utf-8", errors="ignore")


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))


def _words(rng: random.Random) -> str:
    return _fit(" ".join(_letters(rng, rng.randint(1, 10)) for _ in range(SIZE // 3)))


def _shakespeare(rng: random.Random) -> str:
    text = SHAKESPEARE.read_text(encoding="utf-8")
    start = rng.randrange(len(text) - 2 * SIZE)
    return _fit(text[start:])


#: kind → fresh 8 KB prompt from an rng.
KINDS: dict[str, Callable[[random.Random], str]] = {
    "one_long_word": lambda r: _letters(r, SIZE),
    "random_words": _words,
    "a_a_a": lambda r: _fit("a " * SIZE),
    "random_bytes": lambda r: _fit(r.randbytes(2 * SIZE).decode("utf-8", errors="replace")),
    "cjk": lambda r: _fit("".join(chr(r.randint(0x4E00, 0x9FFF)) for _ in range(SIZE))),
    "emoji": lambda r: _fit("".join(chr(r.randint(0x1F300, 0x1F64F)) for _ in range(SIZE))),
    "digits": lambda r: "".join(r.choice("0123456789") for _ in range(SIZE)),
    "spaces": lambda r: " " * SIZE,
    "long_word_and_words": lambda r: _letters(r, SIZE // 2) + " " + _words(r)[: SIZE // 2 - 1],
    "shakespeare": _shakespeare,
}


def _timed(fn: Callable[[str], object], arg: str) -> float:
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


def _export(tok: object, out: Path) -> Path:
    """Export a 1-layer, 32-wide GPT over ``tok`` to a SavedModel; return its directory."""
    import keras

    from tfgpt.config import GPTConfig
    from tfgpt.export import export_run
    from tfgpt.model import GPT
    from tfgpt.runs import save_run

    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32))
    model.build((None, None))
    run = save_run(out / "run", model, tok)
    info = export_run(run, out / "export", formats=("savedmodel",), verify=False, name="bench")
    return out / "export" / info["savedmodel"]["path"]


def _serving_default(tok: object) -> Callable[[str], object]:
    """A loaded export's ``serving_default`` as a call on one prompt (greedy, 2 new tokens)."""
    import tensorflow as tf

    work = Path(tempfile.mkdtemp(prefix="bench_graph_tok_"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # the loaded model may read its assets until exit
    sm = _export(tok, work)
    sig = tf.saved_model.load(str(sm)).signatures["serving_default"]
    scalars = {"max_new_tokens": tf.constant(2), "temperature": tf.constant(0.0), "top_k": tf.constant(0)}

    def serve(prompt: str) -> object:
        return sig(prompts=tf.constant([prompt]), seed=tf.constant(0), **scalars)

    serve("warm up")
    gc.collect()  # the export's garbage, so that no collection lands inside a timed call
    return serve


def _time_paths(paths: dict[str, Callable[[str], object]], kinds: list[str], reps: int, out: dict) -> None:
    """Add ``out[kind][path] = {"worst_s", "median_s"}`` over ``reps`` fresh prompts (no warm cache)."""
    for kind in kinds:
        for path, call in paths.items():
            rng = random.Random(f"{kind}-{path}")
            prompts = [KINDS[kind](rng) for _ in range(reps)]
            times = sorted(_timed(call, p) for p in prompts)
            row = {"worst_s": round(times[-1], 4), "median_s": round(times[len(times) // 2], 4)}
            out.setdefault(kind, {})[path] = row


def measure(reps: int, eager: bool, savedmodel: bool, kinds: list[str]) -> dict:
    """Worst and median seconds per kind for each path, tiktoken's alongside."""
    import tensorflow as tf

    from tfgpt.tokenizers import BPETokenizer

    tok = BPETokenizer.gpt2()
    graph = tok.graph_tokenizer()
    fn = tf.function(graph.tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
    fn(tf.constant(["warm up"]))
    paths: dict[str, Callable[[str], object]] = {"function": lambda s: fn(tf.constant([s])), "tiktoken": tok.encode}
    if eager:
        paths["eager"] = lambda s: graph.tokenize(tf.constant([s]))
    out: dict[str, dict] = {}
    _time_paths(paths, kinds, reps, out)  # before the export: its tracing slowed the next call of fn
    if savedmodel:
        _time_paths({"savedmodel": _serving_default(tok)}, kinds, reps, out)
    for kind in kinds:
        text = KINDS[kind](random.Random(kind))
        ids = fn(tf.constant([text])).to_list()[0]
        out[kind].update(bytes=len(text.encode()), tokens=len(ids), same_as_tiktoken=ids == tok.encode(text))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="fresh prompts per kind and path")
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--no-eager", action="store_true", help="skip the eager path")
    ap.add_argument("--no-savedmodel", action="store_true", help="skip the exported SavedModel")
    ap.add_argument("--before", help="a worktree of an older commit: measure it too, in a subprocess")
    ap.add_argument("--tree", help=argparse.SUPPRESS)  # the tree this process measures (set by --before)
    args = ap.parse_args(argv)
    if args.tree:
        sys.path.insert(0, args.tree)
    result: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    if args.before:
        cmd = [sys.executable, __file__, "--tree", args.before, "--reps", str(args.reps), "--kinds", *args.kinds]
        cmd += ["--no-eager"] * args.no_eager + ["--no-savedmodel"] * args.no_savedmodel
        env = {**os.environ, "PYTHONPATH": args.before}
        before = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=args.before)
        result["before"] = json.loads(before.stdout)["after"]
        result["before_tree"] = args.before
    result["after"] = measure(args.reps, not args.no_eager, not args.no_savedmodel, args.kinds)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
