"""The GPT training step: cross-entropy, gradient accumulation, cross-replica sum, clipping.

:class:`GPTTrainer` wraps a :class:`~tfgpt.model.gpt.GPT` in a ``keras.Model`` whose
``train_step`` is safe under every ``tf.distribute`` strategy:

* one call = one optimizer step. The batch it receives holds ``grad_accum_steps`` micro-batches;
  they run in a ``tf.while_loop`` and their gradients are summed in loop-carried tensors, so the
  optimizer is applied once, unconditionally (no ``tf.cond`` around the update, which is what
  breaks Keras' own ``gradient_accumulation_steps`` under ``MirroredStrategy``);
* the loss of each replica is scaled by ``1 / (accum * replicas)`` and the gradients are summed
  across replicas *before* clipping, so global-norm clipping sees the true global gradient;
* every call advances ``optimizer.iterations`` by exactly one, also when a mixed_float16
  loss-scale optimizer skips an update whose gradients overflowed;
* the same ``train_step`` runs inside ``model.fit`` (default and mirrored strategies) and inside
  the custom ``strategy.run`` loop used for ``MultiWorkerMirroredStrategy``.

The GPT itself stays a plain GPT: save it with ``trainer.gpt.save(...)``.

Example:
    >>> from tfgpt.config import GPTConfig
    >>> from tfgpt.model.gpt import GPT
    >>> from tfgpt.train.config import TrainConfig
    >>> from tfgpt.train.optim import make_optimizer
    >>> gpt = GPT(GPTConfig.preset("char-small")); gpt.build((None, 64))
    >>> trainer = GPTTrainer(gpt, grad_accum_steps=2, grad_clip=1.0)
    >>> trainer.compile(optimizer=make_optimizer(TrainConfig(), gpt), jit_compile=True)
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfgpt.model.gpt import GPT


def token_cross_entropy(logits: Any, targets: Any) -> Any:
    """Mean next-token cross-entropy (float32) of logits ``[b, t, v]`` against ids ``[b, t]``."""
    per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(targets, tf.int32), logits=tf.cast(logits, tf.float32)
    )
    return tf.reduce_mean(per_token)


def _dense(g: Any, v: Any) -> Any:
    if g is None:
        return tf.zeros(v.shape, v.dtype)
    return tf.convert_to_tensor(g)


@keras.saving.register_keras_serializable(package="tfgpt")
class GPTTrainer(keras.Model):
    """Training wrapper around a GPT (see the module docstring).

    Args:
        gpt: the model to train.
        grad_accum_steps: micro-batches per optimizer step; the batch size given to ``fit`` is
            ``micro_batch * grad_accum_steps`` (per replica it must divide by it too).
        grad_clip: global-norm clipping threshold (0 disables).
        fuse_steps: with ``jit_compile`` and ``steps_per_execution`` > 1 on one replica, run the
            steps of one execution in a single XLA loop (see :meth:`make_train_function`).

    ``train_step`` returns ``{"loss", "grad_norm", "lr"}``, already averaged over replicas;
    ``test_step`` returns ``{"loss"}``; ``evaluate`` (and ``fit``'s ``val_loss``) report its mean over the batches.
    """

    def __init__(
        self, gpt: GPT, grad_accum_steps: int = 1, grad_clip: float = 1.0, fuse_steps: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.fuse_steps = bool(fuse_steps)
        self.gpt = gpt
        self.grad_accum_steps = int(grad_accum_steps)
        self.grad_clip = float(grad_clip)

    def call(self, token_ids: Any, training: bool | None = None) -> Any:
        return self.gpt(token_ids, training=training)

    def build(self, input_shape: tuple = (None, None)) -> None:
        if not self.gpt.built:
            self.gpt.build(input_shape)
        self.built = True

    # -- the step ------------------------------------------------------------------------

    def _micro_grads(self, x: Any, y: Any, scale: float) -> tuple[list[Any], Any]:
        variables = self.gpt.trainable_variables
        with tf.GradientTape() as tape:
            loss = token_cross_entropy(self.gpt(x, training=True), y)
            scaled = loss * scale
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                scaled = self.optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, [v.value for v in variables])
        return [_dense(g, v) for g, v in zip(grads, variables, strict=True)], loss

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y = data
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        accum = self.grad_accum_steps
        scale = 1.0 / (accum * replicas)
        variables = self.gpt.trainable_variables
        if accum == 1:
            grads, loss_sum = self._micro_grads(x, y, scale)
        else:
            seq = tf.shape(x)[1]
            xs = tf.reshape(x, (accum, -1, seq))
            ys = tf.reshape(y, (accum, -1, seq))

            def body(i: Any, acc: list[Any], loss_acc: Any) -> tuple[Any, list[Any], Any]:
                g, loss = self._micro_grads(xs[i], ys[i], scale)
                return i + 1, [a + b for a, b in zip(acc, g, strict=True)], loss_acc + loss

            zeros = [tf.zeros(v.shape, v.dtype) for v in variables]
            _, grads, loss_sum = tf.while_loop(
                lambda i, *_: i < accum, body, (tf.constant(0), zeros, tf.constant(0.0)),
                parallel_iterations=1,
            )
        loss_sum = loss_sum * scale  # this replica's share of the mean loss
        if ctx is not None and replicas > 1:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            loss_sum = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss_sum)
        loss_scale = 1.0
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            loss_scale = tf.cast(self.optimizer.dynamic_scale, tf.float32)
        grad_norm = tf.linalg.global_norm(grads) / loss_scale
        if self.grad_clip > 0:
            factor = tf.minimum(1.0, self.grad_clip / tf.maximum(grad_norm, 1e-12))
            factor = tf.where(tf.math.is_finite(grad_norm), factor, 1.0)
            grads = [g * factor for g in grads]
        if replicas > 1:
            # The Keras optimizer sums gradients across replicas again: hand it each replica's share.
            grads = [g / replicas for g in grads]
        lr = tf.cast(self.optimizer.learning_rate, tf.float32)
        step_before = None
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            step_before = tf.identity(self.optimizer.iterations.value)
        self.optimizer.apply(grads, variables)
        if step_before is not None:
            # The loss-scale optimizer skips an overflowing update and its step count with it; a train
            # step still counts as one step, so the schedule, logs, checkpoints and data position agree.
            self.optimizer.iterations.assign(step_before + 1)
        return {"loss": loss_sum, "grad_norm": grad_norm, "lr": lr}

    # -- steps_per_execution > 1 under XLA: the whole run of steps in one compiled loop ------

    def _fusable(self) -> bool:
        strat = self.distribute_strategy
        return (
            self.fuse_steps and bool(self.jit_compile) and not self.run_eagerly and self.steps_per_execution > 1
            and strat.num_replicas_in_sync == 1
            and not isinstance(strat, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))
        )

    def make_train_function(self, force: bool = False) -> Any:
        """Keras' train function, or with XLA and ``steps_per_execution`` N > 1 a fused one.

        Keras runs N steps as a graph ``while_loop`` calling the XLA step N times (an executor
        round trip, an iterator ``get_next`` and an ``Optional`` per step). The fused function
        fetches the N batches first and runs all N optimizer steps in one XLA computation; the
        logs are those of the last step, as with Keras. Used on single-replica strategies only.
        """
        if self.train_function is not None and not force:
            return self.train_function
        if not self._fusable():
            return super().make_train_function(force)
        n = int(self.steps_per_execution)
        strat = self.distribute_strategy

        @tf.function(jit_compile=True, reduce_retracing=True)
        @tf.autograph.experimental.do_not_convert
        def run_steps(xs: Any, ys: Any) -> dict[str, Any]:
            def body(i: Any, logs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
                out = strat.run(self.train_step, args=((xs[i], ys[i]),))
                return i + 1, {k: tf.cast(v, tf.float32) for k, v in out.items()}

            zeros = {k: tf.zeros((), tf.float32) for k in ("loss", "grad_norm", "lr")}
            _, logs = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), zeros), parallel_iterations=1)
            return logs

        @tf.function
        @tf.autograph.experimental.do_not_convert
        def fetch(iterator: Any) -> tuple[Any, Any]:
            x_spec, y_spec = iterator.element_spec

            def body(i: Any, xa: Any, ya: Any) -> tuple[Any, Any, Any]:
                x, y = iterator.get_next()
                return i + 1, xa.write(i, x), ya.write(i, y)

            arrays = (tf.TensorArray(x_spec.dtype, size=n), tf.TensorArray(y_spec.dtype, size=n))
            _, xa, ya = tf.while_loop(lambda i, *_: i < n, body, (tf.constant(0), *arrays))
            return xa.stack(), ya.stack()

        def function(iterator: Any) -> dict[str, Any]:
            xs, ys = fetch(iterator)
            return run_steps(xs, ys)

        self.train_function = function
        return function

    def test_step(self, data: Any) -> dict[str, Any]:
        x, y = data
        loss = token_cross_entropy(self.gpt(x, training=False), y)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            loss = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, loss)
        # Keras reports its compiled "loss" tracker's mean when the keys match: unfed, evaluate() said 0.0
        self._loss_tracker.update_state(loss)
        return {"loss": loss}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "gpt": keras.saving.serialize_keras_object(self.gpt),
            "grad_accum_steps": self.grad_accum_steps,
            "grad_clip": self.grad_clip,
            "fuse_steps": self.fuse_steps,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GPTTrainer:
        config = dict(config)
        gpt = keras.saving.deserialize_keras_object(config.pop("gpt"))
        return cls(gpt, **config)
