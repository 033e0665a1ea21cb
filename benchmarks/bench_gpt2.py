"""GPT-2 124M (random weights) through tfgpt: import, decode on every surface, TFLite, tokenizer worst case.

All on this machine, each figure next to a peer measured in the same run:

- ``tfgpt.convert.import_gpt2`` of a Hugging Face dir (written by ``GPT2LMHeadModel.save_pretrained``)
  and ``tfgpt.load`` of the run against transformers' ``GPT2LMHeadModel.from_pretrained`` of the same
  dir (as returned, weights still mmap-ed, and with every weight read once): seconds and peak RSS, each
  in its own child process (``ru_maxrss`` of that child; ``baseline`` is its RSS after importing the
  libraries, before the load);
- greedy decode tok/s, Keras (``tfgpt.generate_ids``, XLA) and the exported SavedModel's
  ``generate_ids`` signature (no XLA), against transformers' greedy ``generate`` (torch CPU, KV cache,
  same thread count and at 1 thread, in a child process before and after tfgpt's rounds, so that no
  TensorFlow thread pool competes with it) and against the weight-read bound (weight bytes / copy bandwidth, as in
  ``bench_generate.py``); tfgpt's decoders in interleaved rounds, best round reported;
- TFLite float and int8 decode ms/token (``TFLiteGenerator``, the runner's cropped cache) and file sizes;
- the 8 KB worst-case in-graph tokenization: through the 124M SavedModel's ``serving_default``
  (one 8,192-letter word, 1 new token, minus ``generate_ids`` on the same ids), and
  ``bench_graph_tokenizer.measure`` (``tf.function`` + a 1-layer SavedModel, tiktoken alongside).

Everything is written under a temporary directory, removed at the end. Prints one JSON object.

    .venv/bin/python benchmarks/bench_gpt2.py --out /tmp/bench_gpt2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

PROMPT_LEN, NEW_TOKENS, EOT = 16, 64, 50256


# -- child processes: one load each, so ru_maxrss is that load's peak --------------------------------

def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _write_hf(out: str) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(out)


def _import(src: str, out: str) -> None:
    from tfgpt.convert import import_gpt2

    import_gpt2(src, out)


def _tfgpt_load(run: str) -> None:
    import tfgpt

    tfgpt.load(run)


def _hf_load(src: str, touch: str) -> None:
    """``from_pretrained``; with ``touch == "touch"`` also read every weight once (safetensors is
    mmap-ed lazily, so the load alone leaves the weights on disk)."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(src)
    if touch == "touch":
        sum(float(p.sum()) for p in model.parameters())


def _export(run: str, out: str) -> None:
    from tfgpt.cli import main as cli

    rc = cli(["export", "--run", run, "--out", out, "--format", "savedmodel,tflite", "--quantize", "int8"])
    if rc:
        raise SystemExit(f"tfgpt export --run {run} --out {out}: exit status {rc}")


def _hf_generate(src: str, rounds: str, threads: str) -> dict[str, Any]:
    """transformers' greedy KV-cached generate on torch CPU, in a process of its own (no TF threads)."""
    import torch
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(int(threads))
    model = GPT2LMHeadModel.from_pretrained(src).eval()
    prompt = torch.from_numpy(_prompt().astype(np.int64))

    def gen() -> list[int]:
        with torch.inference_mode():
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                                 min_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True, pad_token_id=EOT)
        return out[0, PROMPT_LEN:].tolist()

    ids = gen()  # warm-up
    times = [round(_timed(gen)[0], 3) for _ in range(int(rounds))]
    return {"ids": ids, "times": times, "torch_threads": torch.get_num_threads()}


CHILDREN = {"write-hf": _write_hf, "import": _import, "tfgpt-load": _tfgpt_load, "hf-load": _hf_load,
            "export": _export, "hf-generate": _hf_generate}


def _child(kind: str, args: list[str]) -> dict[str, Any]:
    """Run one action in this (child) process; its seconds, baseline RSS (after library imports) and peak RSS."""
    if kind in ("import", "tfgpt-load", "export"):  # libraries in the baseline, not in the timed load
        import tensorflow  # noqa: F401

        import tfgpt.cli  # noqa: F401
        import tfgpt.convert  # noqa: F401
    else:
        from transformers import GPT2LMHeadModel  # noqa: F401 - transformers imports its models lazily
    baseline = _rss_mb()
    t = time.perf_counter()
    extra = CHILDREN[kind](*args)
    seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 2), "baseline_rss_mb": round(baseline), "peak_rss_mb": round(_rss_mb()),
            **(extra or {})}


