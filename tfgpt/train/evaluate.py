"""Loss and perplexity: ``estimate_loss`` (during training, as nanoGPT) and ``evaluate_run``.

Example:
    >>> result = evaluate_run("runs/shakespeare-char", split="val")  # doctest: +SKIP
    >>> sorted(result)  # doctest: +SKIP
    ['batches', 'loss', 'perplexity', 'run_dir', 'split', 'step', 'tokens', 'weights']
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfgpt.errors import ConfigError, RunDirError
from tfgpt.runs import CONFIG_YAML, load_run_model
from tfgpt.train.data import Source, check_data_dir, data_dir_source
from tfgpt.train.step import token_cross_entropy

EVAL_SEED_OFFSET = 7919


class LossEstimator:
    """Mean loss over a fixed set of ``eval_iters`` batches per split (the same batches every call).

    ``splits`` maps the labels the result is keyed by to the source's split names
    (``{"train": "train-2024", "val": "heldout"}``); a plain list uses each name as its label.

    Example:
        >>> import numpy as np
        >>> from tfgpt.config import GPTConfig
        >>> from tfgpt.model.gpt import GPT
        >>> from tfgpt.train.data import array_source
        >>> gpt = GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=8))
        >>> source = array_source({"a": np.arange(64) % 8, "b": np.arange(64) % 8})
        >>> est = LossEstimator(gpt, source, {"train": "a", "val": "b"}, 2, 2, 4, seed=1)
        >>> sorted(est()), est.tokens_per_split
        (['train', 'val'], 16)
    """

    def __init__(
        self, model: keras.Model, source: Source, splits: Mapping[str, str] | Sequence[str], eval_iters: int,
        batch_size: int, block_size: int, seed: int, jit_compile: bool = True,
    ) -> None:
        if eval_iters <= 0 or batch_size <= 0:
            raise ConfigError(f"eval_iters and batch_size must be positive, got {eval_iters} and {batch_size}")
        labels = dict(splits) if isinstance(splits, Mapping) else {name: name for name in splits}
        self.model = model
        self.batches = {
            label: [(x, y) for x, y in source(split, batch_size, block_size, seed + EVAL_SEED_OFFSET).take(eval_iters)]
            for label, split in labels.items()
        }
        self.tokens_per_split = eval_iters * batch_size * block_size

        @tf.function(jit_compile=jit_compile, reduce_retracing=True)
        def batch_loss(x: Any, y: Any) -> Any:
            return token_cross_entropy(self.model(x, training=False), y)

        self._batch_loss = batch_loss

    def __call__(self) -> dict[str, float]:
        return {
            split: float(np.mean([float(self._batch_loss(x, y)) for x, y in batches]))
            for split, batches in self.batches.items()
        }


def perplexity(loss: float) -> float:
    """``exp(loss)``, inf when it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def evaluate_run(
    run_dir: str | os.PathLike,
    split: str = "val",
    eval_iters: int | None = None,
    batch_size: int | None = None,
    data_dir: str | os.PathLike | None = None,
    checkpoint: str = "final",
) -> dict[str, Any]:
    """Loss and perplexity of a trained run on ``split`` of its data dir.

    ``checkpoint``: "final" (the weights :func:`tfgpt.load` uses: the newer of ``model.keras`` and
    the latest checkpoint), "latest", "best", a step dir name, or a checkpoint dir or weights file
    path. ``eval_iters``/``batch_size`` default to the run's ``train:`` settings; the data dir
    defaults to the run's ``data.dir``.

    Returns ``{"run_dir", "split", "step", "weights", "loss", "perplexity", "tokens", "batches"}``;
    ``step`` is that of the weights scored (None if unknown), ``weights`` their file.
    """
    if eval_iters is not None and eval_iters <= 0:
        raise ConfigError(f"--eval-iters must be a positive number of batches, got {eval_iters}")
    run_dir = Path(run_dir)
    model, (_, tcfg, dcfg), step, weights = load_run_model(run_dir, checkpoint)
    data_dir = data_dir if data_dir is not None else dcfg.dir
    if data_dir is None:
        raise RunDirError(f"{run_dir / CONFIG_YAML} names no data dir; pass data_dir")
    check_data_dir(data_dir)
    source = data_dir_source(data_dir, shuffle=dcfg.shuffle)
    iters = eval_iters if eval_iters is not None else tcfg.eval_iters
    bs = batch_size if batch_size is not None else tcfg.eval_batch_size or tcfg.batch_size
    est = LossEstimator(model, source, [split], iters, bs, model.config.block_size, tcfg.seed,
                        jit_compile=tcfg.jit_compile)
    loss = est()[split]
    return {
        "run_dir": str(run_dir), "split": split, "step": step, "weights": str(weights), "loss": loss,
        "perplexity": perplexity(loss), "tokens": est.tokens_per_split, "batches": iters,
    }
