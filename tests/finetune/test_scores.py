"""tfgpt.finetune.scores: ROUGE-L (rouge-score) and corpus BLEU (sacrebleu) on hand-checked cases."""

from __future__ import annotations

import math

import pytest

from tfgpt.errors import DataError
from tfgpt.finetune.scores import bleu, rouge_l, score_responses

REF = "the cat sat on the mat"


def test_identical_strings_score_one_and_a_hundred() -> None:
    assert score_responses([REF, "a dog ran in the park today"], [REF, "a dog ran in the park today"]) == {
        "rouge_l": 1.0, "bleu": pytest.approx(100.0)}


def test_disjoint_strings_score_zero() -> None:
    assert score_responses(["green ideas sleep furiously"], [REF]) == {"rouge_l": 0.0, "bleu": 0.0}
    assert score_responses([""], [REF]) == {"rouge_l": 0.0, "bleu": 0.0}


def test_rouge_l_middle_case_by_hand() -> None:
    # LCS of "the cat lay on a mat" and REF: the, cat, on, mat = 4 of 6 words each way: P = R = F = 2/3
    assert rouge_l(["the cat lay on a mat"], [REF]) == pytest.approx(2 / 3)
    # case and punctuation are dropped by rouge-score's tokenizer; the mean is over pairs: (1 + 0) / 2
    assert rouge_l(["The cat sat on the mat!", "nothing"], [REF, REF]) == pytest.approx(0.5)
    # P = 3/3, R = 3/6: F = 2PR / (P + R) = 2/3
    assert rouge_l(["the cat sat"], [REF]) == pytest.approx(2 / 3)


def test_bleu_middle_case_by_hand() -> None:
    # every n-gram precision is 1 (6/6, 5/5, 4/4, 3/3); the brevity penalty is exp(1 - 7/6)
    assert bleu([REF], [REF + " today"]) == pytest.approx(100 * math.exp(1 - 7 / 6), abs=1e-6)
    # "the cat sat on a mat" vs REF: 1- to 4-gram precisions 5/6, 3/5, 2/4, 1/3 (no zero count, so no
    # smoothing), same length so no brevity penalty: BLEU = 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4)
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu(["the cat sat on a mat"], [REF]) == pytest.approx(expected, abs=1e-6)


def test_lengths_must_match_and_empty_scores_zero() -> None:
    with pytest.raises(DataError, match="2 responses but 1 references"):
        rouge_l(["a", "b"], ["a"])
    assert score_responses([], []) == {"rouge_l": 0.0, "bleu": 0.0}
