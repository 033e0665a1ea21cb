"""AdamW with decay exclusions and the linear-warmup + cosine-decay learning-rate schedule.

Example:
    >>> sched = WarmupCosine(1e-3, warmup_steps=10, decay_steps=100, min_lr=1e-4)
    >>> round(sched.value(10), 6), round(sched.value(100), 6)
    (0.001, 0.0001)
"""

from __future__ import annotations

import math
from typing import Any

import keras

from tfgpt.train.config import LR_SCHEDULES, TrainConfig


@keras.saving.register_keras_serializable(package="tfgpt")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from ``peak/warmup`` to ``peak`` over ``warmup_steps``, then a decay to ``min_lr``.

    At step ``s`` (0-based, the optimizer's ``iterations`` before the update), as nanoGPT:
    ``s < warmup``: ``peak * (s + 1) / (warmup + 1)``; ``s >= decay_steps``: ``min_lr``;
    otherwise ``min_lr + f(r) * (peak - min_lr)`` with ``r = (s - warmup) / (decay_steps - warmup)``
    and, by ``shape``:

    * ``"cosine"`` (default, nanoGPT): ``f(r) = 0.5 * (1 + cos(pi * r))``;
    * ``"linear"``: ``f(r) = 1 - r``;
    * ``"wsd"`` (warmup-stable-decay): ``f = 1`` until the last ``cooldown`` fraction of the
      decay span, then linear to 0 (``f(r) = min(1, (1 - r) / cooldown)``).
    """

    def __init__(
        self, peak_lr: float, warmup_steps: int, decay_steps: int, min_lr: float = 0.0,
        shape: str = "cosine", cooldown: float = 0.2,
    ) -> None:
        super().__init__()
        if shape not in LR_SCHEDULES:
            raise ValueError(f"schedule shape must be one of {LR_SCHEDULES}, got {shape!r}")
        if not 0.0 < cooldown <= 1.0:
            raise ValueError(f"cooldown must be in (0, 1], got {cooldown}")
        self.peak_lr = float(peak_lr)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.min_lr = float(min_lr)
        self.shape = shape
        self.cooldown = float(cooldown)

    def _factor(self, ratio: Any, cos: Any, minimum: Any) -> Any:
        if self.shape == "linear":
            return 1.0 - ratio
        if self.shape == "wsd":
            return minimum(1.0, (1.0 - ratio) / self.cooldown)
        return 0.5 * (1.0 + cos(math.pi * ratio))

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        s = ops.cast(step, "float32")
        peak, floor = self.peak_lr, self.min_lr
        warm = float(self.warmup_steps)
        span = float(max(self.decay_steps - self.warmup_steps, 1))
        warm_lr = peak * (s + 1.0) / (warm + 1.0)
        ratio = ops.clip((s - warm) / span, 0.0, 1.0)
        decay_lr = floor + self._factor(ratio, ops.cos, ops.minimum) * (peak - floor)
        return ops.where(s < warm, warm_lr, decay_lr)

    def value(self, step: int) -> float:
        """The schedule in plain Python (for tests and plots)."""
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / (self.warmup_steps + 1)
        span = max(self.decay_steps - self.warmup_steps, 1)
        ratio = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        return self.min_lr + self._factor(ratio, math.cos, min) * (self.peak_lr - self.min_lr)

    def get_config(self) -> dict[str, Any]:
        return dict(
            peak_lr=self.peak_lr, warmup_steps=self.warmup_steps, decay_steps=self.decay_steps, min_lr=self.min_lr,
            shape=self.shape, cooldown=self.cooldown,
        )


def make_schedule(cfg: TrainConfig) -> WarmupCosine:
    """The schedule a :class:`TrainConfig` describes."""
    return WarmupCosine(cfg.learning_rate, cfg.warmup_steps, cfg.decay_steps, cfg.min_lr,
                        shape=cfg.lr_schedule, cooldown=cfg.lr_cooldown)


def no_decay_variables(model: keras.Model) -> list[Any]:
    """Trainable variables AdamW must not decay: biases, norm scales/offsets (all < 2-D) and embeddings."""
    out = [v for v in model.trainable_variables if len(v.shape) < 2]
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Embedding):
            out.extend(layer.trainable_variables)
    seen: set[int] = set()
    return [v for v in out if not (id(v) in seen or seen.add(id(v)))]


def make_optimizer(cfg: TrainConfig, model: keras.Model, loss_scale: bool = False) -> keras.optimizers.Optimizer:
    """AdamW on ``make_schedule(cfg)``, decay excluded from :func:`no_decay_variables`.

    Clipping is done by the train step (after the cross-replica sum), not by the optimizer.
    With ``loss_scale`` the AdamW is wrapped in a dynamic ``LossScaleOptimizer`` (mixed_float16).

    Example:
        >>> from tfgpt.config import GPTConfig
        >>> from tfgpt.model.gpt import GPT
        >>> m = GPT(GPTConfig.preset("char-small")); m.build((None, 64))
        >>> opt = make_optimizer(TrainConfig(), m)
    """
    opt = keras.optimizers.AdamW(
        learning_rate=make_schedule(cfg),
        weight_decay=cfg.weight_decay,
        beta_1=cfg.beta1,
        beta_2=cfg.beta2,
        epsilon=cfg.epsilon,
    )
    opt.exclude_from_weight_decay(var_list=no_decay_variables(model))
    if loss_scale:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt
