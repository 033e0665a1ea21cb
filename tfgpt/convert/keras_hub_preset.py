"""A keras-hub GPT-2 preset saved to a local directory (``GPT2Backbone.save_to_preset``).

The layout: ``config.json`` naming ``keras_hub>GPT2Backbone``, ``model.weights.h5``,
``metadata.json``, and the tokenizer's ``tokenizer.json`` + ``assets/tokenizer/vocabulary.json`` /
``merges.txt``. The class in ``config.json`` is checked before anything is deserialized; the
backbone loads with ``keras_hub.models.Backbone.from_preset(dir)`` (a local path: no network) and
converts with :func:`tfgpt.convert.keras_hub.from_keras_hub`.

Example:
    >>> ckpt = read_keras_hub_preset("presets/gpt2_base_en")  # doctest: +SKIP
    >>> ckpt.layout  # doctest: +SKIP
    'keras-hub-preset'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tfgpt.convert.files import Checkpoint, one_line
from tfgpt.convert.hf import read_json
from tfgpt.convert.keras_hub import from_keras_hub
from tfgpt.errors import ConvertError

CONFIG_JSON = "config.json"
WEIGHTS_H5 = "model.weights.h5"
METADATA_JSON = "metadata.json"
#: the tokenizer files a GPT2Tokenizer preset holds (GPT-2's encoder.json / vocab.bpe under other names)
TOKENIZER_ASSETS = ("assets/tokenizer/vocabulary.json", "assets/tokenizer/merges.txt")
_REGISTERED = "keras_hub>GPT2Backbone"

__all__ = ["is_keras_hub_config", "read_keras_hub_preset", "TOKENIZER_ASSETS"]


def is_keras_hub_config(config: dict[str, Any]) -> bool:
    """Whether a ``config.json``'s content is a keras-hub serialized object (not an HF config)."""
    return "registered_name" in config or "class_name" in config


def _check_class(config: dict[str, Any], path: Path) -> None:
    name = config.get("registered_name") or config.get("class_name")
    if name not in (_REGISTERED, "GPT2Backbone"):
        raise ConvertError(f"{path}: a keras-hub {name!r} preset; only GPT2Backbone presets are GPT-2")


def read_keras_hub_preset(directory: str | os.PathLike) -> Checkpoint:
    """Read a local keras-hub GPT-2 preset dir into a :class:`Checkpoint`."""
    import keras_hub

    directory = Path(directory)
    config_path, weights = directory / CONFIG_JSON, directory / WEIGHTS_H5
    raw = read_json(config_path)
    _check_class(raw, config_path)
    if not weights.is_file():
        raise ConvertError(f"{weights}: missing (a keras-hub preset keeps its weights there)")
    try:
        backbone = keras_hub.models.Backbone.from_preset(str(directory))
    except Exception as e:  # noqa: BLE001 - keras/h5py raise many types; name the file
        raise ConvertError(f"{weights}: could not load the preset ({one_line(e)})") from None
    try:
        model = from_keras_hub(backbone)
    except (TypeError, ValueError) as e:
        raise ConvertError(f"{config_path}: {one_line(e)}") from None
    files = [config_path, weights, *([directory / METADATA_JSON] if (directory / METADATA_JSON).is_file() else [])]
    return Checkpoint("keras-hub-preset", model, files, dict(raw.get("config", {})), directory, weights)
