"""Chat messages as the prompt ``tfgpt chat`` would give the same run, and where its reply ends.

The template is the export's run's (:func:`export_template`): export.json's ``source.template``
(written by ``tfgpt export``), or for an older export the ``instruct:`` section of the run it came
from, if that run dir is still there; with neither, the plain transcript.

- ``alpaca`` (an instruction-tuned run): the last user message is the instruction of one Alpaca
  prompt (:func:`tfgpt.prompt_templates.format_prompt`); earlier messages and system messages are
  not part of it, as in ``tfgpt chat`` (the template is single-turn). The reply ends at
  end-of-text or at ``"\\n\\n### "``.
- transcript (any other run): system messages first, one line each, then each user message as
  ``"You: TEXT\\n"`` and each assistant message as ``"Model:TEXT\\n"``, ending ``"You: LAST\\nModel:"``
  (markers only when the vocabulary can spell them, as in chat); the oldest turns (a user message
  and the replies after it) are dropped while the prompt is over ``block_size`` tokens. The reply
  ends at end-of-text or ``"\\nYou:"``.

Example:
    >>> from tfgpt.tokenizers import CharTokenizer
    >>> tok = CharTokenizer.train(["You: Model: hello there\\n"])
    >>> chat_prompt([("user", "hello"), ("assistant", " there"), ("user", "the")], None, tok, 64)
    ('You: hello\\nModel: there\\nYou: the\\nModel:', ['\\nYou:'])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tfgpt.errors import ConfigError, TokenizerError
from tfgpt.prompt_templates import TEMPLATE_STOP, USER, format_prompt, role_markers, run_template, template_name
from tfgpt.serve.completions import FieldError


def export_template(info: dict[str, Any], export_dir: str | os.PathLike) -> tuple[str | None, str]:
    """The chat template of an export (``"alpaca"`` or None for the transcript) and where it was read.

    Example:
        >>> export_template({"source": {"template": "alpaca"}}, "export/x")
        ('alpaca', 'export/x/export.json')
        >>> export_template({"source": {"run": "/nowhere"}}, "export/x")
        (None, 'no record in export/x/export.json and no run at /nowhere: the plain transcript')
    """
    source = info.get("source") if isinstance(info.get("source"), dict) else {}
    where = str(Path(export_dir) / "export.json")
    if "template" in source:
        return template_name(None if source["template"] is None else {"template": source["template"]},
                             f"{where}: source.template"), where
    run = source.get("run")
    if isinstance(run, str) and (Path(run) / "config.yaml").is_file():
        return run_template(run), str(Path(run) / "config.yaml")
    return None, f"no record in {where} and no run at {run}: the plain transcript"


def chat_prompt(messages: list[tuple[str, str]], template: str | None, tokenizer: Any,
                block_size: int) -> tuple[str, list[str]]:
    """``(prompt, stop strings)`` for ``(role, text)`` messages under ``template``; a 400 naming the
    message whose text the vocabulary cannot spell.

    Example:
        >>> from tfgpt.tokenizers import CharTokenizer
        >>> tok = CharTokenizer.train(["abc\\n"])
        >>> chat_prompt([("system", "ab"), ("user", "ba")], None, tok, 32)  # no markers: the vocabulary lacks them
        ('ab\\nba\\n', [])
    """
    used = [len(messages) - 1] if template == "alpaca" else range(len(messages))
    for i in used:
        try:
            tokenizer.encode(messages[i][1])
        except TokenizerError as e:
            raise FieldError(f"messages[{i}].content: {e}", "messages") from None
    if template == "alpaca":
        return format_prompt({"instruction": messages[-1][1].strip(), "input": ""}), [TEMPLATE_STOP]
    if template is not None:
        raise ConfigError(f"unknown chat template {template!r}")
    user, bot = role_markers(tokenizer)
    system = "".join(text + "\n" for role, text in messages if role == "system")
    turns = [(role, f"{user}{text.rstrip()}\n" if role == "user" else f"{bot}{text}\n")
             for role, text in messages[:-1] if role != "system"]
    said = f"{user}{messages[-1][1].rstrip()}\n{bot}"
    while turns and _length(tokenizer, system + "".join(t for _, t in turns) + said) > block_size:
        turns.pop(0)  # a whole turn, as chat drops it: the user's line and the replies after it
        while turns and turns[0][0] == "assistant":
            turns.pop(0)
    return system + "".join(t for _, t in turns) + said, ["\n" + USER.strip()] if user else []


def _length(tokenizer: Any, text: str) -> int:
    try:
        return len(tokenizer.encode(text))
    except TokenizerError:
        return 0  # the model's 400 names the character
