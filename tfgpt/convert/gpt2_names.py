"""The one place that knows GPT-2's tensor names and shapes, and how they map onto a tfgpt GPT.

Names are Hugging Face's, without the ``transformer.`` prefix; weights of Conv1D layers are
``[in, out]``, the layout of tfgpt's Dense kernels, so every tensor copies over unchanged:

==================================  ======================  ===============================
GPT-2 name                          shape                   tfgpt weight
==================================  ======================  ===============================
``wte.weight`` / ``wpe.weight``     [vocab, d] / [ctx, d]   ``wte`` / ``wpe`` embeddings
``h.{i}.ln_1.weight`` / ``.bias``   [d]                     ``blocks[i].ln_1`` gamma / beta
``h.{i}.attn.c_attn.weight``        [d, 3d] (q, k, v)       ``blocks[i].attn.c_attn`` kernel
``h.{i}.attn.c_proj.weight``        [d, d]                  ``blocks[i].attn.c_proj`` kernel
``h.{i}.ln_2.*``                    [d]                     ``blocks[i].ln_2``
``h.{i}.mlp.c_fc.weight``           [d, 4d]                 ``blocks[i].mlp.c_fc`` kernel
``h.{i}.mlp.c_proj.weight``         [4d, d]                 ``blocks[i].mlp.c_proj`` kernel
``ln_f.weight`` / ``.bias``         [d]                     ``ln_f``
==================================  ======================  ===============================

(every ``.weight`` of a linear layer has a ``.bias`` of its output width). The head is tied to
``wte``: GPT-2 has no ``lm_head.weight`` of its own.

Example:
    >>> from tfgpt.config import GPTConfig
    >>> from tfgpt.model import GPT
    >>> model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=8))
    >>> tensors = gpt2_state_dict(model)
    >>> tensors["h.0.attn.c_attn.weight"].shape
    (8, 24)
    >>> again = model_from_gpt2_state_dict(tensors, model.config, "memory")
    >>> bool((gpt2_state_dict(again)["wte.weight"] == tensors["wte.weight"]).all())
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from tfgpt.config import GPTConfig
from tfgpt.errors import ConvertError
from tfgpt.model.gpt import GPT

__all__ = ["expected_shapes", "gpt2_state_dict", "model_from_gpt2_state_dict", "check_gpt2_expressible"]

_LINEAR = (("attn.c_attn", 3), ("attn.c_proj", 1), ("mlp.c_fc", 4))  # name, output width in units of d


def expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """``{GPT-2 name: shape}`` of every weight a GPT-2 of ``config``'s shape has, in file order.

    Example:
        >>> shapes = expected_shapes(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=8))
        >>> len(shapes), shapes["h.0.mlp.c_proj.weight"]
        (16, (32, 8))
    """
    d = config.n_embd
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (config.vocab_size, d), "wpe.weight": (config.block_size, d)}
    for i in range(config.n_layer):
        p = f"h.{i}."
        shapes[p + "ln_1.weight"] = shapes[p + "ln_1.bias"] = (d,)
        for name, width in _LINEAR:
            shapes[f"{p}{name}.weight"], shapes[f"{p}{name}.bias"] = (d, width * d), (width * d,)
        shapes[p + "ln_2.weight"] = shapes[p + "ln_2.bias"] = (d,)
        shapes[p + "mlp.c_proj.weight"], shapes[p + "mlp.c_proj.bias"] = (4 * d, d), (d,)
    shapes["ln_f.weight"] = shapes["ln_f.bias"] = (d,)
    return shapes


def check_gpt2_expressible(config: GPTConfig, what: str) -> None:
    """Raise :class:`ConvertError` naming the first option a GPT-2 checkpoint cannot hold."""
    if config.norm != "pre":
        raise ConvertError(f"{what}: model.norm={config.norm!r}: GPT-2 has pre-LN blocks only (norm='pre')")
    if not config.bias:
        raise ConvertError(f"{what}: model.bias=False: GPT-2's linear and LayerNorm layers all have biases")
    if not config.tie_embeddings:
        raise ConvertError(f"{what}: model.tie_embeddings=False: GPT-2's head is tied to wte (no lm_head.weight)")


def _weights(model: GPT) -> dict[str, Any]:
    """``{GPT-2 name: tfgpt variable}`` of a built, GPT-2-shaped model."""
    out: dict[str, Any] = {"wte.weight": model.wte.embeddings, "wpe.weight": model.wpe.embeddings}
    for i, block in enumerate(model.blocks):
        p = f"h.{i}."
        for name, ln in (("ln_1", block.ln_1), ("ln_2", block.ln_2)):
            out[f"{p}{name}.weight"], out[f"{p}{name}.bias"] = ln.gamma, ln.beta
        for name, dense in (("attn.c_attn", block.attn.c_attn), ("attn.c_proj", block.attn.c_proj),
                            ("mlp.c_fc", block.mlp.c_fc), ("mlp.c_proj", block.mlp.c_proj)):
            out[f"{p}{name}.weight"], out[f"{p}{name}.bias"] = dense.kernel, dense.bias
    out["ln_f.weight"], out["ln_f.bias"] = model.ln_f.gamma, model.ln_f.beta
    return out


def gpt2_state_dict(model: GPT) -> dict[str, np.ndarray]:
    """The model's weights as GPT-2 tensors (HF names without ``transformer.``, Conv1D ``[in, out]``).

    Raises :class:`ConvertError` for a model GPT-2 cannot express (post-LN, no biases, untied head).
    """
    check_gpt2_expressible(model.config, "this model")
    if not model.built:
        model.build((None, None))
    return {name: np.asarray(keras.ops.convert_to_numpy(v)) for name, v in _weights(model).items()}


def _where(name: str, source: str, origin: Mapping[str, tuple[str, str]] | None) -> str:
    """``FILE: tensor NAME`` as the file spells it (``origin``: GPT-2 name -> (file, name in file))."""
    file, original = (origin or {}).get(name, (source, name))
    return f"{file}: tensor {original}"


def check_tensors(tensors: Mapping[str, Any], config: GPTConfig, source: str,
                  origin: Mapping[str, tuple[str, str]] | None = None, config_source: str | None = None) -> None:
    """Raise :class:`ConvertError` for the first missing, unexpected or misshapen tensor.

    ``source`` names the weights file; ``origin`` maps GPT-2 names to (file, name in file) where
    they differ (sharded files, prefixes, OpenAI names; a missing tensor is named by its entry
    too, where there is one); ``config_source`` names the file the
    hyper-parameters came from, so a shape error says which two files disagree.
    """
    shapes = expected_shapes(config)
    hp = f"n_layer={config.n_layer}, n_embd={config.n_embd}, vocab={config.vocab_size}, ctx={config.block_size}"
    by = f" ({config_source or 'the config'}: {hp})"
    for name in shapes:
        if name not in tensors:
            raise ConvertError(f"{_where(name, source, origin)} is missing (expected by a GPT-2 of{by[1:]}")
    for name in tensors:
        if name not in shapes:
            raise ConvertError(f"{_where(name, source, origin)} is unexpected: not a weight of a GPT-2 of{by[1:]}")
    for name, shape in shapes.items():
        got = tuple(np.shape(tensors[name]))
        if got != shape:
            raise ConvertError(f"{_where(name, source, origin)} has shape {list(got)}, expected {list(shape)}{by}")


def model_from_gpt2_state_dict(tensors: Mapping[str, Any], config: GPTConfig, source: str,
                               origin: Mapping[str, tuple[str, str]] | None = None,
                               config_source: str | None = None) -> GPT:
    """A built tfgpt ``GPT`` of ``config`` holding GPT-2 ``tensors`` (names as :func:`expected_shapes`).

    Every tensor is checked first (:func:`check_tensors`), so nothing half-loaded escapes; errors
    are one-line :class:`ConvertError`\\ s naming the file (``source``) and the tensor.
    """
    check_gpt2_expressible(config, source)
    check_tensors(tensors, config, source, origin, config_source)
    model = GPT(config)
    model.build((None, None))
    for name, variable in _weights(model).items():
        variable.assign(np.asarray(tensors[name], dtype="float32"))
    return model
