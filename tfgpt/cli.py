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


def cmd_generate(args: argparse.Namespace) -> int:
    from tfgpt.errors import TfgptError

    prompt = args.prompt
    if prompt is None:
        raise TfgptError("give --prompt TEXT")
    # argv bytes that are not UTF-8 arrive as surrogate escapes: turn them back into bytes so
    # generation reports them clearly.
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        prompt = os.fsencode(prompt)
    sampling = dict(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, seed=args.seed, stop=args.stop,
    )
    if args.tflite:
        from tfgpt.export.tflite_runner import generate_tflite  # type: ignore[import-not-found]

        text = generate_tflite(args.tflite, args.tokenizer, prompt, **sampling)
        print(text)
        return 0
    if not args.run:
        raise TfgptError("give --run RUN (or --tflite FILE --tokenizer DIR)")
    import tfgpt

    model, tokenizer = tfgpt.load(args.run, checkpoint=args.checkpoint)
    if args.stream:
        sys.stdout.write(prompt if isinstance(prompt, str) else "")
        sys.stdout.flush()

        def emit(delta: str) -> None:
            sys.stdout.write(delta)
            sys.stdout.flush()

        tfgpt.generate(model, tokenizer, prompt, stream=emit, **sampling)
        sys.stdout.write("\n")
    else:
        text = tfgpt.generate(model, tokenizer, prompt, **sampling)
        print(prompt + text)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from tfgpt.generate.chat import chat

    return chat(args.run, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop)


# -- the parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfgpt", description="GPT-style language models with TensorFlow/Keras: prepare, train, generate, ship."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=fn)
        return p

    p = add("generate", cmd_generate, "generate text from a trained run (KV-cached, compiled decode loop)")
    p.add_argument("--run", help="run directory (config.yaml, tokenizer/, weights)")
    p.add_argument("--checkpoint", default=None, help="a checkpoint dir or weights file instead of the latest")
    p.add_argument("--prompt", required=False)
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--tflite", default=None, help="run a TFLite export instead of a run dir")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir for --tflite")
    _sampling_args(p)

    p = add("chat", cmd_chat, "chat with a run in the terminal")
    p.add_argument("--run", required=True)
    _sampling_args(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tfgpt.errors import TfgptError

    try:
        return int(args.func(args) or 0)
    except TfgptError as e:
        print(f"tfgpt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
