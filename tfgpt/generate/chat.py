"""``tfgpt chat``: a terminal loop that streams the model's reply to each line you type.

The conversation so far is the prompt (cropped to ``block_size`` by generation), with
``You:``/``Model:`` turn markers when the vocabulary can spell them; a reply ends at
end-of-text, at the next ``"\\nYou:"`` marker, or after ``max_new_tokens``.

A run from ``tfgpt finetune instruct`` (its config has an ``instruct:`` section) is chatted with
in its own template instead: each line becomes the instruction of an Alpaca prompt (no input, no
earlier turns: the template is single-turn), and the reply ends at end-of-text (or at a new
``"\\n\\n### "`` header, should the model start one).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from tfgpt.errors import ConfigError, TokenizerError

USER = "You: "
BOT = "Model:"
#: where an instruction-tuned reply ends besides end-of-text: the next section header of its template
TEMPLATE_STOP = "\n\n### "


def chat(
    run_dir: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Read lines from ``stdin`` until EOF or ``/quit``; stream replies to ``stdout``."""
    import tfgpt

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    model, tokenizer = tfgpt.load(run_dir)
    template = instruct_template(run_dir)
    if template is not None:
        return _chat_instruct(model, tokenizer, template, stdin, stdout, run_dir, seed=seed,
                              max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              stop=list(stop or []) + [TEMPLATE_STOP])
    user, bot = _role_markers(tokenizer)
    stops = list(stop or []) + (["\n" + USER.strip()] if user else [])
    sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, stop=stops)
    history = ""
    stdout.write(f"tfgpt chat ({run_dir}): type a line, /quit or Ctrl-D to leave\n")
    turn = 0
    while True:
        stdout.write(USER)
        stdout.flush()
        line = stdin.readline()
        if not line or line.strip() in ("/quit", "/exit"):
            stdout.write("\n")
            return 0
        said = f"{user}{line.rstrip()}\n{bot}"
        stdout.write(bot)
        reply = _reply(model, tokenizer, history + said, stdout, seed=seed + turn, **sampling)
        if reply is None:  # not sent: the conversation goes on without the line
            continue
        history += said + reply + "\n"
        stdout.write("\n")
        turn += 1


def instruct_template(run_dir: str | Path) -> Callable[[str], str] | None:
    """The prompt of one user line under the run's ``instruct:`` template, or None for a plain LM run.

    Example:
        >>> print(instruct_template("runs/instruct")("Name a color."))  # doctest: +SKIP
        Below is an instruction that describes a task. Write a response that appropriately completes the request.
        <BLANKLINE>
        ### Instruction:
        Name a color.
        <BLANKLINE>
        ### Response:
        <BLANKLINE>
    """
    from tfgpt.config import read_yaml
    from tfgpt.runs import CONFIG_YAML

    path = Path(run_dir) / CONFIG_YAML
    section = read_yaml(path).get("instruct")
    if section is None:
        return None
    template = section.get("template") if isinstance(section, dict) else None
    if template != "alpaca":
        raise ConfigError(f"{path}: instruct.template must be 'alpaca', got {template!r}")
    from tfgpt.finetune.instruct import format_prompt  # a leaf module: the template only

    return lambda line: format_prompt({"instruction": line, "input": ""})


def _chat_instruct(model: Any, tokenizer: Any, template: Callable[[str], str], stdin: TextIO, stdout: TextIO,
                   run_dir: str, seed: int, **sampling: Any) -> int:
    """The chat loop of an instruction-tuned run: each line is answered on its own, in the template."""
    stdout.write(f"tfgpt chat ({run_dir}, instruction template): type a line, /quit or Ctrl-D to leave\n")
    turn = 0
    while True:
        stdout.write(USER)
        stdout.flush()
        line = stdin.readline()
        if not line or line.strip() in ("/quit", "/exit"):
            stdout.write("\n")
            return 0
        if not line.strip():
            continue
        stdout.write(BOT + " ")
        if _reply(model, tokenizer, template(line.strip()), stdout, seed=seed + turn, **sampling) is not None:
            stdout.write("\n")
            turn += 1


def _role_markers(tokenizer: Any) -> tuple[str, str]:
    """``(USER, BOT)`` when the vocabulary can spell them (a small char vocabulary may not), else ``("", "")``."""
    try:
        tokenizer.encode(USER + BOT)
    except TokenizerError:
        return "", ""
    return USER, BOT


def _reply(model: Any, tokenizer: Any, prompt: str, stdout: TextIO, **sampling: Any) -> str | None:
    """The model's reply to ``prompt``, streamed to ``stdout``; None, with a note, for a character the
    vocabulary lacks."""
    import tfgpt

    def emit(delta: str) -> None:
        stdout.write(delta)
        stdout.flush()

    try:
        return tfgpt.generate(model, tokenizer, prompt, stream=emit, **sampling)
    except TokenizerError as e:
        stdout.write(f"\n[not sent: {e}]\n")
        return None
