"""Instruction data: the Alpaca-style prompt, reading entries, per-batch collation and a masked loss.

The template is the one of "Build a Large Language Model (From Scratch)", chapter 7. Labels use
``ignore_index`` (-100) for the tokens that must not be learnt: the prompt (when ``mask_prompt``)
and the padding after the first end-of-text; :func:`masked_lm_loss` gives them exactly zero weight.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from keras import ops

from tfgpt.errors import DataError, TokenizerError
from tfgpt.prompt_templates import PREAMBLE, format_prompt  # noqa: F401 - the template lives TF-free

FIELDS = ("instruction", "input", "output")


def format_example(entry: dict[str, str]) -> str:
    """Prompt and response: ``format_prompt(entry) + entry["output"]`` (the text trained on).

    Example:
        >>> format_example({"instruction": "Say hi.", "input": "", "output": "Hi."}).split("\\n\\n")[1:]
        ['### Instruction:\\nSay hi.', '### Response:\\nHi.']
    """
    return format_prompt(entry) + entry["output"]


def validate_entries(entries: Any, where: str, fields: Sequence[str] = FIELDS) -> list[dict[str, str]]:
    """Check ``entries`` is a list of objects holding string ``fields``; errors name the entry.

    Example:
        >>> validate_entries([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c"}], "d.json")
        Traceback (most recent call last):
        tfgpt.errors.DataError: d.json: entry 1: missing field 'input'
    """
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{where}: expected a non-empty JSON list of entries")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f"{where}: entry {i}: expected an object, got {type(entry).__name__}")
        for field in fields:
            if field not in entry:
                raise DataError(f"{where}: entry {i}: missing field {field!r}")
            if not isinstance(entry[field], str):
                raise DataError(f"{where}: entry {i}: field {field!r} must be a string")
        for field in ("instruction", "output", "chosen", "rejected"):
            if field in fields and not entry[field].strip():
                raise DataError(f"{where}: entry {i}: field {field!r} is empty")
    return entries


def read_instruction_data(path: str | os.PathLike) -> list[dict[str, str]]:
    """Entries of an Alpaca-style FILE.json (a list of {instruction, input, output}).

    Example:
        >>> len(read_instruction_data("tests/fixtures/finetune/instruction-data-30.json"))  # doctest: +SKIP
        30
    """
    return validate_entries(_read_json(path), str(path))


def _read_json(path: str | os.PathLike) -> Any:
    """The parsed JSON of ``path``, with a one-line error naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def no_end_of_text(run: str | os.PathLike, task: str) -> DataError:
    """The error for a run whose tokenizer lacks an end-of-text token, saying how to get a run that has one.

    A char data dir gets ``<|endoftext|>`` only when prepared from more than one document
    (:mod:`tfgpt.data.vocab`): one ``.txt`` file is one document, a ``.jsonl`` one per line.

    Example:
        >>> print(no_end_of_text("runs/char", "instruction tuning"))  # doctest: +ELLIPSIS
        runs/char: the tokenizer has no end-of-text token, so responses could not end: instruction tuning needs one ...
    """
    return DataError(f"{run}: the tokenizer has no end-of-text token, so responses could not end: {task} needs one "
                     "(<|endoftext|>): start from a bpe or gpt2 run (tfgpt import-gpt2, or tfgpt prepare --tokenizer "
                     "bpe|gpt2), or a char run prepared from several documents (more than one .txt file, or a .jsonl "
                     "of many), which gets <|endoftext|>")


def encode_entry(entry: dict[str, str], tokenizer: Any) -> tuple[list[int], list[int]]:
    """``(prompt_ids, response_ids)`` for one entry, the pair :func:`collate` takes."""
    prompt = tokenizer.encode(format_prompt(entry))
    full = tokenizer.encode(format_example(entry))
    return full[: len(prompt)], full[len(prompt):]


def unencodable_entry(entries: list[dict[str, str]], encode: Callable[[dict[str, str]], Any],
                      where: str | os.PathLike) -> TokenizerError | None:
    """The error of the first entry (in file order) ``encode`` refuses, as ``FILE: entry I: ...``.

    Positions count in the entry's Alpaca-formatted text. Scanning happens only once encoding a
    split has failed, so the error names the file's first bad entry, not the shuffled split's.

    Example:
        >>> from tfgpt.tokenizers.char import CharTokenizer
        >>> ok = {"instruction": "hi", "input": "", "output": "yo"}
        >>> tok, bad = CharTokenizer.train([format_example(ok)]), {**ok, "instruction": "§"}
        >>> str(unencodable_entry([ok, bad], lambda e: encode_entry(e, tok), "d.json"))[:50]
        'd.json: entry 1: 1 character(s) not in the char vo'
    """
    for i, entry in enumerate(entries):
        try:
            encode(entry)
        except TokenizerError as e:
            return TokenizerError(f"{where}: entry {i}: {e}")
    return None


def collate(
    batch: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    ignore_index: int = -100,
    mask_prompt: bool = True,
    max_len: int | None = None,
    eot_id: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``(prompt_ids, response_ids)`` pairs to the batch's longest; ``(inputs, labels)`` int32.

    Each example is prompt + response + end-of-text (``eot_id``, default ``pad_id``); inputs are
    the sequence without its last token, labels the sequence shifted by one. Labels are
    ``ignore_index`` on the padding after the end-of-text and, with ``mask_prompt``, on the
    prompt tokens. ``max_len`` truncates inputs and labels (e.g. to block_size).

    Example:
        >>> x, y = collate([([5, 6], [7]), ([5], [8, 9, 10])], pad_id=0)
        >>> x.tolist()
        [[5, 6, 7, 0], [5, 8, 9, 10]]
        >>> y.tolist()
        [[-100, 7, 0, -100], [8, 9, 10, 0]]
    """
    eot = pad_id if eot_id is None else eot_id
    seqs = [list(p) + list(r) + [eot] for p, r in batch]
    width = max(len(s) for s in seqs) - 1
    inputs = np.full((len(seqs), width), pad_id, dtype="int32")
    labels = np.full((len(seqs), width), ignore_index, dtype="int32")
    for row, (seq, (prompt, _)) in enumerate(zip(seqs, batch, strict=True)):
        inputs[row, : len(seq) - 1] = seq[:-1]
        labels[row, : len(seq) - 1] = seq[1:]  # positions after the eot stay ignore_index
        if mask_prompt:
            labels[row, : max(len(prompt) - 1, 0)] = ignore_index
    if max_len is not None:
        inputs, labels = inputs[:, :max_len], labels[:, :max_len]
    return inputs, labels


def masked_lm_loss(logits: Any, labels: Any, ignore_index: int = -100) -> Any:
    """Mean next-token cross-entropy over the labels that are not ``ignore_index``.

    Masked positions contribute exactly zero (selected out with ``where``, so even a NaN
    logit there cannot leak in); an all-masked batch gives 0.

    Example:
        >>> logits = np.log(np.array([[[0.5, 0.5], [0.9, 0.1]]], "float32"))
        >>> round(float(masked_lm_loss(logits, np.array([[1, -100]]))), 4)  # -log(0.5)
        0.6931
    """
    labels = ops.convert_to_tensor(labels, "int32")
    mask = ops.not_equal(labels, ignore_index)
    safe = ops.where(mask, labels, ops.zeros_like(labels))
    logits = ops.cast(logits, "float32")
    logp = ops.log_softmax(ops.where(mask[..., None], logits, ops.zeros_like(logits)), axis=-1)
    token_loss = -ops.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    token_loss = ops.where(mask, token_loss, ops.zeros_like(token_loss))
    count = ops.maximum(ops.sum(ops.cast(mask, "float32")), 1.0)
    return ops.sum(token_loss) / count
