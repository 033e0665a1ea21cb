"""Loss and perplexity: ``LossEstimator`` (during training, as nanoGPT), ``evaluate_run`` (a split of
the run's data dir) and ``evaluate_text`` (any UTF-8 text file, ``tfgpt eval --run RUN --text FILE``).

Example:
    >>> result = evaluate_run("runs/shakespeare-char", split="val")  # doctest: +SKIP
    >>> sorted(result)  # doctest: +SKIP
    ['batches', 'loss', 'perplexity', 'run_dir', 'split', 'split_tokens', 'step', 'tokens', 'weights']
    >>> evaluate_text("runs/gpt2", "wiki.test.txt", stride=512)["perplexity"]  # doctest: +SKIP
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

from tfgpt.data.clean import clean_text
from tfgpt.data.manifest import check_tokenizer
from tfgpt.data.pipeline import named_shard_errors
from tfgpt.errors import ConfigError, DataError, RunDirError, TokenizerError
from tfgpt.model.quantize import quantize_dense
from tfgpt.runs import CONFIG_YAML, TOKENIZER_DIR, check_run_dir, load_run_model
from tfgpt.tokenizers import load_tokenizer
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
    quantize: str | None = None,
) -> dict[str, Any]:
    """Loss and perplexity of a trained run on ``split`` of its data dir.

    ``checkpoint``: "final" (the weights :func:`tfgpt.load` uses: the newer of ``model.keras`` and
    the latest checkpoint), "latest", "best", a step dir name, or a checkpoint dir or weights file
    path. ``eval_iters``/``batch_size`` default to the run's ``train:`` settings; the data dir
    defaults to the run's ``data.dir``. ``quantize="int8"`` scores the weights as
    :func:`tfgpt.model.quantize.quantize_dense` leaves them (what ``--quantize int8`` generates with).

    Returns ``{"run_dir", "split", "step", "weights", "loss", "perplexity", "tokens", "batches",
    "split_tokens"}``; ``step`` is that of the weights scored (None if unknown), ``weights`` their
    file. ``tokens`` counts the tokens read in random windows; a ``note`` says so when that is more
    than the split's ``split_tokens`` (windows then overlap).
    """
    if eval_iters is not None and eval_iters <= 0:
        raise ConfigError(f"--eval-iters must be a positive number of batches, got {eval_iters}")
    run_dir = Path(run_dir)
    model, (_, tcfg, dcfg), step, weights = load_run_model(run_dir, checkpoint)
    if quantize is not None:
        quantize_dense(model, quantize)
    data_dir = data_dir if data_dir is not None else dcfg.dir
    if data_dir is None:
        raise RunDirError(f"{run_dir / CONFIG_YAML} names no data dir; pass data_dir")
    manifest = check_data_dir(data_dir)
    check_tokenizer(manifest, load_tokenizer(run_dir / TOKENIZER_DIR), data_dir)  # else ids past the vocab: NaN
    if split not in manifest["splits"]:
        raise DataError(f"data dir {data_dir} has no split {split!r}; it has {', '.join(manifest['splits'])}")
    source = data_dir_source(data_dir, shuffle=dcfg.shuffle)
    iters = eval_iters if eval_iters is not None else tcfg.eval_iters
    bs = batch_size if batch_size is not None else tcfg.eval_batch_size or tcfg.batch_size
    with named_shard_errors(data_dir):
        est = LossEstimator(model, source, [split], iters, bs, model.config.block_size, tcfg.seed,
                            jit_compile=tcfg.jit_compile)
        loss = est()[split]
    if not math.isfinite(loss):
        raise RunDirError(f"{weights}: the {split} loss is not finite ({loss}): the weights hold NaN/Inf")
    result = {
        "run_dir": str(run_dir), "split": split, "step": step, "weights": str(weights), "loss": loss,
        "perplexity": perplexity(loss), "tokens": est.tokens_per_split, "batches": iters,
        "split_tokens": manifest["splits"][split]["tokens"], **({"quantize": quantize} if quantize else {}),
    }
    return {**result, **reuse_note(result["tokens"], result["split_tokens"])}


def reuse_note(tokens: int, split_tokens: int) -> dict[str, str]:
    """``{"note": ...}`` when the random windows read more tokens than the split holds, else ``{}``.

    Example:
        >>> reuse_note(20480, 5157)["note"]
        'read 20,480 tokens from a 5,157-token split: windows overlap, so tokens were scored more than once'
    """
    if tokens <= split_tokens:
        return {}
    return {"note": f"read {tokens:,} tokens from a {split_tokens:,}-token split: windows overlap, "
                    "so tokens were scored more than once"}


# -- perplexity of a text file -------------------------------------------------------------


def read_text_file(path: str | os.PathLike) -> str:
    """The text of ``path`` as strict UTF-8; a one-line DataError naming the file if it is missing,
    not a file, empty, or not UTF-8 (with the byte offset of the first bad byte)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"text file not found: {path}" if not path.exists() else f"{path} is not a file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: byte {e.start} ({data[e.start:e.start + 1]!r}) "
                        f"cannot be decoded") from None
    if not text.strip():
        raise DataError(f"{path} is empty: nothing to score")
    return text


