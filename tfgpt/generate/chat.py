"""``tfgpt chat``: a terminal loop that streams the model's reply to each line you type.

The conversation so far is the prompt (cropped to ``block_size`` by generation), with
``You:``/``Model:`` turn markers when the vocabulary can spell them; a reply ends at
end-of-text, at the next ``"\\nYou:"`` marker, or after ``max_new_tokens``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from tfgpt.errors import TokenizerError

USER = "You: "
BOT = "Model:"


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
