"""The training stack every fine-tune uses: clipping, gradient accumulation, precision and AdamW.

``tfgpt finetune classify|instruct|prefer`` take ``--clip NORM`` (global-norm clipping, 0: off;
the default is ``tfgpt train``'s ``grad_clip``), ``--accumulate N`` (micro-batches averaged into one
optimizer step) and ``--precision`` (``tfgpt train``'s values). They are checked here before anything
is read, and go into one optimizer: :func:`tfgpt.train.optim.make_optimizer`'s AdamW (no decay on
norms, biases, embeddings; cosine from ``lr`` to ``lr/10`` without warmup) with Keras's own
``global_clipnorm`` and ``gradient_accumulation_steps``, so clipping and accumulation happen in
``optimizer.apply`` (the accumulated mean is clipped), whether ``fit``'s train step or DPO's calls it.
``mixed_float16`` wraps it in a dynamic ``LossScaleOptimizer``.

Example:
    >>> from tfgpt.model.gpt import GPT
    >>> gpt = GPT(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16); gpt.build((None, None))
    >>> opt = make_finetune_optimizer(gpt, lr=1e-3, steps=10, clip=0.5, accumulate=4)
    >>> opt.global_clipnorm, opt.gradient_accumulation_steps
    (0.5, 4)
"""

from __future__ import annotations

import typing
from typing import Any

import keras

from tfgpt.errors import ConfigError
from tfgpt.train.config import Precision, TrainConfig
from tfgpt.train.optim import make_optimizer

#: ``--precision`` values (``tfgpt train``'s; ``auto``: mixed_float16 on a GPU, else float32)
PRECISIONS = typing.get_args(Precision)
#: ``--clip`` default: ``tfgpt train``'s ``grad_clip``
DEFAULT_CLIP = TrainConfig.grad_clip


def check_stack(clip: float, accumulate: int, precision: str) -> None:
    """Refuse a negative ``clip``, an ``accumulate`` below 1 or an unknown ``precision``.

    Example:
        >>> check_stack(1.0, 0, "float32")
        Traceback (most recent call last):
        tfgpt.errors.ConfigError: --accumulate must be a positive integer, got 0
    """
    if isinstance(clip, bool) or not isinstance(clip, int | float) or not clip >= 0:
        raise ConfigError(f"--clip must be a number >= 0 (0: no clipping), got {clip!r}")
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ConfigError(f"--accumulate must be a positive integer, got {accumulate!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


def resolve(precision: str) -> str:
    """``auto`` as ``tfgpt train`` reads it (mixed_float16 on a GPU, else float32); others unchanged."""
    from tfgpt.train.fit import resolve_precision

    return resolve_precision(precision)


def with_precision(gpt: Any, precision: str) -> Any:
    """``gpt`` itself for float32, else a GPT of the same config under the mixed policy with its weights.

    Variables stay float32 under a mixed policy (Keras keeps them so); only the compute dtype changes.
    """
    precision = resolve(precision)
    if precision == gpt.dtype_policy.name:
        return gpt
    clone = type(gpt)(gpt.config, dtype=precision, name=gpt.name)
    clone.build((None, None))
    clone.set_weights(gpt.get_weights())
    return clone


def make_finetune_optimizer(model: keras.Model, lr: float, steps: int, clip: float = DEFAULT_CLIP,
                            accumulate: int = 1, precision: str = "float32") -> keras.optimizers.Optimizer:
    """AdamW over ``steps`` train batches (the schedule counts micro-batches), clipped and accumulating.

    ``model``'s trainable variables must be set (freeze first): they decide what AdamW excludes
    from weight decay. ``clip`` 0 and ``accumulate`` 1 turn those off.
    """
    check_stack(clip, accumulate, precision)
    cfg = TrainConfig(max_steps=max(steps, 1), learning_rate=lr, min_lr=lr / 10, warmup_steps=0)
    opt = make_optimizer(cfg, model, loss_scale=resolve(precision) == "mixed_float16")
    inner = getattr(opt, "inner_optimizer", opt)
    inner.global_clipnorm = float(clip) if clip > 0 else None
    inner.gradient_accumulation_steps = accumulate if accumulate > 1 else None
    return opt