def text_windows(n_targets: int, block_size: int, stride: int) -> list[tuple[int, int]]:
    """``(begin, first_scored)`` for each window that scores ``n_targets`` next-token predictions.

    A window feeds ids ``[begin, begin + L)`` (``L = min(block_size, n_targets)``) and scores its
    positions ``>= first_scored``, so every target is scored exactly once. Windows start ``stride``
    apart (stride == block_size: non-overlapping; smaller: each window after the first keeps
    ``L - stride`` tokens of context, as in Hugging Face's perplexity guide). The last window is moved
    back to stay ``L`` long, scoring only its new targets: one shape for every window.

    Example:
        >>> text_windows(10, 4, 4)
        [(0, 0), (4, 0), (6, 2)]
        >>> text_windows(10, 4, 2)
        [(0, 0), (2, 2), (4, 2), (6, 2)]
        >>> text_windows(3, 8, 8)
        [(0, 0)]
    """
    if not 1 <= stride <= block_size:
        raise ConfigError(f"--stride must be between 1 and the block size {block_size}, got {stride}")
    length = min(block_size, n_targets)
    windows, scored_to, begin = [], 0, 0
    while scored_to < n_targets:
        begin = min(begin, n_targets - length)
        windows.append((begin, scored_to - begin))
        scored_to = begin + length
        begin += stride
    return windows


def _window_batches(
    ids: np.ndarray, windows: list[tuple[int, int]], length: int, batch_size: int
) -> Any:
    """``(x, y, mask)`` batches ``[batch_size, length]``; the last batch is padded with masked rows."""
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        rows = chunk + [chunk[0]] * (batch_size - len(chunk))
        x = np.stack([ids[b:b + length] for b, _ in rows])  # [batch, length]
        y = np.stack([ids[b + 1:b + length + 1] for b, _ in rows])  # [batch, length]
        mask = np.stack([np.arange(length) >= first for _, first in rows])  # [batch, length]
        mask[len(chunk):] = False
        yield x.astype("int32"), y.astype("int32"), mask


def score_ids(
    model: keras.Model, ids: Sequence[int], stride: int | None = None, batch_size: int = 4,
    jit_compile: bool = False,
) -> tuple[float, int, int]:
    """``(sum of next-token NLL in nats, targets scored, windows)`` of ``ids`` under ``model``.

    Windows of the model's block size, ``stride`` apart (default: the block size), see
    :func:`text_windows`. The sum is accumulated in float64.

    Example:
        >>> from tfgpt.config import GPTConfig
        >>> from tfgpt.model.gpt import GPT
        >>> gpt = GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=8))
        >>> total, n, windows = score_ids(gpt, list(range(8)) * 2)
        >>> n, windows
        (15, 4)
    """
    block = model.config.block_size
    ids = np.asarray(ids, dtype=np.int64)
    windows = text_windows(len(ids) - 1, block, block if stride is None else stride)
    length = min(block, len(ids) - 1)

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def token_nll(x: Any, y: Any) -> Any:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=tf.cast(model(x, training=False), tf.float32))  # [batch, length]

    total, count = 0.0, 0
    for x, y, mask in _window_batches(ids, windows, length, batch_size):
        nll = np.asarray(token_nll(x, y), dtype=np.float64)
        total += float(nll[mask].sum())
        count += int(mask.sum())
    return total, count, len(windows)


def evaluate_text(
    run_dir: str | os.PathLike, path: str | os.PathLike, stride: int | None = None, batch_size: int = 4,
    checkpoint: str = "final", quantize: str | None = None,
) -> dict[str, Any]:
    """Loss and perplexity of a run on a UTF-8 text file (``tfgpt eval --run RUN --text FILE``).

    The file is cleaned as ``tfgpt prepare`` cleans a corpus (a UTF-8 BOM skipped, line endings to
    ``\n``, control characters dropped, NFC: :func:`tfgpt.data.clean.clean_text`), so a file prepare
    took scores as the model saw it, then tokenized whole with the run's tokenizer (no token is
    prepended, so the first token is context only) and scored in windows of the block size
    ``stride`` apart (default: the block size, non-overlapping windows; see :func:`text_windows`).
    ``tokens`` counts the predictions scored: the file's tokens minus one. ``quantize`` as
    :func:`evaluate_run`.

    Returns ``{"run_dir", "file", "step", "weights", "loss", "perplexity", "tokens", "windows",
    "block_size", "stride"}``.
    """
    run = check_run_dir(run_dir)
    text, _ = clean_text(read_text_file(path).removeprefix("\ufeff"))
    model, (_, tcfg, _), step, weights = load_run_model(run, checkpoint)
    if quantize is not None:
        quantize_dense(model, quantize)
    tokenizer = load_tokenizer(run / TOKENIZER_DIR)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise RunDirError(f"{run}: tokenizer has {tokenizer.vocab_size} tokens but the model only "
                          f"{model.config.vocab_size}")
    try:
        ids = tokenizer.encode(text)
    except TokenizerError as e:
        raise TokenizerError(f"{path}: {e}") from None
    if len(ids) < 2:
        raise DataError(f"{path} has {len(ids)} token(s); at least 2 are needed to score one prediction")
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    stride = model.config.block_size if stride is None else stride
    total, count, windows = score_ids(model, ids, stride, batch_size, jit_compile=tcfg.jit_compile)
    loss = total / count
    return {
        "run_dir": str(run), "file": str(path), "step": step, "weights": str(weights), "loss": loss,
        "perplexity": perplexity(loss), "tokens": count, "windows": windows,
        "block_size": model.config.block_size, "stride": stride, **({"quantize": quantize} if quantize else {}),
    }
