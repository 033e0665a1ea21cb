"""Direct Preference Optimization: response log-probs, the DPO loss and preference entries.

DPO (Rafailov et al., 2023) trains the policy to raise the log-prob of the chosen response over
the rejected one, relative to a frozen reference copy of the starting model:
``loss = -log σ(β · ((π_c - ref_c) - (π_r - ref_r)))``. Log-probs are averaged over the response
tokens only (the labels :func:`tfgpt.finetune.instruct.collate` builds mask the prompt with -100).
"""

from __future__ import annotations

import os
import random
from typing import Any

from keras import ops

from tfgpt.errors import DataError
from tfgpt.finetune.instruct import _read_json, validate_entries

PREFERENCE_FIELDS = ("instruction", "input", "chosen", "rejected")


def sequence_logprob(logits: Any, labels: Any, ignore_index: int = -100) -> Any:
    """Per-sequence mean log-prob of ``labels`` [batch, time] under ``logits`` [batch, time, vocab].

    Positions labelled ``ignore_index`` (prompt, padding) are left out of the mean; a row with
    no response token gives 0.

    Example:
        >>> logits = np.log(np.array([[[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]]], "float32"))
        >>> np.round(np.array(sequence_logprob(logits, np.array([[-100, 1, 0]]))), 4)  # (ln .8 + ln .9) / 2
        array([-0.1643], dtype=float32)
    """
    labels = ops.convert_to_tensor(labels, "int32")
    mask = ops.not_equal(labels, ignore_index)
    safe = ops.where(mask, labels, ops.zeros_like(labels))
    logp = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    token_logp = ops.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]  # [batch, time]
    token_logp = ops.where(mask, token_logp, ops.zeros_like(token_logp))
    count = ops.maximum(ops.sum(ops.cast(mask, "float32"), axis=-1), 1.0)
    return ops.sum(token_logp, axis=-1) / count


def dpo_loss(
    policy_chosen: Any, policy_rejected: Any, ref_chosen: Any, ref_rejected: Any, beta: float = 0.1
) -> dict[str, Any]:
    """The batch-mean DPO loss and the rewards it logs, from per-sequence log-probs [batch].

    Returns ``loss``, ``chosen_reward`` (β · (π_c - ref_c)), ``rejected_reward``
    (β · (π_r - ref_r)), ``margin`` (chosen - rejected) and ``accuracy`` (the fraction of pairs
    whose margin is > 0), each averaged over the batch.

    Example:
        >>> out = dpo_loss(np.array([-1.0]), np.array([-2.0]), np.array([-1.5]), np.array([-1.5]), beta=0.1)
        >>> {k: round(float(v), 4) for k, v in out.items()}
        {'loss': 0.6444, 'chosen_reward': 0.05, 'rejected_reward': -0.05, 'margin': 0.1, 'accuracy': 1.0}
    """
    if beta <= 0:
        raise ValueError(f"--beta must be positive, got {beta}")
    cast = [ops.cast(ops.convert_to_tensor(t), "float32")
            for t in (policy_chosen, policy_rejected, ref_chosen, ref_rejected)]
    chosen = beta * (cast[0] - cast[2])
    rejected = beta * (cast[1] - cast[3])
    losses = -ops.log_sigmoid(chosen - rejected)
    return {
        "loss": ops.mean(losses),
        "chosen_reward": ops.mean(chosen),
        "rejected_reward": ops.mean(rejected),
        "margin": ops.mean(chosen - rejected),
        "accuracy": ops.mean(ops.cast(ops.greater(chosen - rejected, 0.0), "float32")),
    }


def validate_preferences(entries: Any, where: str) -> list[dict[str, str]]:
    """Check preference entries: string instruction, input, chosen, rejected; chosen != rejected.

    Example:
        >>> validate_preferences([{"instruction": "a", "input": "", "chosen": "x", "rejected": "x"}], "p.json")
        Traceback (most recent call last):
        tfgpt.errors.DataError: p.json: entry 0: chosen and rejected are the same
    """
    validate_entries(entries, where, PREFERENCE_FIELDS)
    for i, entry in enumerate(entries):
        if entry["chosen"].strip() == entry["rejected"].strip():
            raise DataError(f"{where}: entry {i}: chosen and rejected are the same")
    return entries


def read_preference_data(path: str | os.PathLike) -> list[dict[str, str]]:
    """Entries of a PREFS.json: a list of {instruction, input, chosen, rejected}.

    Example:
        >>> read_preference_data("PREFS.json")  # doctest: +SKIP
    """
    return validate_preferences(_read_json(path), str(path))


def pairs_from_instructions(entries: list[dict[str, str]], seed: int = 0) -> list[dict[str, str]]:
    """Preference entries from instruction entries: chosen = the output, rejected = another's.

    For tests and demos (there is no preference data at hand); the rejected output is a
    seeded pick among the other entries whose output differs.

    Example:
        >>> data = [{"instruction": str(i), "input": "", "output": f"o{i}"} for i in range(3)]
        >>> [(p["chosen"], p["rejected"] != p["chosen"]) for p in pairs_from_instructions(data)]
        [('o0', True), ('o1', True), ('o2', True)]
    """
    rng = random.Random(seed)
    pairs = []
    for i, entry in enumerate(entries):
        others = [e["output"] for e in entries if e["output"].strip() != entry["output"].strip()]
        if not others:
            raise DataError(f"entry {i}: no other entry with a different output to reject")
        pairs.append({"instruction": entry["instruction"], "input": entry["input"],
                      "chosen": entry["output"], "rejected": rng.choice(others)})
    return pairs
