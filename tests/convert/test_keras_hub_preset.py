"""A local keras-hub GPT-2 preset dir: recognised by its config.json, loaded with from_preset, converted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.convert.gpt2_files import CTX, keras_hub_logits, tiny_tokenizer, write_keras_hub
from tfgpt.convert.keras_hub_preset import is_keras_hub_config, read_keras_hub_preset
from tfgpt.errors import ConvertError


def test_read_preset(tmp_path):
    backbone = write_keras_hub(tmp_path / "p", tiny_tokenizer(), seed=7)
    ckpt = read_keras_hub_preset(tmp_path / "p")
    ids = list(range(10))
    got = np.asarray(ckpt.model(np.array([ids], "int32")))[0]
    assert np.abs(got - keras_hub_logits(backbone, ids)).max() <= 1e-4
    assert ckpt.layout == "keras-hub-preset" and ckpt.model.config.block_size == CTX
    assert ckpt.hyperparameters["num_layers"] == 2 and ckpt.weights_file == tmp_path / "p" / "model.weights.h5"


def test_recognises_keras_hub_configs():
    assert is_keras_hub_config({"class_name": "GPT2Backbone", "config": {}})
    assert not is_keras_hub_config({"model_type": "gpt2", "n_embd": 8})


def test_refusals(tmp_path):
    write_keras_hub(tmp_path / "p", tiny_tokenizer())
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    cfg["config"]["intermediate_dim"] = 20
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConvertError, match="model.weights.h5: could not load the preset"):
        read_keras_hub_preset(tmp_path / "p")  # the weights no longer fit the config
    (tmp_path / "p" / "model.weights.h5").unlink()
    with pytest.raises(ConvertError, match="model.weights.h5: missing"):
        read_keras_hub_preset(tmp_path / "p")
