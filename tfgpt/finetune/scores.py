"""Reference-based scores for generated responses: ROUGE-L (``rouge-score``) and corpus BLEU (``sacrebleu``).

There is no judge model here, so these stand in for an LLM-judge score of instruction-tuned
responses. ROUGE-L is the mean F-measure over pairs (rouge-score's default tokenizer: lowercased,
alphanumeric words; no stemming); BLEU is sacrebleu's corpus BLEU (0-100, ``13a`` tokenizer,
exponential smoothing) with one reference per response. BLEU counts up to 4-grams over the
corpus, so a corpus of responses all shorter than four words scores 0 even when they match.
"""

from __future__ import annotations

from collections.abc import Sequence

from tfgpt.errors import DataError


def _check(responses: Sequence[str], references: Sequence[str]) -> None:
    if len(responses) != len(references):
        raise DataError(f"{len(responses)} responses but {len(references)} references")


def rouge_l(responses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure of each response against its reference, in [0, 1] (0 for no pairs).

    Example:
        >>> round(rouge_l(["the cat lay on a mat"], ["the cat sat on the mat"]), 4)  # LCS 4 of 6 words
        0.6667
    """
    from rouge_score import rouge_scorer

    _check(responses, references)
    if not responses:
        return 0.0
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    scores = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(responses, references, strict=True)]
    return float(sum(scores) / len(scores))


def bleu(responses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU of ``responses`` against one reference each, in [0, 100] (0 for no pairs).

    Example:
        >>> round(bleu(["the cat sat on the mat"], ["the cat sat on the mat today"]), 2)  # brevity e^(1-7/6)
        84.65
    """
    import sacrebleu

    _check(responses, references)
    if not responses:
        return 0.0
    return float(sacrebleu.corpus_bleu(list(responses), [list(references)]).score)


def score_responses(responses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``{"rouge_l": ..., "bleu": ...}`` of ``responses`` against ``references``.

    Example:
        >>> s = score_responses(["the cat sat on the mat"], ["the cat sat on the mat"])
        >>> round(s["rouge_l"], 4), round(s["bleu"], 4)
        (1.0, 100.0)
    """
    return {"rouge_l": rouge_l(responses, references), "bleu": bleu(responses, references)}
