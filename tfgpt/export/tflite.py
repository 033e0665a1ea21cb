"""TFLite / LiteRT export: ``prefill`` and ``decode`` signatures with an explicit KV cache.

Signatures (batch 1, TFLite builtin ops only; prefill returns the cache as ``[1, n_layer, 2,
block_size, n_embd]``; decode takes it with any length ≤ block_size in dim 3, so a runner can crop it
to the positions a request needs — decode reads and copies the whole cache every step):

``prefill``
    ``ids`` int32 ``[1, time]`` (1 ≤ time ≤ block_size; resize the input per prompt) →
    ``logits`` float32 ``[1, vocab]`` (last position), ``cache``.
``decode``
    ``token`` int32 ``[1, 1]``, ``index`` int32 ``[]`` (its position, < the cache length), ``cache``
    ``[1, n_layer, 2, length, n_embd]`` → ``logits`` float32 ``[1, vocab]``, ``cache`` (same length).

The signatures' cache layout is a contract with device runners and stays as above; inside the
graph it is converted to the model's own per-layer, heads-first ``[1, 2, n_head, length, head_dim]``.

``model_int8.tflite`` is the same graph with dynamic-range int8 weights
(``tf.lite.Optimize.DEFAULT`` without a representative dataset).

Example:
    >>> sizes = convert_tflite(model, "export/tflite", quantize="int8")  # doctest: +SKIP
    >>> flex_ops("export/tflite/model.tflite")  # doctest: +SKIP
    []
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import tensorflow as tf
from tensorflow.python.trackable.data_structures import NoDependency

from tfgpt.atomic import write_bytes_atomic
from tfgpt.errors import ExportError

FLOAT_FILE = "model.tflite"
INT8_FILE = "model_int8.tflite"


class TFLiteModule(tf.Module):
    """Prefill/decode functions over a tfgpt GPT, for the TFLite converter."""

    def __init__(self, model: Any) -> None:
        super().__init__(name="tfgpt_tflite")
        if not model.built:
            model.build((None, None))
        # Not tracked: Keras variables would be saved a second time under model/..., doubling
        # the variables file and the memory a loader restores; self.vars holds them once.
        self.model = NoDependency(model)
        self.vars = [v.value for v in model.variables]
        c = model.config
        self.cache_shape = [1, int(c.n_layer), 2, int(c.block_size), int(c.n_embd)]
        self.n_head, self.head_dim = int(c.n_head), int(c.head_dim)
        # The model's own cache layout (per layer, heads-first); the signatures convert to cache_shape.
        self.layer_cache_shape = [1, 2, self.n_head, int(c.block_size), self.head_dim]
        self.prefill = tf.function(
            self._prefill, input_signature=[tf.TensorSpec([1, None], tf.int32, name="ids")]
        )
        self.decode = tf.function(
            self._decode,
            input_signature=[
                tf.TensorSpec([1, 1], tf.int32, name="token"),
                tf.TensorSpec([], tf.int32, name="index"),
                tf.TensorSpec(self.cache_shape[:3] + [None] + self.cache_shape[4:], tf.float32, name="cache"),
            ],
        )

    def _prefill(self, ids: tf.Tensor) -> dict[str, tf.Tensor]:
        # A zero cache filled at run time: ``tf.zeros`` would be constant-folded into a
        # [1, n_layer, 2, block_size, n_embd] float buffer stored in the file (75 MB for gpt2, in
        # the int8 file too). ``x * 0.0`` is not folded (IEEE: inf/NaN), so FILL stays an op.
        zero = tf.cast(ids[0, 0], tf.float32) * 0.0
        caches = [tf.fill(self.layer_cache_shape, zero) for _ in range(self.cache_shape[1])]
        hidden, caches = self.model.hidden_states(ids, cache=caches, cache_index=tf.constant(0, tf.int32))
        logits = self.model.logits_from_hidden(hidden[:, -1:, :])
        return {"logits": tf.reshape(logits, [1, -1]), "cache": self._external_cache(caches)}

    def _decode(self, token: tf.Tensor, index: tf.Tensor, cache: tf.Tensor) -> dict[str, tf.Tensor]:
        # Per-layer caches inside the graph: each layer's DYNAMIC_UPDATE_SLICE then writes its own
        # [1, 2, n_head, length, head_dim] buffer instead of the whole 5-D cache (n_layer full copies a step).
        hidden, caches = self.model.hidden_states(token, cache=self._model_cache(cache), cache_index=index)
        logits = self.model.logits_from_hidden(hidden)
        return {"logits": tf.reshape(logits, [1, -1]), "cache": self._external_cache(caches)}

    # -- the signature's cache layout <-> the model's -------------------------------------------

    def _model_cache(self, cache: tf.Tensor) -> list[tf.Tensor]:
        """``[1, n_layer, 2, length, n_embd]`` → ``n_layer`` × ``[1, 2, n_head, length, head_dim]``."""
        layers = tf.unstack(cache, axis=1)  # n_layer × [1, 2, length, n_embd]
        split = [tf.reshape(c, [1, 2, -1, self.n_head, self.head_dim]) for c in layers]  # [1, 2, length, h, d]
        return [tf.transpose(c, [0, 1, 3, 2, 4]) for c in split]  # [1, 2, n_head, length, head_dim]

    def _external_cache(self, caches: list[tf.Tensor]) -> tf.Tensor:
        """``n_layer`` × ``[1, 2, n_head, length, head_dim]`` → ``[1, n_layer, 2, length, n_embd]``."""
        time_first = [tf.transpose(c, [0, 1, 3, 2, 4]) for c in caches]  # [1, 2, length, n_head, head_dim]
        layers = [tf.reshape(c, [1, 2, -1, self.cache_shape[4]]) for c in time_first]  # [1, 2, length, n_embd]
        return tf.stack(layers, axis=1)  # [1, n_layer, 2, length, n_embd]


def _convert(saved_dir: str, quantize: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir, signature_keys=["prefill", "decode"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # fails on any Flex op
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises ConverterError and others
        raise ExportError(f"TFLite conversion (builtins only) failed: {type(e).__name__}: {e}") from None


def convert_tflite(model: Any, out_dir: str | os.PathLike, quantize: str | None = "int8") -> dict[str, int]:
    """Write ``model.tflite`` (and ``model_int8.tflite`` when ``quantize == "int8"``) into ``out_dir``.

    Returns ``{file name: size in bytes}``.

    Example:
        >>> convert_tflite(model, "export/tflite")  # doctest: +SKIP
        {'model.tflite': 412345, 'model_int8.tflite': 123456}
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = TFLiteModule(model)
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="tfgpt_tflite_") as tmp:
        tf.saved_model.save(module, tmp, signatures={"prefill": module.prefill, "decode": module.decode})
        write_bytes_atomic(out / FLOAT_FILE, _convert(tmp, quantize=False))
        sizes[FLOAT_FILE] = (out / FLOAT_FILE).stat().st_size
        if quantize == "int8":
            write_bytes_atomic(out / INT8_FILE, _convert(tmp, quantize=True))
            sizes[INT8_FILE] = (out / INT8_FILE).stat().st_size
    return sizes


def op_names(tflite_path: str | os.PathLike) -> list[str]:
    """The distinct operator names in a ``.tflite`` file (builtin names, or the custom op name)."""
    from tfgpt.export.tflite_runner import make_interpreter

    interp = make_interpreter(tflite_path)
    return sorted({d["op_name"] for d in interp._get_ops_details()})  # noqa: SLF001 - only way to list ops


def flex_ops(tflite_path: str | os.PathLike) -> list[str]:
    """Ops that are not TFLite builtins (Flex/Select TF ops, custom ops) — empty for a builtins-only model."""
    return [name for name in op_names(tflite_path) if name.startswith("Flex") or name == "CUSTOM"]
