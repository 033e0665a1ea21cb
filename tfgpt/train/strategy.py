"""Choosing a ``tf.distribute`` strategy, and which training path each one takes.

=================  =============================================  ==============================
strategy           what it is                                     training path
=================  =============================================  ==============================
``default``        one device (CPU or one GPU)                    ``model.fit`` (XLA on)
``mirrored``       ``MirroredStrategy`` over the local devices    ``model.fit``; XLA off on CPU
                   (GPUs, or logical CPU devices)                 (XLA cannot reach variables on
                                                                  other logical CPU devices)
``multiworker``    ``MultiWorkerMirroredStrategy`` from           custom loop: ``strategy.run``
                   ``TF_CONFIG``                                  of the same ``train_step`` in
                                                                  a ``tf.function`` (Keras 3's
                                                                  ``fit`` fails, keras#20585)
=================  =============================================  ==============================

Example:
    >>> strategy = get_strategy("default")
    >>> strategy.num_replicas_in_sync
    1
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from tfgpt.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multiworker")


def get_strategy(name: str = "default") -> tf.distribute.Strategy:
    """The strategy called ``name`` (one of :data:`STRATEGIES`)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError("--strategy multiworker needs the TF_CONFIG environment variable (cluster + task)")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as e:
            raise ConfigError(f"TF_CONFIG is not valid JSON: {e}") from None
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise ConfigError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}")


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, logs and the final model."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not has_chief and resolver.task_type == "worker" and (resolver.task_id or 0) == 0


def on_cpu_only(strategy: tf.distribute.Strategy) -> bool:
    devices: Any = getattr(strategy.extended, "worker_devices", ()) or ()
    return not any("GPU" in str(d).upper() for d in devices) and not tf.config.list_logical_devices("GPU")
