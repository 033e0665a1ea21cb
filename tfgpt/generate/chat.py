"""``tfgpt chat``: a terminal loop that streams the model's reply to each line you type.

The conversation so far is the prompt (the oldest turns dropped once it outgrows ``block_size``,
with one notice), with ``You:``/``Model:`` turn markers when the vocabulary can spell them; a reply
ends at end-of-text, at the next ``"\\nYou:"`` marker, or after ``max_new_tokens``. Lines starting
with ``/`` are commands: ``/help``, ``/reset``, ``/temperature T``, ``/quit``.

A run from ``tfgpt finetune instruct`` (its config has an ``instruct:`` section) is chatted with
in its own template instead: each line becomes the instruction of an Alpaca prompt (no input, no
earlier turns: the template is single-turn), and the reply ends at end-of-text (or at a new
``"\\n\\n### "`` header, should the model start one).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from tfgpt.errors import TokenizerError
from tfgpt.prompt_templates import BOT, TEMPLATE_STOP, USER, format_prompt, run_template
from tfgpt.prompt_templates import role_markers as _role_markers

HELP = """commands: /help  this list
          /reset  forget the conversation so far
          /temperature T  sample at temperature T from now on (0: greedy)
          /quit  leave (Ctrl-D too)"""


class ChatSession:
    """One conversation: its turns, sampling settings and the commands that change them.

    A line starting with ``/`` is a command and never reaches the model. The prompt is every
    turn so far plus the new line; when it outgrows ``block_size``, the oldest turns are dropped
    (one notice says so, the first time) instead of generation cropping mid-turn.
    """

    def __init__(self, model: Any, tokenizer: Any, stdout: TextIO, template: Callable[[str], str] | None,
                 seed: int, **sampling: Any) -> None:
        self.model, self.tokenizer, self.stdout, self.template = model, tokenizer, stdout, template
        self.seed, self.sampling = seed, sampling
        self.user, self.bot = ("", BOT) if template else _role_markers(tokenizer)
        if self.user:
            self.sampling["stop"] = list(self.sampling.get("stop") or []) + ["\n" + USER.strip()]
        self.turns: list[str] = []
        self.turn = 0
        self.cropped_notice = False

    def command(self, line: str) -> bool:
        """Run a ``/command``; False when it ends the chat."""
        name, _, arg = line.strip().partition(" ")
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            self.stdout.write(HELP + "\n")
        elif name == "/reset":
            self.turns, self.cropped_notice = [], False
            self.stdout.write("[conversation cleared]\n")
        elif name == "/temperature":
            self._set_temperature(arg)
        else:
            self.stdout.write(f"[unknown command {name}; /help lists the commands]\n")
        return True

    def _set_temperature(self, arg: str) -> None:
        try:
            value = float(arg)
        except ValueError:
            value = -1.0
        if not value >= 0 or value == float("inf"):
            self.stdout.write(f"[/temperature takes a number >= 0, got {arg.strip()!r}]\n")
            return
        self.sampling["temperature"] = value
        self.stdout.write(f"[temperature {value:g}]\n")

    def prompt(self, line: str) -> tuple[str, str]:
        """(the prompt for ``line``, the turn text to remember): the template's, or the turns that fit."""
        if self.template is not None:
            return self.template(line), ""
        said = f"{self.user}{line}\n{self.bot}"
        block = self.model.config.block_size
        while self.turns and self._length("".join(self.turns) + said) > block:
            self.turns.pop(0)
            if not self.cropped_notice:
                self.cropped_notice = True
                self.stdout.write(f"[the conversation outgrew the model's {block}-token context: "
                                  "the oldest turns are dropped from now on]\n")
        return "".join(self.turns) + said, said

    def _length(self, text: str) -> int:
        try:
            return len(self.tokenizer.encode(text))
        except TokenizerError:
            return 0  # _reply reports the character

    def say(self, line: str) -> None:
        prompt, said = self.prompt(line)
        self.stdout.write(self.bot + (" " if self.template else ""))
        with warnings.catch_warnings():  # a single line longer than the context: cropped, said above
            warnings.filterwarnings("ignore", message="prompt has .* more than block_size")
            reply = _reply(self.model, self.tokenizer, prompt, self.stdout, seed=self.seed + self.turn,
                           **self.sampling)
        if reply is None:  # not sent: the conversation goes on without the line
            return
        if not self.template:
            self.turns.append(said + reply + "\n")
        self.stdout.write("\n")
        self.turn += 1


def chat(
    run_dir: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop: Sequence[str] | None = None,
    context: str = "shift",
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Read lines from ``stdin`` until EOF or ``/quit``; stream replies to ``stdout`` (see :class:`ChatSession`)."""
    import tfgpt

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    model, tokenizer = tfgpt.load(run_dir)
    template = instruct_template(run_dir)
    stops = list(stop or []) + ([TEMPLATE_STOP] if template else [])
    session = ChatSession(model, tokenizer, stdout, template, seed, max_new_tokens=max_new_tokens,
                          temperature=temperature, top_k=top_k, top_p=top_p, stop=stops, context=context)
    kind = ", instruction template" if template else ""
    stdout.write(f"tfgpt chat ({run_dir}{kind}): type a line; /help for commands, /quit or Ctrl-D to leave\n")
    while True:
        stdout.write(USER)
        stdout.flush()
        line = stdin.readline()
        if not line:
            stdout.write("\n")
            return 0
        if line.startswith("/"):
            if not session.command(line):
                stdout.write("\n")
                return 0
            continue
        if template and not line.strip():
            continue
        session.say(line.strip() if template else line.rstrip())


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
    if run_template(run_dir) is None:
        return None
    return lambda line: format_prompt({"instruction": line, "input": ""})


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
