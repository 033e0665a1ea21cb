"""The ``tfgpt`` command line: one argparse entry whose sub-commands call library functions.

Errors tfgpt raises for bad input (:class:`tfgpt.errors.TfgptError`) print as one line and exit
with status 2; no traceback from deep inside TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _json_out(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# -- generate / chat ----------------------------------------------------------------------


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="≤ 0 means greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--context", choices=("shift", "slide"), default="shift",
                   help="past block_size: shift (go on from the last half block; fast) or slide (nanoGPT's exact "
                        "last-block window; slower)")


def _cli_prompt(prompt: str | None) -> str | bytes:
    """The --prompt text; argv bytes that are not UTF-8 (surrogate escapes) go back to bytes, so
    generation reports them clearly."""
    from tfgpt.errors import TfgptError

    if prompt is None:
        raise TfgptError("give --prompt TEXT")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(prompt)
    return prompt


def cmd_generate(args: argparse.Namespace) -> int:
    """Print prompt + completion (nanoGPT's sample.py and HF pipelines do), or only the completion
    with ``--completion-only``; the same for ``--run``, ``--tflite`` and ``--stream``."""
    from tfgpt.errors import TfgptError

    prompt = _cli_prompt(args.prompt)
    sampling = dict(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, seed=args.seed, stop=args.stop,
    )
    head = "" if args.completion_only or not isinstance(prompt, str) else prompt
    if args.tflite and args.run:
        raise TfgptError("give --run RUN or --tflite FILE, not both")
    if args.tflite and args.quantize:
        raise TfgptError("--quantize goes with --run RUN (a .tflite file is quantized at export: "
                         "tfgpt export --quantize int8)")
    if args.tokenizer and not args.tflite:
        raise TfgptError("--tokenizer goes with --tflite FILE (a run dir holds its own tokenizer)")
    if args.tflite:
        from tfgpt.export.tflite_runner import generate_tflite

        print(head + generate_tflite(args.tflite, args.tokenizer, prompt, context=args.context, **sampling))
        return 0
    if not args.run:
        raise TfgptError("give --run RUN (or --tflite FILE --tokenizer DIR)")
    import tfgpt

    model, tokenizer = tfgpt.load(args.run, checkpoint=args.checkpoint)
    if args.quantize:
        from tfgpt.model.quantize import quantize_dense

        quantize_dense(model, args.quantize)
    sampling["context"] = args.context
    if not args.stream:
        print(head + tfgpt.generate(model, tokenizer, prompt, **sampling))
        return 0

    def emit(delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()

    emit(head)
    tfgpt.generate(model, tokenizer, prompt, stream=emit, **sampling)
    sys.stdout.write("\n")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from tfgpt.generate.chat import chat

    return chat(args.run, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop, context=args.context)


# -- prepare / train / eval / demo -----------------------------------------------------------


def cmd_prepare(args: argparse.Namespace) -> int:
    from tfgpt.data.prepare import prepare

    manifest = prepare(
        args.input, args.out, args.tokenizer, vocab_size=args.vocab_size, val_fraction=args.val_fraction,
        dedupe=args.dedupe, near_dedupe=args.near_dedupe, workers=args.workers,
        shard_tokens=args.shard_tokens, text_field=args.text_field, min_chars=args.min_chars,
        seed=args.seed, gpt2_dir=args.gpt2_dir, progress=not args.quiet, command=["tfgpt", *sys.argv[1:]],
        unk_token=args.unk_token,
    )
    counts = manifest.get("counts", {})
    _json_out({"out": args.out, "counts": counts})
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tfgpt.train.preflight import preflight

    preflight(args.config, data_dir=args.data, run_dir=args.run_dir, overrides=args.set or [], resume=args.resume)
    from tfgpt.train.fit import train

    summary = train(
        args.config, data_dir=args.data, run_dir=args.run_dir, overrides=args.set or [], resume=args.resume,
        strategy=args.strategy, progress=not args.quiet,
    )
    _json_out(summary)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tfgpt.errors import ConfigError
    from tfgpt.train.evaluate import evaluate_run, evaluate_text

    if args.text is not None:
        given = [flag for flag, value in (("--data", args.data), ("--eval-iters", args.eval_iters))
                 if value is not None]
        if given:
            raise ConfigError(f"--text FILE scores that file; it takes no {', '.join(given)}")
        _json_out(evaluate_text(args.run, args.text, stride=args.stride, checkpoint=args.checkpoint,
                                quantize=args.quantize))
        return 0
    if args.stride is not None:
        raise ConfigError("--stride applies to --text FILE only")
    result = evaluate_run(args.run, split=args.split, eval_iters=args.eval_iters, data_dir=args.data,
                          checkpoint=args.checkpoint, quantize=args.quantize)
    _json_out(result)
    if "note" in result:
        print(f"tfgpt eval: note: {result['note']}", file=sys.stderr)
    return 0


def export_summary(info: dict[str, Any], out: str) -> list[str]:
    """A few human lines for ``tfgpt export`` (the whole record is ``OUT/export.json``).

    Example:
        >>> info = {"source": {"run": "r", "checkpoint": "r/model.keras"}, "formats": ["tflite"],
        ...         "tflite": {"files": {"tflite/model.tflite": {"size_bytes": 2_500_000}}},
        ...         "verification": {"tflite": {"model.tflite": {"greedy_tokens_equal": True}}}}
        >>> print("\\n".join(export_summary(info, "e")))
        exported r (r/model.keras) to e
          tflite: e/tflite/model.tflite (2.5 MB)
          verified: tflite model.tflite greedy_tokens_equal
          details: e/export.json
    """
    lines = [f"exported {info['source']['run']} ({info['source']['checkpoint']}) to {out}"]
    for fmt in info.get("formats", []):
        part = info.get(fmt) or {}
        if "path" in part:
            sigs = ", ".join(sorted(part.get("signatures") or []))
            lines.append(f"  {fmt}: {os.path.join(out, part['path'])}" + (f" (signatures: {sigs})" if sigs else ""))
        for name, f in (part.get("files") or {}).items():
            lines.append(f"  {fmt}: {os.path.join(out, name)} ({f.get('size_bytes', 0) / 1e6:.1f} MB)")
    for fmt, checks in (info.get("verification") or {}).items():
        flat = {f"{k} {kk}" if isinstance(v, dict) else k: vv for k, v in checks.items()
                for kk, vv in (v.items() if isinstance(v, dict) else [(k, v)])}
        ok = [k for k, v in flat.items() if v is True]
        bad = [k for k, v in flat.items() if v is False]
        lines.append(f"  verified: {fmt} {', '.join(ok) or '-'}" + (f"; FAILED: {', '.join(bad)}" if bad else ""))
    return lines + [f"  details: {os.path.join(out, 'export.json')}"]


def cmd_export(args: argparse.Namespace) -> int:
    """Print a short summary (``--json``: the whole export.json record)."""
    from tfgpt.export import export_run

    info = export_run(args.run, args.out, formats=args.format, quantize=args.quantize, verify=args.verify,
                      name=args.name, version=args.version, checkpoint=args.checkpoint)
    if args.json:
        _json_out(info)
    else:
        print("\n".join(export_summary(info, args.out)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from tfgpt.errors import ConfigError
    from tfgpt.serve.app import serve

    if args.moderation is None and (args.moderation_action or args.moderation_flag):
        raise ConfigError("--moderation-action and --moderation-flag need --moderation RUN2")
    serve(args.export, host=args.host, port=args.port, max_new_tokens_cap=args.max_new_tokens_cap,
          max_body_bytes=args.max_body_bytes, workers=args.workers, moderation=args.moderation,
          moderation_action=args.moderation_action or "label", moderation_flags=args.moderation_flag,
          api_key_file=args.api_key_file, batch_rows=args.batch_rows, batch_window_ms=args.batch_window_ms)
    return 0


def cmd_import_gpt2(args: argparse.Namespace) -> int:
    from tfgpt.convert import import_gpt2

    info = import_gpt2(args.from_dir, args.out, tokenizer=args.tokenizer)
    _json_out({k: info[k] for k in ("run", "layout", "from", "model")} | {"tokenizer": info["tokenizer"]["how"]})
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tfgpt.demo import run_demo

    run_demo(args.out, steps=args.steps, export=not args.no_export)
    return 0


def cmd_finetune_classify(args: argparse.Namespace) -> int:
    from tfgpt.finetune.classify import finetune_classify

    metrics = finetune_classify(args.run, args.data, args.out, trainable=args.trainable, balance_classes=args.balance,
                                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, quantize=args.quantize,
                                resume=args.resume, clip=args.clip, accumulate=args.accumulate,
                                precision=args.precision)
    _json_out({"run": str(args.out), **metrics})
    return 0


def cmd_finetune_instruct(args: argparse.Namespace) -> int:
    from tfgpt.finetune.tune_instruct import finetune_instruct

    metrics = finetune_instruct(args.run, args.data, args.out, mask_prompt=args.mask_prompt, epochs=args.epochs,
                                batch_size=args.batch_size, lr=args.lr, seed=args.seed, trainable=args.trainable,
                                lora_rank=args.lora_rank, max_new_tokens=args.max_new_tokens, resume=args.resume,
                                clip=args.clip, accumulate=args.accumulate, precision=args.precision)
    _json_out({"run": str(args.out), **metrics})
    return 0


def cmd_finetune_prefer(args: argparse.Namespace) -> int:
    from tfgpt.finetune.prefer import finetune_prefer

    metrics = finetune_prefer(args.run, args.data, args.out, beta=args.beta, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed, trainable=args.trainable,
                              lora_rank=args.lora_rank, eval_every=args.eval_every, resume=args.resume,
                              clip=args.clip, accumulate=args.accumulate, precision=args.precision)
    _json_out({"run": str(args.out), **metrics})
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from tfgpt.finetune.classify import classify

    for label, prob in classify(args.run, args.text):
        print(f"{label}\t{prob:.4f}")
    return 0

# -- the parser -----------------------------------------------------------------------------


Adder = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _prepare_parser(add: Adder) -> None:
    p = add("prepare", cmd_prepare, "stream a corpus into a tokenizer + TFRecord token shards")
    p.add_argument("--input", nargs="+", required=True, help="files, directories or globs (.txt .jsonl .gz .xz .tar)")
    p.add_argument("--out", required=True, help="DATA_DIR to write")
    p.add_argument("--tokenizer", choices=["char", "bpe", "gpt2"], required=True)
    p.add_argument("--vocab-size", type=int, default=None, help="bpe vocabulary size (default 8192)")
    p.add_argument("--val-fraction", type=float, default=0.0005)
    p.add_argument("--dedupe", action="store_true", help="drop exact duplicate documents")
    p.add_argument("--near-dedupe", action="store_true", help="also drop near-duplicates (MinHash)")
    p.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: CPU count)")
    p.add_argument("--shard-tokens", type=int, default=1 << 25)
    p.add_argument("--text-field", default="text", help="JSONL field holding the text")
    p.add_argument("--min-chars", type=int, default=1, help="drop documents shorter than this")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--gpt2-dir", default=None,
                   help="dir with GPT-2's encoder.json + vocab.bpe (default: the copy in the package)")
    p.add_argument("--unk-token", default=None, metavar="TOKEN",
                   help="char only: one extra id for characters the corpus lacks (else a prompt with one is an error)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _train_parser(add: Adder) -> None:
    p = add("train", cmd_train, "train a GPT with model.fit (or the multi-worker loop)")
    p.add_argument("--config", default=None, help="configs/X.yaml")
    p.add_argument("--data", default=None, help="DATA_DIR (overrides data.dir)")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.max_steps=100")
    p.add_argument("--resume", action="store_true", help="continue RUN exactly from its latest checkpoint")
    p.add_argument("--strategy", choices=["default", "mirrored", "multiworker"], default="default")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _eval_parser(add: Adder) -> None:
    p = add("eval", cmd_eval, "loss and perplexity of a run (JSON)")
    p.add_argument("--run", required=True)
    scored = p.add_mutually_exclusive_group()
    scored.add_argument("--split", default="val", choices=["train", "val"])
    scored.add_argument("--text", default=None, metavar="FILE",
                        help="perplexity of this UTF-8 text file instead of a data split (not with --split/--data)")
    p.add_argument("--eval-iters", type=int, default=None)
    p.add_argument("--data", default=None, help="DATA_DIR (default: the run's)")
    p.add_argument("--stride", type=int, default=None,
                   help="with --text: tokens between window starts (default: the block size, no overlap)")
    p.add_argument("--quantize", default=None, choices=["int8"],
                   help="score with int8 attention/MLP weights, as generate --quantize int8 runs")
    p.add_argument("--checkpoint", default="final",
                   help="final (the newest weights, as generate uses), latest, best, a step dir name "
                        "(step-000500) or a checkpoint dir path")


def _export_parser(add: Adder) -> None:
    p = add("export", cmd_export, "export a run: SavedModel for TensorFlow Serving, TFLite for devices")
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True, help="EXPORT dir to write")
    p.add_argument("--format", default=None,
                   help="savedmodel, tflite, hf, comma-separated (default savedmodel,tflite; classifier: savedmodel)")
    p.add_argument("--quantize", default=None, choices=["int8"], help="also write model_int8.tflite")
    p.add_argument("--verify", action="store_true", help="check the exports against the Keras model")
    p.add_argument("--name", default=None, help="model name in savedmodel/<name>/<version> (default: run name)")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--checkpoint", default=None, help="a checkpoint instead of the run's latest weights")
    p.add_argument("--json", action="store_true", help="print the whole export.json record instead of a summary")


def _serve_parser(add: Adder) -> None:
    p = add("serve", cmd_serve, "serve an export over HTTP: TF Serving's REST API and an OpenAI-compatible API")
    p.add_argument("--export", required=True, help="EXPORT dir (from tfgpt export)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default loopback only; any other warns: reachable from other machines)")
    p.add_argument("--api-key-file", default=None, metavar="FILE",
                   help="require 'Authorization: Bearer KEY' (KEY: the file's first line) on every route but /healthz")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--max-new-tokens-cap", type=int, default=256)
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.add_argument("--workers", type=int, default=2, help="threads running the model")
    p.add_argument("--batch-rows", type=int, default=16,
                   help="concurrent prompts that share one decode step (default 16; 1: one model call per request)")
    p.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="a batch waits this long for each next request to join it (default 5 ms)")
    p.add_argument("--moderation", default=None, metavar="RUN2",
                   help="a classifier run (tfgpt finetune classify) or its export: screens prompts and completions")
    p.add_argument("--moderation-action", default=None, choices=["label", "block"],
                   help="label (default): add moderation results; block: 400 flagged prompts, withhold completions")
    p.add_argument("--moderation-flag", default=None, action="extend", nargs="+", metavar="LABEL",
                   help="labels that flag a text (default: every label but the first)")


def _demo_parser(add: Adder) -> None:
    p = add("demo", cmd_demo, "prepare the bundled corpus, train char-small, sample, export")
    p.add_argument("--out", default="demo-out")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--no-export", action="store_true")


def _generate_parser(add: Adder) -> None:
    p = add("generate", cmd_generate, "generate text from a trained run (KV-cached, compiled decode loop)")
    p.add_argument("--run", help="run directory (config.yaml, tokenizer/, weights)")
    p.add_argument("--checkpoint", default=None, help="a checkpoint dir or weights file instead of the latest")
    p.add_argument("--prompt", required=False)
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--tflite", default=None, help="run a TFLite export instead of a run dir")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir for --tflite")
    p.add_argument("--completion-only", action="store_true", help="print only the generated text, not the prompt")
    p.add_argument("--quantize", default=None, choices=["int8"],
                   help="int8 attention/MLP weights (4x smaller; not faster on CPU: see benchmarks/bench_int8.py)")
    _sampling_args(p)


def _chat_parser(add: Adder) -> None:
    p = add("chat", cmd_chat, "chat with a run in the terminal")
    p.add_argument("--run", required=True)
    _sampling_args(p)


def _import_gpt2_parser(add: Adder) -> None:
    p = add("import-gpt2", cmd_import_gpt2,
            "import pretrained GPT-2 weights (HF safetensors, OpenAI TF checkpoint, keras-hub preset) as a run dir")
    p.add_argument("--from", dest="from_dir", required=True, metavar="DIR", help="the checkpoint directory")
    p.add_argument("--out", required=True, metavar="RUN", help="run dir to write (must not exist, or be empty)")
    p.add_argument("--tokenizer", default=None, metavar="DIR|gpt2",
                   help="vocab.json + merges.txt (or encoder.json + vocab.bpe) dir, or gpt2 for the packaged "
                        "vocabulary (default: the files beside the weights, else gpt2)")


def _finetune_parser(add: Adder) -> None:
    p = add("finetune", lambda a: p.error("choose a task, e.g. tfgpt finetune classify"),
            "fine-tune a run for a task (classify, instruct, prefer)")
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    c = tasks.add_parser("classify", help="replace the LM head by an N-class head on the last real token")
    c.set_defaults(func=cmd_finetune_classify)
    c.add_argument("--run", required=True, help="the run to start from (trained or imported)")
    c.add_argument("--data", required=True, metavar="FILE", help="labelled .tsv/.csv (label, text) or .jsonl")
    c.add_argument("--out", required=True, metavar="RUN2", help="classifier run dir to write (new or empty)")
    c.add_argument("--trainable", default="head", choices=["head", "last-block", "all", "lora"])
    c.add_argument("--balance", action="store_true", help="undersample every class to the smallest")
    c.add_argument("--epochs", type=int, default=5)
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--lr", type=float, default=5e-4)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--lora-rank", type=int, default=16, help="with --trainable lora")
    c.add_argument("--lora-alpha", type=float, default=None, help="LoRA scale numerator (default: the rank)")
    c.add_argument("--quantize", choices=["int8"], default=None,
                   help="QLoRA-style: quantize the frozen base to int8 (needs --trainable lora)")
    i = tasks.add_parser("instruct", help="instruction-tune on Alpaca-style JSON (loss on the responses)")
    i.set_defaults(func=cmd_finetune_instruct)
    i.add_argument("--run", required=True, help="the run to start from (trained or imported)")
    i.add_argument("--data", required=True, metavar="FILE.json", help="a JSON list of {instruction, input, output}")
    i.add_argument("--out", required=True, metavar="RUN2", help="LM run dir to write (new or empty)")
    i.add_argument("--mask-prompt", action=argparse.BooleanOptionalAction, default=True,
                   help="loss on the response tokens only (default); --no-mask-prompt includes the prompt")
    i.add_argument("--trainable", default="all", choices=["all", "last-block", "lora"])
    i.add_argument("--lora-rank", type=int, default=16, help="with --trainable lora")
    i.add_argument("--epochs", type=int, default=2)
    i.add_argument("--batch-size", type=int, default=8)
    i.add_argument("--lr", type=float, default=5e-5)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--max-new-tokens", type=int, default=256, help="length limit of the test-split responses")
    d = tasks.add_parser("prefer", help="preference-tune with DPO against a frozen copy of the starting run")
    d.set_defaults(func=cmd_finetune_prefer)
    d.add_argument("--run", required=True, help="the run to start from (best: an instruction-tuned one)")
    d.add_argument("--data", required=True, metavar="PREFS.json",
                   help="a JSON list of {instruction, input, chosen, rejected}")
    d.add_argument("--out", required=True, metavar="RUN2", help="LM run dir to write (new or empty)")
    d.add_argument("--beta", type=float, default=0.1, help="DPO temperature: how far the policy may move")
    d.add_argument("--trainable", default="all", choices=["all", "last-block", "lora"])
    d.add_argument("--lora-rank", type=int, default=16, help="with --trainable lora")
    d.add_argument("--epochs", type=int, default=1)
    d.add_argument("--batch-size", type=int, default=8, help="preference pairs per step")
    d.add_argument("--lr", type=float, default=5e-6)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--eval-every", type=int, default=50, help="val every N steps (0: only at epoch ends)")
    for task in (c, i, d):
        _finetune_stack_args(task)


def _finetune_stack_args(p: argparse.ArgumentParser) -> None:
    """The training-stack flags every finetune task takes (tfgpt.finetune.stack checks them)."""
    p.add_argument("--clip", type=float, default=1.0, metavar="NORM",
                   help="clip gradients to this global norm (0: off; default 1.0, as tfgpt train)")
    p.add_argument("--accumulate", type=int, default=1, metavar="N", help="average N batches into one optimizer step")
    p.add_argument("--precision", default="float32", choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
                   help="compute precision (as tfgpt train; auto: mixed_float16 on a GPU, else float32)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from RUN2.partial/")


def _classify_parser(add: Adder) -> None:
    p = add("classify", cmd_classify, "label texts with a classifier run (prints label and probability)")
    p.add_argument("--run", required=True, metavar="RUN2", help="a run from tfgpt finetune classify")
    p.add_argument("--text", required=True, action="append", help="a text to classify (repeatable)")


#: The sub-commands in the order ``--help`` lists them.
SUBCOMMANDS = (_prepare_parser, _train_parser, _eval_parser, _export_parser, _serve_parser, _demo_parser,
               _generate_parser, _chat_parser, _import_gpt2_parser, _finetune_parser, _classify_parser)


def build_parser() -> argparse.ArgumentParser:
    """The ``tfgpt`` parser: one sub-parser per command, each bound to its ``cmd_*`` function.

    Example:
        >>> args = build_parser().parse_args(["eval", "--run", "runs/x"])
        >>> args.func is cmd_eval, args.checkpoint
        (True, 'final')
    """
    parser = argparse.ArgumentParser(
        prog="tfgpt", description="GPT-style language models with TensorFlow/Keras: prepare, train, generate, ship."
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up logs and warnings (hidden by default)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=_DefaultsFormatter)
        p.set_defaults(func=fn)
        return p

    for add_subcommand in SUBCOMMANDS:
        add_subcommand(add)
    parser.set_defaults(_subparsers=sub.choices)  # main() reports a stray flag with its command's usage
    return parser


def _shows_default(action: argparse.Action) -> bool:
    return not (action.default is None or action.default is False or action.default is argparse.SUPPRESS)


class _DefaultsFormatter(argparse.HelpFormatter):
    """``--help`` shows each option's default (``default: 200``), except None and False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or not action.option_strings or not _shows_default(action):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and _shows_default(action):
            action.help = self._get_help_string(action)  # an option without help still shows its default
        return super()._format_action(action)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, stray = parser.parse_known_args(argv)
    if stray:  # argparse would blame the top-level parser and show its usage, not the command's
        args._subparsers[args.command].error(f"unrecognized arguments: {' '.join(stray)}")
    from tfgpt.errors import TfgptError, TrainingInterrupted

    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as e:
        print(f"tfgpt {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except TfgptError as e:
        print(f"tfgpt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> int:
    """The ``tfgpt`` program: :func:`main`, quiet unless ``--verbose`` (see :mod:`tfgpt.quiet`)."""
    if "--verbose" not in sys.argv[1:2]:
        from tfgpt.quiet import quiet_cli

        quiet_cli()
    return main()


if __name__ == "__main__":
    raise SystemExit(entry())
