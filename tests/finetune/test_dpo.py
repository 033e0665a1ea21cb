"""DPO (tfgpt/finetune/dpo.py): response log-probs, the loss on a hand-computed example, entries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tfgpt.errors import DataError
from tfgpt.finetune.dpo import (
    dpo_loss,
    pairs_from_instructions,
    read_preference_data,
    sequence_logprob,
    validate_preferences,
)
from tfgpt.finetune.instruct import collate, read_instruction_data

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "finetune" / "instruction-data-30.json"


def test_dpo_loss_hand_computed() -> None:
    # beta 0.1; policy chosen/rejected -1.0/-2.0; reference -1.5/-1.5
    # chosen reward 0.1 * (-1.0 + 1.5) = 0.05; rejected 0.1 * (-2.0 + 1.5) = -0.05; margin 0.1
    # loss = -log(sigmoid(0.1)) = log(1 + exp(-0.1)) = log(1.9048374180) = 0.6443966600735709
    out = dpo_loss(np.array([-1.0]), np.array([-2.0]), np.array([-1.5]), np.array([-1.5]), beta=0.1)
    assert float(out["loss"]) == pytest.approx(0.6443966600735709, abs=1e-6)
    assert float(out["chosen_reward"]) == pytest.approx(0.05, abs=1e-7)
    assert float(out["rejected_reward"]) == pytest.approx(-0.05, abs=1e-7)
    assert float(out["margin"]) == pytest.approx(0.1, abs=1e-7)
    assert float(out["accuracy"]) == 1.0  # the one pair's margin is > 0


def test_dpo_loss_is_the_batch_mean() -> None:
    # second pair: margin 0.5 * ((0 - 0) - (-1 - 1)) = 1.0; loss log(1 + exp(-1)) = 0.3132616875182228
    # first pair: margin 0; loss log(2) = 0.6931471805599453
    out = dpo_loss(np.array([-1.0, 0.0]), np.array([-1.0, -1.0]), np.array([-1.0, 0.0]),
                   np.array([-1.0, 1.0]), beta=0.5)
    assert float(out["loss"]) == pytest.approx((0.6931471805599453 + 0.3132616875182228) / 2, abs=1e-6)
    assert float(out["margin"]) == pytest.approx(0.5, abs=1e-7)
    assert float(out["accuracy"]) == 0.5  # margins 0 (not > 0) and 1.0
    with pytest.raises(ValueError, match="--beta must be positive"):
        dpo_loss(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), beta=0.0)


def test_sequence_logprob_averages_response_tokens_only() -> None:
    probs = np.array([[[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.7, 0.2, 0.1]]])
    logits = np.log(probs).astype("float32")
    _, labels = collate([([0, 1], [1, 2])], pad_id=0)  # inputs 0 1 1 2, labels -100 1 2 eot(0)
    assert labels.tolist() == [[-100, 1, 2, 0]]
    want = (np.log(0.6) + np.log(0.6) + np.log(0.7)) / 3
    assert float(sequence_logprob(logits, labels)[0]) == pytest.approx(want, abs=1e-6)
    changed = logits.copy()
    changed[0, 0] = [9.0, -9.0, 3.0]  # the masked (prompt) position
    assert float(sequence_logprob(changed, labels)[0]) == float(sequence_logprob(logits, labels)[0])
    assert float(sequence_logprob(logits, np.full((1, 4), -100))[0]) == 0.0


def test_pairs_from_the_vendored_instructions_validate() -> None:
    pairs = pairs_from_instructions(read_instruction_data(DATA), seed=1)
    assert len(pairs) == 30
    assert pairs == pairs_from_instructions(read_instruction_data(DATA), seed=1)
    assert all(p["chosen"] != p["rejected"] for p in validate_preferences(pairs, "pairs"))
    assert pairs[1]["chosen"] == "He goes to the park every day."


@pytest.mark.parametrize(("entry", "message"), [
    ({"instruction": "a", "input": "", "chosen": "x", "rejected": " x "}, "entry 1: chosen and rejected are the same"),
    ({"instruction": "a", "input": "", "chosen": "x"}, "entry 1: missing field 'rejected'"),
    ({"instruction": "a", "chosen": "x", "rejected": "y"}, "entry 1: missing field 'input'"),
    ({"instruction": "a", "input": "", "chosen": "", "rejected": "y"}, "entry 1: field 'chosen' is empty"),
])
def test_bad_preference_entries_are_named(tmp_path: Path, entry: dict, message: str) -> None:
    good = {"instruction": "a", "input": "", "chosen": "x", "rejected": "y"}
    path = tmp_path / "prefs.json"
    path.write_text(json.dumps([good, entry]))
    with pytest.raises(DataError, match=f"prefs.json: {message}"):
        read_preference_data(path)
    path.write_text(json.dumps([good]))
    assert read_preference_data(path) == [good]
