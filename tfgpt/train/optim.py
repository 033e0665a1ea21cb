"""AdamW with decay exclusions and the warmup + decay learning-rate schedule (cosine, linear, WSD).

Example:
    >>> sched = WarmupDecay(1e-3, warmup_steps=10, decay_steps=100, min_lr=1e-4)
    >>> round(sched.value(10), 6), round(sched.value(100), 6)
    (0.001, 0.0001)
"""

from __future__ import annotations

import math
from typing import Any

import keras

from tfgpt.train.config import LR_SCHEDULES, TrainConfig


@keras.saving.register_keras_serializable(package="tfgpt")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to ``peak_lr`` over ``warmup_steps``, then a decay to ``min_lr``: cosine, linear or WSD.

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

    def __call__(self, step: Any) -> Any:
        """The learning rate at ``step`` (a scalar tensor; keras ops, so it traces inside the train step)."""
        ops = keras.ops
        s = ops.cast(step, "float32")
        peak, floor = self.peak_lr, self.min_lr
        warm = float(self.warmup_steps)
        span = float(max(self.decay_steps - self.warmup_steps, 1))
        warm_lr = peak * (s + 1.0) / (warm + 1.0)
        ratio = ops.clip((s - warm) / span, 0.0, 1.0)
        if self.shape == "linear":
            factor = 1.0 - ratio
        elif self.shape == "wsd":
            factor = ops.minimum(1.0, (1.0 - ratio) / self.cooldown)
        else:
            factor = 0.5 * (1.0 + ops.cos(math.pi * ratio))
        return ops.where(s < warm, warm_lr, floor + factor * (peak - floor))

    def value(self, step: int) -> float:
        """The schedule at ``step`` as a Python float (for tests and plots); the same formula as ``__call__``."""
        return float(keras.ops.convert_to_numpy(self(step)))

    def get_config(self) -> dict[str, Any]:
        return dict(
            peak_lr=self.peak_lr, warmup_steps=self.warmup_steps, decay_steps=self.decay_steps, min_lr=self.min_lr,
            shape=self.shape, cooldown=self.cooldown,
        )


#: The schedule's name before it did linear and WSD too. Runs and configs that serialized
#: ``tfgpt>WarmupCosine`` still deserialize (to a :class:`WarmupDecay`).
WarmupCosine = WarmupDecay
keras.saving.get_custom_objects()["tfgpt>WarmupCosine"] = WarmupDecay


def make_schedule(cfg: TrainConfig) -> WarmupDecay:
    """The schedule a :class:`TrainConfig` describes."""
    return WarmupDecay(cfg.learning_rate, cfg.warmup_steps, cfg.decay_steps, cfg.min_lr,
                        shape=cfg.lr_schedule, cooldown=cfg.lr_cooldown)


def schedule_change(old: TrainConfig, new: TrainConfig, step: int) -> str | None:
    """How the learning-rate curve from ``step`` on differs between two configs, or None if it doesn't.

    On ``--resume`` the new config's schedule applies; a changed ``max_steps`` (or any schedule
    field) moves the decay, which this says plainly instead of letting the rate jump silently.

    Example:
        >>> old = TrainConfig(max_steps=300, learning_rate=1e-3, warmup_steps=0)
        >>> schedule_change(old, TrainConfig(max_steps=400, learning_rate=1e-3, warmup_steps=0), 300)
        'the learning-rate schedule changed (decay ends at step 300 -> 400): at step 300 the rate is 1.0e-04 -> 2.3e-04'
    """
    before, after = make_schedule(old), make_schedule(new)
    if before.get_config() == after.get_config():
        return None
    fields = ("peak_lr", "warmup_steps", "decay_steps", "min_lr", "shape", "cooldown")
    names = {"peak_lr": "learning_rate", "decay_steps": "decay ends at step", "shape": "lr_schedule"}
    diffs = [f"{names.get(f, f)} {getattr(before, f)} -> {getattr(after, f)}"
             for f in fields if getattr(before, f) != getattr(after, f)]
    return (f"the learning-rate schedule changed ({'; '.join(diffs)}): at step {step} the rate is "
            f"{before.value(step):.1e} -> {after.value(step):.1e}")


#: The AdamW settings a --resume may change; the new ones apply from the resumed step on.
OPTIMIZER_FIELDS = ("weight_decay", "decay_embeddings", "beta1", "beta2", "epsilon", "grad_clip")


def optimizer_change(old: TrainConfig, new: TrainConfig) -> str | None:
    """Which optimizer settings differ between two configs (said on ``--resume``), or None.

    Example:
        >>> optimizer_change(TrainConfig(), TrainConfig(weight_decay=0.2, decay_embeddings=True))
        'the optimizer settings changed (weight_decay 0.1 -> 0.2; decay_embeddings False -> True)'
    """
    diffs = [f"{f} {getattr(old, f)} -> {getattr(new, f)}" for f in OPTIMIZER_FIELDS
             if getattr(old, f) != getattr(new, f)]
    return f"the optimizer settings changed ({'; '.join(diffs)})" if diffs else None


def no_decay_variables(model: keras.Model, embeddings: bool = True) -> list[Any]:
    """Trainable variables AdamW must not decay: biases, norm scales/offsets (all < 2-D) and, with
    ``embeddings``, the embedding tables (nanoGPT decays those; ``train.decay_embeddings``)."""
    out = [v for v in model.trainable_variables if len(v.shape) < 2]
    for layer in model._flatten_layers(include_self=False):
        if embeddings and isinstance(layer, keras.layers.Embedding):
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
    opt.exclude_from_weight_decay(var_list=no_decay_variables(model, embeddings=not cfg.decay_embeddings))
    if loss_scale:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt
