"""The prompt templates a run is talked to in, importable without TensorFlow.

An instruction-tuned run (``tfgpt finetune instruct``: its ``config.yaml`` has an ``instruct:``
section) takes the Alpaca prompt of "Build a Large Language Model (From Scratch)", chapter 7
(:func:`format_prompt`); its reply ends at end-of-text or at a new ``"\\n\\n### "`` header
(:data:`TEMPLATE_STOP`). Any other run takes a plain ``You:``/``Model:`` transcript, markers
included only when the vocabulary can spell them (:func:`role_markers`). ``tfgpt chat``,
``tfgpt finetune instruct`` and ``tfgpt serve``'s ``/v1/chat/completions`` all use these.

Example:
    >>> format_prompt({"instruction": "Say hi.", "input": ""}).splitlines()[-4:]
    ['### Instruction:', 'Say hi.', '', '### Response:']
    >>> template_name({"template": "alpaca", "mask_prompt": True}, "runs/x/config.yaml"), template_name(None, "")
    ('alpaca', None)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tfgpt.errors import ConfigError, TokenizerError

PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
#: The transcript's turn markers (a user line, then the model's reply).
USER = "You: "
BOT = "Model:"
#: Where an instruction-tuned reply ends besides end-of-text: the next section header of its template.
TEMPLATE_STOP = "\n\n### "


def format_prompt(entry: dict[str, str]) -> str:
    """The prompt for ``entry`` up to and including "### Response:\\n" (the output not included).

    Example:
        >>> print(format_prompt({"instruction": "Add.", "input": "1 + 1", "output": "2"}))
        Below is an instruction that describes a task. Write a response that appropriately completes the request.
        <BLANKLINE>
        ### Instruction:
        Add.
        <BLANKLINE>
        ### Input:
        1 + 1
        <BLANKLINE>
        ### Response:
        <BLANKLINE>
    """
    text = f"{PREAMBLE}\n\n### Instruction:\n{entry['instruction']}"
    if entry.get("input"):
        text += f"\n\n### Input:\n{entry['input']}"
    return text + "\n\n### Response:\n"


def template_name(section: Any, where: str) -> str | None:
    """The template an ``instruct:`` config section names (``"alpaca"``), or None without one; a
    :class:`~tfgpt.errors.ConfigError` naming ``where`` for any other template."""
    if section is None:
        return None
    template = section.get("template") if isinstance(section, dict) else None
    if template != "alpaca":
        raise ConfigError(f"{where}: instruct.template must be 'alpaca', got {template!r}")
    return template


def run_template(run_dir: str | os.PathLike) -> str | None:
    """The template of the run at ``run_dir`` (``"alpaca"`` for an instruction-tuned run, else None).

    Example:
        >>> run_template("runs/instruct")  # doctest: +SKIP
        'alpaca'
    """
    from tfgpt.config import read_yaml
    from tfgpt.layout import CONFIG_YAML

    path = Path(run_dir) / CONFIG_YAML
    return template_name(read_yaml(path).get("instruct"), str(path))


def role_markers(tokenizer: Any) -> tuple[str, str]:
    """``(USER, BOT)`` when the vocabulary can spell them (a small char vocabulary may not), else ``("", "")``."""
    try:
        tokenizer.encode(USER + BOT)
    except TokenizerError:
        return "", ""
    return USER, BOT
