"""Helpers of the fine-tuning tests: a tiny random run (one block, 32 wide, a char tokenizer with end-of-text),
the callbacks that interrupt a run or keep its model, and run comparisons."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from tfgpt.model import GPT
from tfgpt.runs import save_run
from tfgpt.tokenizers import CharTokenizer


def char_tokenizer(texts: list[str]) -> CharTokenizer:
    """The char vocabulary of ``texts`` plus ``<|endoftext|>`` (which the fine-tuning drivers need)."""
    return CharTokenizer.train(texts, special_tokens=["<|endoftext|>"])


def tiny_run(path: Path, tokenizer: CharTokenizer, block_size: int) -> Path:
    """Save a seeded, random 1-layer GPT (2 heads, 32 wide) over ``tokenizer`` as a run dir at ``path``."""
    keras.utils.set_random_seed(0)
    gpt = GPT(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=32)
    gpt.build((None, None))
    return save_run(path, gpt, tokenizer)


class Stop(Exception):
    """What the interrupting callback raises (as a Ctrl-C or a killed job would stop the run)."""


class InterruptAt(keras.callbacks.Callback):
    """Raise :class:`Stop` when epoch ``epoch`` (0-based) begins: the epochs before it are checkpointed."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.epoch:
            raise Stop


class Grab(keras.callbacks.Callback):
    """Keeps the trained in-memory model (and so its optimizer) for comparison with what was saved."""

    def on_train_end(self, logs: dict | None = None) -> None:
        self.trained = self.model


#: metrics that measure this machine, not the run (an interrupted + resumed run times only its second half)
TIMINGS = ("train_seconds", "tokens_per_s", "steps_per_s")


def assert_same_metrics(a: dict, b: dict, atol: float = 1e-6) -> None:
    """``a`` and ``b`` hold the same keys and, timings aside, the same values within ``atol``."""
    assert a.keys() == b.keys()
    for key in a:
        if key not in TIMINGS:
            assert b[key] == pytest.approx(a[key], abs=atol), key


def assert_same_weights(a: keras.Model, b: keras.Model, atol: float = 1e-6) -> None:
    """Every weight of ``b`` equals ``a``'s within ``atol``, in the same order."""
    for va, vb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(np.asarray(vb, "float64"), np.asarray(va, "float64"), atol=atol, err_msg=va.path)


#: the LoRA classify run the resume tests (and the LoRA-mode test) train; jit_compile=False: on a model
#: this small the XLA compile takes longer than the training
LORA_ARGS = dict(trainable="lora", lora_rank=4, balance_classes=True, epochs=2, batch_size=8, lr=3e-3, seed=0,
                 jit_compile=False)
