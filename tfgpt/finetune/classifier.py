"""``GPTClassifier``: a GPT backbone whose last real token's hidden state feeds an N-class head.

The backbone's LM head is not used: ``GPT.hidden_states`` gives the final-LayerNorm states
``[batch, time, n_embd]``, the vector at each row's last non-pad position is taken, and a
``Dense(num_classes)`` maps it to logits. Rows are right-padded with ``pad_id`` (the tokenizer's
end-of-text id); causal attention means the pads never change the real tokens' states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from tfgpt.model.gpt import GPT


def last_token_index(token_ids: Any, pad_id: int) -> Any:
    """Index ``[batch]`` of each row's last token that is not ``pad_id`` (0 for an all-pad row).

    Example:
        >>> import numpy as np
        >>> np.asarray(last_token_index(np.array([[5, 6, 0, 0], [7, 0, 8, 9]]), pad_id=0)).tolist()
        [1, 3]
    """
    token_ids = ops.cast(token_ids, "int32")
    positions = ops.arange(ops.shape(token_ids)[1], dtype="int32")[None, :]  # [1, time]
    real = ops.where(ops.not_equal(token_ids, pad_id), positions, -1)  # [batch, time]
    return ops.maximum(ops.max(real, axis=1), 0)


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, length: int | None = None) -> np.ndarray:
    """Right-pad token rows with ``pad_id`` to ``length`` (default: the longest row), int32.

    Example:
        >>> pad_batch([[1, 2, 3], [4]], pad_id=0).tolist()
        [[1, 2, 3], [4, 0, 0]]
    """
    length = length or max(len(r) for r in rows)
    out = np.full((len(rows), length), pad_id, dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row[:length]
    return out


def batch_width(rows: Sequence[Sequence[int]], max_width: int, bucket: bool = False) -> int:
    """The width a batch is padded to: its longest row (at least 1), or with ``bucket`` (XLA, which
    compiles once per width) the next power of two from 8, capped at ``max_width`` (the block size).

    Example:
        >>> batch_width([[1, 2, 3], [4]], 64), batch_width([[1] * 9], 64, bucket=True), batch_width([[1]] , 4, True)
        (3, 16, 4)
    """
    width = max([len(r) for r in rows] + [1])
    if bucket:
        width = max(8, 1 << (width - 1).bit_length())
    return min(width, max_width)


def batch_dataset(rows: Sequence[Sequence[int]], labels: np.ndarray, order: np.ndarray, batch_size: int,
                  pad_id: int, max_width: int, bucket: bool = False) -> Any:
    """``tf.data`` of ``(ids [batch, width], class ids [batch])``: the rows in ``order``, cut into batches,
    each right-padded with ``pad_id`` to its own :func:`batch_width` (not the split's longest row)."""
    import tensorflow as tf

    batches = []
    for start in range(0, len(order), batch_size):
        picked = [rows[i] for i in order[start : start + batch_size]]
        batches.append((pad_batch(picked, pad_id, batch_width(picked, max_width, bucket)),
                        np.asarray(labels)[order[start : start + batch_size]].astype(np.int32)))
    spec = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None,), tf.int32))
    ds = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=spec)
    return ds.apply(tf.data.experimental.assert_cardinality(len(batches)))


@keras.saving.register_keras_serializable(package="tfgpt")
class GPTClassifier(keras.Model):
    """Classify token rows ``[batch, time]`` into ``num_classes`` logits ``[batch, num_classes]``.

    ``call(token_ids, lengths=None)``: with ``lengths`` the vector at ``lengths - 1`` is pooled,
    else the last position whose id is not ``pad_id``.

    Example:
        >>> import numpy as np
        >>> clf = GPTClassifier(GPT(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8), 3, pad_id=0)
        >>> tuple(clf(np.array([[1, 2, 0]])).shape)
        (1, 3)
    """

    def __init__(self, backbone: GPT | dict, num_classes: int, pad_id: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.pad_id = int(pad_id)
        self.head = keras.layers.Dense(
            self.num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=backbone.dtype_policy, name="classifier_head",
        )

    def build(self, input_shape: tuple = (None, None)) -> None:
        if not self.backbone.built:
            self.backbone.build(input_shape)
        if not self.head.built:
            self.head.build((None, self.backbone.config.n_embd))
        self.built = True

    def call(self, token_ids: Any, lengths: Any = None, training: bool | None = None) -> Any:
        hidden, _ = self.backbone.hidden_states(token_ids, training=training)  # [batch, time, n_embd]
        if lengths is None:
            index = last_token_index(token_ids, self.pad_id)
        else:
            index = ops.maximum(ops.cast(lengths, "int32") - 1, 0)
        pooled = ops.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0, :]  # [batch, n_embd]
        return ops.cast(self.head(pooled), "float32")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.num_classes)

    def get_config(self) -> dict[str, Any]:
        base = super().get_config()
        base.pop("trainable", None)
        return {
            **base,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "pad_id": self.pad_id,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GPTClassifier:
        return cls(**config)