def run_child(kind: str, *args: str) -> dict[str, Any]:
    """``_child`` in a fresh interpreter; adds the wall time including interpreter and library start.

    Linux keeps ``ru_maxrss`` across exec, so a child's peak includes this process's RSS at the fork:
    it is the child's own only while this process is small (the loads run first, before the decode part).
    """
    cmd = [sys.executable, __file__, "--child", kind, *args]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{p.stderr[-4000:]}")
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "process_wall_s": round(wall, 2)}


def import_figures(hf_dir: Path, tmp: Path, repeats: int) -> dict[str, Any]:
    """tfgpt import and load vs transformers' load, interleaved, one child each; keeps ``tmp/run0``."""
    actions = {
        "tfgpt_import_gpt2": lambda r: ("import", str(hf_dir), str(tmp / f"run{r}")),
        "tfgpt_load_run": lambda r: ("tfgpt-load", str(tmp / "run0")),
        "transformers_from_pretrained": lambda r: ("hf-load", str(hf_dir), "lazy"),
        "transformers_from_pretrained_weights_read": lambda r: ("hf-load", str(hf_dir), "touch"),
    }
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in actions}
    for r in range(repeats):
        for name, args in actions.items():
            rows[name].append(run_child(*args(r)))
        if r:
            shutil.rmtree(tmp / f"run{r}")
    out: dict[str, Any] = {"runs": rows}
    for name, got in rows.items():
        out[name] = {"best_s": min(x["seconds"] for x in got), "peak_rss_mb": min(x["peak_rss_mb"] for x in got)}
    peer = out["transformers_from_pretrained_weights_read"]
    for name in ("tfgpt_import_gpt2", "tfgpt_load_run"):
        out[name]["time_vs_peer"] = round(out[name]["best_s"] / peer["best_s"], 2)
        out[name]["rss_vs_peer"] = round(out[name]["peak_rss_mb"] / peer["peak_rss_mb"], 2)
    return out


# -- decode, side by side ----------------------------------------------------------------------------

def load_savedmodel(export: Path) -> Any:
    """The export's SavedModel, loaded as TF Serving's Python clients would (TF-Text ops registered)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 - registers the in-graph tokenizer's ops

    info = json.loads((export / "export.json").read_text())
    return tf.saved_model.load(str(export / info["savedmodel"]["path"]))


def _timed(fn) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _decoders(run: Path, export: Path, prompt: np.ndarray) -> dict[str, Any]:
    """name → a no-argument callable doing one greedy generation; returns (new ids list, ms/token or None)."""
    import tensorflow as tf

    import tfgpt
    from tfgpt.export.tflite_runner import TFLiteGenerator

    model, _ = tfgpt.load(run)
    sig = load_savedmodel(export).signatures["generate_ids"]

    def keras_xla():
        return tfgpt.generate_ids(model, prompt, NEW_TOKENS, temperature=0)[0].tolist(), None

    def savedmodel():
        out = sig(ids=tf.constant(prompt), max_new_tokens=tf.constant(NEW_TOKENS), temperature=tf.constant(0.0),
                  top_k=tf.constant(0), seed=tf.constant(0))
        return out["ids"][0, : int(out["num_tokens"][0])].numpy().tolist(), None

    decoders = {"keras_xla": keras_xla, "savedmodel_no_xla": savedmodel}
    for name in ("model.tflite", "model_int8.tflite"):
        decoders[f"tflite[{name}]"] = _tflite_decoder(TFLiteGenerator(export / "tflite" / name), prompt[0])
    return decoders


def _tflite_decoder(gen: Any, prompt: np.ndarray):
    """Greedy TFLite generation as the runner does (cache cropped); reports the median decode step."""
    def run() -> tuple[list[int], float]:
        r = gen.prefill(ids=prompt[None].astype(np.int32))
        length = gen.cache_length(PROMPT_LEN, NEW_TOKENS)
        cache, logits = np.ascontiguousarray(r["cache"][:, :, :, :length]), r["logits"][0]
        ids, steps = [], []
        for i in range(NEW_TOKENS):
            ids.append(int(np.argmax(logits)))
            if i == NEW_TOKENS - 1:
                break
            t = time.perf_counter()
            r = gen.decode(token=np.array([[ids[-1]]], np.int32), index=np.array(PROMPT_LEN + i, np.int32),
                           cache=cache)
            steps.append(time.perf_counter() - t)
            cache, logits = r["cache"], r["logits"][0]
        return ids, 1000 * statistics.median(steps)
    return run


def _agree(a: list[int], b: list[int]) -> int:
    """How many leading ids two greedy generations share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _prompt() -> np.ndarray:
    """The one ``[1, PROMPT_LEN]`` prompt every decoder gets."""
    return np.random.default_rng(0).integers(0, EOT, (1, PROMPT_LEN)).astype(np.int32)


