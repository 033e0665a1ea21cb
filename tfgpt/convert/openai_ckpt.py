"""OpenAI's original GPT-2 TensorFlow checkpoint: ``hparams.json`` + ``model.ckpt.*``.

The variables are read one by one with ``tf.train.load_variable`` (no graph is built, nothing
is executed) and renamed to GPT-2's Hugging Face names (:mod:`tfgpt.convert.gpt2_names`):

=================================  ==============================
OpenAI variable                    GPT-2 name
=================================  ==============================
``model/wte``, ``model/wpe``       ``wte.weight``, ``wpe.weight``
``model/h{i}/ln_1/g`` / ``b``      ``h.{i}.ln_1.weight`` / ``bias``
``model/h{i}/attn/c_attn/w``       ``h.{i}.attn.c_attn.weight`` (``[1, in, out]`` -> ``[in, out]``)
``model/h{i}/mlp/c_fc/b``          ``h.{i}.mlp.c_fc.bias``
``model/ln_f/g`` / ``b``           ``ln_f.weight`` / ``bias``
=================================  ==============================

``hparams.json`` holds ``n_vocab``, ``n_ctx``, ``n_embd``, ``n_head``, ``n_layer``; LayerNorm epsilon is
GPT-2's 1e-5 (OpenAI's code hard-codes it).

Example:
    >>> ckpt = read_openai_ckpt("models/124M")  # doctest: +SKIP
    >>> ckpt.model.config.n_layer  # doctest: +SKIP
    12
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from tfgpt.config import GPTConfig
from tfgpt.convert.files import Checkpoint, one_line
from tfgpt.convert.gpt2_names import expected_shapes, model_from_gpt2_state_dict
from tfgpt.convert.hf import read_json
from tfgpt.errors import ConvertError

HPARAMS_JSON = "hparams.json"
_HPARAMS = {"n_vocab": "vocab_size", "n_ctx": "block_size", "n_embd": "n_embd", "n_head": "n_head",
            "n_layer": "n_layer"}
_BLOCK = re.compile(r"model/h(\d+)/(ln_1|ln_2|attn/c_attn|attn/c_proj|mlp/c_fc|mlp/c_proj)/(g|b|w)")
_TOP = {"model/wte": "wte.weight", "model/wpe": "wpe.weight", "model/ln_f/g": "ln_f.weight",
        "model/ln_f/b": "ln_f.bias"}
_SUFFIX = {"g": "weight", "w": "weight", "b": "bias"}

__all__ = ["read_openai_ckpt", "gpt2_name", "openai_name", "checkpoint_prefix", "HPARAMS_JSON"]


def gpt2_name(variable: str) -> str:
    """The GPT-2 name of an OpenAI variable (unknown names come back unchanged, to be reported).

    Example:
        >>> gpt2_name("model/h3/attn/c_attn/w"), gpt2_name("model/ln_f/g")
        ('h.3.attn.c_attn.weight', 'ln_f.weight')
    """
    if variable in _TOP:
        return _TOP[variable]
    m = _BLOCK.fullmatch(variable)
    if m is None:
        return variable
    return f"h.{m[1]}.{m[2].replace('/', '.')}.{_SUFFIX[m[3]]}"


def openai_name(name: str) -> str:
    """The OpenAI variable of a GPT-2 name (the inverse of :func:`gpt2_name`).

    Example:
        >>> openai_name("h.3.attn.c_attn.weight"), openai_name("h.0.ln_1.weight"), openai_name("wte.weight")
        ('model/h3/attn/c_attn/w', 'model/h0/ln_1/g', 'model/wte')
    """
    top = {v: k for k, v in _TOP.items()}
    if name in top:
        return top[name]
    _, i, *layer, leaf = name.split(".")  # h.{i}.{ln_1 | attn.c_attn ...}.{weight | bias}
    short = "b" if leaf == "bias" else ("g" if layer[0].startswith("ln") else "w")
    return f"model/h{i}/{'/'.join(layer)}/{short}"


def checkpoint_prefix(directory: Path) -> Path:
    """The checkpoint prefix in ``directory`` (``model.ckpt``): its ``checkpoint`` file's, else the one ``*.index``."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(directory))
    if latest is not None and Path(latest + ".index").is_file():
        return Path(latest)
    indexes = sorted(directory.glob("*.index"))
    if len(indexes) != 1:
        found = ", ".join(p.name for p in indexes) or "none"
        raise ConvertError(f"{directory}: expected one TF checkpoint (model.ckpt.index), found {found}")
    return indexes[0].with_suffix("")


def hparams_config(path: Path) -> tuple[GPTConfig, dict[str, Any]]:
    """The :class:`GPTConfig` of a ``hparams.json`` and the file's content."""
    raw = read_json(path)
    fields = {}
    for key, field in _HPARAMS.items():
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConvertError(f"{path}: {key} must be an integer, got {value!r}")
        fields[field] = value
    try:
        return GPTConfig(**fields, dropout=0.0, layer_norm_epsilon=1e-5), raw
    except ValueError as e:
        raise ConvertError(f"{path}: {e}") from None


def _load(prefix: Path) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, str]]]:
    """Every variable of the checkpoint under its GPT-2 name, ``[1, in, out]`` kernels squeezed."""
    import tensorflow as tf

    try:
        variables = tf.train.list_variables(str(prefix))
    except Exception as e:  # noqa: BLE001 - TF raises DataLossError, NotFoundError...; name the file
        raise ConvertError(f"{prefix}: unreadable TF checkpoint ({one_line(e)})") from None
    tensors, origin = {}, {}
    for variable, shape in variables:
        name = gpt2_name(variable)
        if variable.endswith("/w"):
            if len(shape) != 3 or shape[0] != 1:
                raise ConvertError(f"{prefix}: tensor {variable} has shape {list(shape)}, expected [1, in, out]")
        try:
            array = np.asarray(tf.train.load_variable(str(prefix), variable))
        except Exception as e:  # noqa: BLE001 - a damaged data file fails here
            raise ConvertError(f"{prefix}: tensor {variable} unreadable ({one_line(e)})") from None
        tensors[name] = array[0] if variable.endswith("/w") else array  # [1, in, out] -> [in, out]
        origin[name] = (str(prefix), variable)
    return tensors, origin


def read_openai_ckpt(directory: str | os.PathLike) -> Checkpoint:
    """Read OpenAI's GPT-2 checkpoint dir (``hparams.json`` + ``model.ckpt.*``) into a :class:`Checkpoint`."""
    directory = Path(directory)
    hparams_path = directory / HPARAMS_JSON
    config, raw = hparams_config(hparams_path)
    prefix = checkpoint_prefix(directory)
    tensors, origin = _load(prefix)
    origin = {name: (str(prefix), openai_name(name)) for name in expected_shapes(config)} | origin
    model = model_from_gpt2_state_dict(tensors, config, str(prefix), origin=origin, config_source=str(hparams_path))
    pieces = (prefix.name + ".index", prefix.name + ".data-")  # what load_variable reads (not the .meta graph)
    files = [hparams_path, *sorted(p for p in directory.iterdir() if p.name.startswith(pieces))]
    if (directory / "checkpoint").is_file():
        files.append(directory / "checkpoint")
    return Checkpoint("openai-tf-checkpoint", model, files, raw, directory, prefix)
