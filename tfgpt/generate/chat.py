"""``tfgpt chat``: a terminal loop that streams the model's reply to each line you type.

The conversation so far is the prompt (cropped to ``block_size`` by generation), with
``You:``/``Model:`` turn markers when the vocabulary can spell them; a reply ends at
end-of-text, at the next ``"\\nYou:"`` marker, or after ``max_new_tokens``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

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
    from tfgpt.errors import TokenizerError

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    model, tokenizer = tfgpt.load(run_dir)

    try:  # role markers only when the vocabulary can spell them (a small char vocabulary may not)
        tokenizer.encode(USER + BOT)
        user, bot = USER, BOT
    except TokenizerError:
        user, bot = "", ""
    stops = list(stop or []) + (["\n" + USER.strip()] if user else [])
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
        before = history
        history += f"{user}{line.rstrip()}\n{bot}"
        stdout.write(bot)

        def emit(delta: str) -> None:
            stdout.write(delta)
            stdout.flush()

        try:
            reply = tfgpt.generate(
                model, tokenizer, history, max_new_tokens=max_new_tokens, temperature=temperature,
                top_k=top_k, top_p=top_p, seed=seed + turn, stop=stops, stream=emit,
            )
        except TokenizerError as e:  # a character the vocabulary lacks: drop the line, keep the chat
            history = before
            stdout.write(f"\n[not sent: {e}]\n")
            continue
        history += reply + "\n"
        stdout.write("\n")
        turn += 1