def _rounds(decoders: dict[str, Any], rounds: int) -> tuple[dict, dict, dict]:
    """Warm each decoder once, then ``rounds`` interleaved rounds: (ids, seconds, decode ms/token)."""
    ids = {name: fn()[0] for name, fn in decoders.items()}  # warm-up (XLA compile, graph tracing)
    times: dict[str, list[float]] = {n: [] for n in decoders}
    step_ms: dict[str, list[float]] = {n: [] for n in decoders}
    for _ in range(rounds):
        for name, fn in decoders.items():
            s, (_, ms) = _timed(fn)
            times[name].append(round(s, 3))
            if ms is not None:
                step_ms[name].append(round(ms, 2))
    return ids, times, step_ms


def decode_figures(run: Path, export: Path, hf_dir: Path, rounds: int) -> dict[str, Any]:
    """tfgpt's decoders in this process, transformers in a child before and after; the weight-read bound."""
    from bench_generate import memory_bandwidth_gbs

    import tfgpt

    bandwidth = [memory_bandwidth_gbs()]
    # torch at the same thread count as TensorFlow, and at 1 (its OpenMP pool suffers most on a loaded machine)
    peers = {f"transformers_torch_{n}_threads": str(n) for n in sorted({os.cpu_count() or 1, 1}, reverse=True)}
    hf_runs = {name: [run_child("hf-generate", str(hf_dir), "2", n)] for name, n in peers.items()}
    ids, times, step_ms = _rounds(_decoders(run, export, _prompt()), rounds)
    for name, n in peers.items():
        hf_runs[name].append(run_child("hf-generate", str(hf_dir), "2", n))
        ids[name] = hf_runs[name][0]["ids"]
        times[name] = [t for r in hf_runs[name] for t in r["times"]]
    bandwidth.append(memory_bandwidth_gbs())
    model, _ = tfgpt.load(run)
    weight_bytes = sum(int(np.prod(v.shape)) * 4 for v in model.weights)
    bound = max(bandwidth) * 1e9 / weight_bytes
    out: dict[str, Any] = {"prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS, "weight_bytes": weight_bytes,
                           "memory_bandwidth_gbs": [round(b, 1) for b in bandwidth],
                           "weight_read_bound_tok_s": round(bound, 1),
                           "weight_read_bound_ms_per_token": round(1000 / bound, 1),
                           "transformers_processes": {k: [{x: y for x, y in r.items() if x != "ids"} for r in v]
                                                      for k, v in hf_runs.items()}}
    hf_best = min(min(times[name]) for name in peers)  # the faster torch setting
    first_peer = next(iter(peers))
    for name in times:
        best, made = min(times[name]), len(ids[name])
        row = {"seconds": times[name], "tokens": made, "tok_s": round(made / best, 1),
               "fraction_of_bound": round(made / best / bound, 2),
               "speed_vs_transformers": round(hf_best / best * made / NEW_TOKENS, 2),
               "greedy_ids_agree_with_transformers": _agree(ids[name], ids[first_peer])}
        if step_ms.get(name):
            row["decode_ms_per_token"] = step_ms[name]
            row["best_decode_ms_per_token"] = min(step_ms[name])
        out[name] = row
    return out


# -- tokenizer worst case ----------------------------------------------------------------------------

