"""Checks for ``export --format hf``: the Hugging Face dir holds the model's weights and tokenizer, exactly.

No torch: the dir is read back with :func:`tfgpt.convert.hf.read_hf` (``safetensors.numpy``), every
tensor compared bit for bit with the Keras model's, the logits on the verification prompts compared
(they must agree within :data:`LOGITS_TOL`), and ``vocab.json`` / ``merges.txt`` compared with the
run's tokenizer. Equal logits in transformers itself are tested in ``tests/convert/test_parity.py``.

Example:
    >>> figures = verify_hf("export/gpt2/hf", model, tokenizer, ["Hello"])  # doctest: +SKIP
    >>> figures["tensors_equal"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tfgpt.convert.gpt2_names import gpt2_state_dict
from tfgpt.convert.hf import MERGES_TXT, VOCAB_JSON, read_hf
from tfgpt.errors import ExportError

LOGITS_TOL = 1e-5

__all__ = ["verify_hf", "LOGITS_TOL"]


def _check_tokenizer_files(hf_dir: Path, tokenizer: Any) -> None:
    vocab = json.loads((hf_dir / VOCAB_JSON).read_text(encoding="utf-8"))
    merges = [tuple(m.split(" ")) for m in (hf_dir / MERGES_TXT).read_text(encoding="utf-8").splitlines()[1:] if m]
    if vocab != tokenizer.encoder or merges != tokenizer.merges:
        raise ExportError(f"{hf_dir}: {VOCAB_JSON} / {MERGES_TXT} do not hold the run's tokenizer")


def verify_hf(hf_dir: str | Path, model: Any, tokenizer: Any, prompts: list[str]) -> dict[str, Any]:
    """Figures for the HF dir (``tensors_equal``, ``logits_max_abs_diff``); ExportError when a check fails."""
    hf_dir = Path(hf_dir)
    again = read_hf(hf_dir).model
    ours, theirs = gpt2_state_dict(model), gpt2_state_dict(again)
    differ = [k for k in ours if not np.array_equal(ours[k], theirs[k])]
    if differ:
        raise ExportError(f"{hf_dir}: tensor {differ[0]} differs from the model's ({len(differ)} differ)")
    diff = 0.0
    for prompt in prompts:
        ids = np.array([tokenizer.encode(prompt)[-model.config.block_size:]], "int32")  # [1, time]
        diff = max(diff, float(np.abs(np.asarray(again(ids)) - np.asarray(model(ids))).max()))
    if not diff <= LOGITS_TOL:
        raise ExportError(f"{hf_dir}: logits differ from Keras by {diff:.3g} (> {LOGITS_TOL})")
    _check_tokenizer_files(hf_dir, tokenizer)
    return {"tensors_equal": True, "logits_max_abs_diff": diff, "prompts": len(prompts), "tokenizer_equal": True}
