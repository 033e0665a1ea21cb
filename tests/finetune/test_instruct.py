"""Instruction data (tfgpt/finetune/instruct.py): template, reading, collation, masked loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tfgpt.errors import DataError
from tfgpt.finetune.instruct import (
    collate,
    encode_entry,
    format_example,
    format_prompt,
    masked_lm_loss,
    read_instruction_data,
)
from tfgpt.tokenizers.char import CharTokenizer

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "finetune" / "instruction-data-30.json"


def test_template_is_the_books_with_and_without_input() -> None:
    with_input = {"instruction": "Fix it.", "input": "He go.", "output": "He goes."}
    assert format_example(with_input) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nFix it.\n\n### Input:\nHe go.\n\n### Response:\nHe goes."
    )
    no_input = {"instruction": "Name a color.", "input": "", "output": "Blue."}
    assert format_prompt(no_input) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nName a color.\n\n### Response:\n"
    )


def test_reads_the_vendored_slice() -> None:
    entries = read_instruction_data(DATA)
    assert len(entries) == 30
    assert entries[1] == {"instruction": "Edit the following sentence for grammar.",
                          "input": "He go to the park every day.", "output": "He goes to the park every day."}


@pytest.mark.parametrize(("data", "message"), [
    ([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "a", "input": ""}],
     "entry 1: missing field 'output'"),
    ([{"input": "", "output": "b"}], "entry 0: missing field 'instruction'"),
    ([{"instruction": "a", "input": 3, "output": "b"}], "entry 0: field 'input' must be a string"),
    ([{"instruction": "a", "input": "", "output": "  "}], "entry 0: field 'output' is empty"),
    ({"instruction": "a"}, "expected a non-empty JSON list"),
    ([], "expected a non-empty JSON list"),
])
def test_bad_entries_are_named(tmp_path: Path, data: object, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=f"bad.json: {message}"):
        read_instruction_data(path)


def test_bad_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[{")
    with pytest.raises(DataError, match="x.json: not valid JSON"):
        read_instruction_data(tmp_path / "x.json")
    with pytest.raises(DataError, match="y.json: no such file"):
        read_instruction_data(tmp_path / "y.json")


def test_collate_pads_per_batch_and_masks() -> None:
    batch = [([1, 2, 3], [4, 5]), ([1, 2], [6])]
    x, y = collate(batch, pad_id=9)
    assert x.tolist() == [[1, 2, 3, 4, 5], [1, 2, 6, 9, 9]]
    # labels: prompt targets masked (len(prompt) - 1 of them), eot (9) kept once, later pads masked
    assert y.tolist() == [[-100, -100, 4, 5, 9], [-100, 6, 9, -100, -100]]
    x, y = collate(batch, pad_id=9, mask_prompt=False)
    assert y.tolist() == [[2, 3, 4, 5, 9], [2, 6, 9, -100, -100]]
    x, y = collate(batch, pad_id=0, eot_id=7, max_len=3, ignore_index=-1)
    assert x.tolist() == [[1, 2, 3], [1, 2, 6]]
    assert y.tolist() == [[-1, -1, 4], [-1, 6, 7]]
    assert x.dtype == np.int32 and y.dtype == np.int32


def test_collate_width_is_the_longest_in_the_batch() -> None:
    tok = CharTokenizer.train([format_example(e) for e in read_instruction_data(DATA)])
    pairs = [encode_entry(e, tok) for e in read_instruction_data(DATA)[:4]]
    x, y = collate(pairs, pad_id=0)
    assert x.shape[1] == max(len(p) + len(r) for p, r in pairs)
    prompt, response = pairs[0]
    assert tok.decode(prompt) + tok.decode(response) == format_example(read_instruction_data(DATA)[0])
    assert (y[0] != -100).sum() == len(response) + 1  # the response and one end-of-text


def _numpy_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    total, count = 0.0, 0
    for b, t in zip(*np.nonzero(labels != -100), strict=True):
        z = logits[b, t].astype(np.float64)
        total += np.log(np.exp(z - z.max()).sum()) + z.max() - z[labels[b, t]]
        count += 1
    return total / count


def test_masked_loss_matches_numpy_and_ignores_masked_logits() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype("float32")
    labels = np.array([[-100, -100, 4, 5, 6], [-100, 6, 1, -100, -100]])
    loss = float(masked_lm_loss(logits, labels))
    assert loss == pytest.approx(_numpy_loss(logits, labels), abs=1e-5)
    changed = logits.copy()
    changed[labels == -100] = rng.normal(size=(5, 7)) * 100
    changed[0, 0] = np.nan
    assert float(masked_lm_loss(changed, labels)) == loss
    assert float(masked_lm_loss(logits, np.full((2, 5), -100))) == 0.0