def tokenizer_figures(export: Path, reps: int, tmp: Path) -> dict[str, Any]:
    """8 KB prompts: through the 124M SavedModel (tokenize + prefill − prefill), and H8's measure()."""
    import tensorflow as tf
    from bench_graph_tokenizer import KINDS, measure

    from tfgpt.tokenizers import BPETokenizer

    loaded = load_savedmodel(export)
    serve, gen = loaded.signatures["serving_default"], loaded.signatures["generate_ids"]
    tok = BPETokenizer.gpt2()
    one = {"max_new_tokens": tf.constant(1), "temperature": tf.constant(0.0), "top_k": tf.constant(0),
           "seed": tf.constant(0)}
    serve(prompts=tf.constant(["warm up"]), **one)
    rows = []
    for r in range(reps):
        text = KINDS["one_long_word"](random.Random(f"bench_gpt2-{r}"))  # fresh word: no cache can help
        ids = tok.encode(text)[-1023:]  # what serving_default keeps: block_size - 1 new token
        gen(ids=tf.constant([ids], tf.int32), **one)  # trace/warm this length
        s_serve, _ = _timed(lambda text=text: serve(prompts=tf.constant([text]), **one)["completions"].numpy())
        s_gen, _ = _timed(lambda ids=ids: gen(ids=tf.constant([ids], tf.int32), **one)["ids"].numpy())
        rows.append({"serving_default_s": round(s_serve, 3), "generate_ids_same_ids_s": round(s_gen, 3),
                     "tokenize_s": round(s_serve - s_gen, 3), "tokens": len(tok.encode(text))})
    old_tmp = tempfile.tempdir
    tempfile.tempdir = str(tmp)  # measure()'s 1-layer export lands under our temp dir, removed with it
    try:
        small = measure(reps, eager=False, savedmodel=True, kinds=["one_long_word", "digits", "shakespeare"])
    finally:
        tempfile.tempdir = old_tmp
    return {"gpt2_124m_serving_default_8192_letter_word": rows,
            "worst_tokenize_s_124m": max(r["tokenize_s"] for r in rows),
            "median_tokenize_s_124m": statistics.median(r["tokenize_s"] for r in rows),
            "bench_graph_tokenizer_measure": small,
            "before": {"serving_default_8192_letter_word_s": 9.5,
                       "source": "issue 13 (keras-hub merge loop, before commit b8415b7)"}}


# -- main ------------------------------------------------------------------------------------------

def _sizes(export: Path) -> dict[str, int]:
    info = json.loads((export / "export.json").read_text())
    sm = export / info["savedmodel"]["path"]
    sizes = {"savedmodel_bytes": sum(f.stat().st_size for f in sm.rglob("*") if f.is_file())}
    for f in sorted((export / "tflite").glob("*.tflite")):
        sizes[f"tflite/{f.name}"] = f.stat().st_size
    sizes["int8_over_float"] = round(sizes["tflite/model_int8.tflite"] / sizes["tflite/model.tflite"], 3)
    return sizes


def _machine() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        name = next(x.split(":", 1)[1].strip() for x in lines if x.startswith("Model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--import-repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved decode rounds (best reported)")
    ap.add_argument("--tokenizer-reps", type=int, default=3)
    ap.add_argument("--only-import", action="store_true", help="only the random HF dir and the load figures")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(_child(a.child[0], a.child[1:])))
        return 0
    result: dict[str, Any] = {"benchmark": "GPT-2 124M imported (issue 13)", "date": time.strftime("%Y-%m-%d %H:%M"),
                              "machine": _machine(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                              "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpt2_"))
    try:
        hf_dir = tmp / "hf"
        result["write_random_hf_dir"] = run_child("write-hf", str(hf_dir))
        result["import"] = import_figures(hf_dir, tmp, a.import_repeats)
        if a.only_import:
            return _finish(result, t0, a.out)
        result["export"] = run_child("export", str(tmp / "run0"), str(tmp / "export"))
        result["sizes"] = _sizes(tmp / "export")
        result["decode"] = decode_figures(tmp / "run0", tmp / "export", hf_dir, a.rounds)
        result["tokenizer_8kb"] = tokenizer_figures(tmp / "export", a.tokenizer_reps, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _finish(result, t0, a.out)


def _finish(result: dict[str, Any], t0: float, out: str | None) -> int:
    """Print (and write to ``out``) the JSON, with the end load and the total time."""
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
