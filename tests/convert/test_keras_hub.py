"""tfgpt GPT <-> keras-hub GPT2Backbone: same logits, same greedy tokens, exact weight round trip."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest

from tfgpt.config import GPTConfig
from tfgpt.convert import from_keras_hub, to_keras_hub
from tfgpt.generate import generate_ids
from tfgpt.model import GPT

SHAPE = dict(vocab_size=100, block_size=32, n_layer=2, n_head=4, n_embd=64)


def _random_gpt(seed: int = 0, **overrides: object) -> GPT:
    keras.utils.set_random_seed(seed)
    model = GPT(GPTConfig(**{**SHAPE, **overrides}))
    model.build((None, None))
    # Perturb LayerNorm gammas/betas and biases (initialised to 1/0) so every weight is exercised.
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "gamma" in v.path or "beta" in v.path or "bias" in v.path:
            v.assign(keras.ops.convert_to_numpy(v) + rng.normal(0, 0.1, tuple(v.shape)).astype("float32"))
    return model


def _np(x: object) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def _paths(model: keras.Model) -> list[str]:
    """Weight paths without the model's own (uniquified) name."""
    return [v.path.split("/", 1)[1] if v.path.startswith(model.name + "/") else v.path for v in model.weights]


def _hub_logits(backbone: keras_hub.models.GPT2Backbone, ids: np.ndarray) -> np.ndarray:
    hidden = backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    return keras.ops.convert_to_numpy(backbone.token_embedding(hidden, reverse=True))


def _greedy(model: GPT, prompt: np.ndarray, steps: int) -> np.ndarray:
    ids = prompt
    for _ in range(steps):
        logits = keras.ops.convert_to_numpy(model(ids))
        ids = np.concatenate([ids, logits[:, -1].argmax(-1)[:, None].astype("int32")], axis=1)
    return ids


@pytest.fixture(scope="module")
def model() -> GPT:
    return _random_gpt()


@pytest.fixture(scope="module")
def backbone(model: GPT) -> keras_hub.models.GPT2Backbone:
    return to_keras_hub(model)


@pytest.fixture(scope="module")
def ids() -> np.ndarray:
    return np.random.default_rng(1).integers(0, SHAPE["vocab_size"], (2, SHAPE["block_size"])).astype("int32")


def test_backbone_config(model: GPT, backbone: keras_hub.models.GPT2Backbone) -> None:
    assert isinstance(backbone, keras_hub.models.GPT2Backbone)
    assert (backbone.vocabulary_size, backbone.num_layers, backbone.num_heads, backbone.hidden_dim) == (
        100, 2, 4, 64,
    )
    assert backbone.intermediate_dim == 256 and backbone.max_sequence_length == 32
    config = backbone.get_config()
    assert {k: config[k] for k in ("vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim",
                                   "dropout", "max_sequence_length")} == {
        "vocabulary_size": 100, "num_layers": 2, "num_heads": 4, "hidden_dim": 64, "intermediate_dim": 256,
        "dropout": 0.0, "max_sequence_length": 32,
    }
    # The q/k/v kernels are the fused c_attn's column blocks, split into heads: [d, 3d] -> 3 x [d, heads, head_dim].
    c_attn = _np(model.blocks[0].attn.c_attn.kernel)
    key = _np(backbone.transformer_layers[0]._self_attention_layer.key_dense.kernel)
    np.testing.assert_array_equal(key, c_attn[:, 64:128].reshape(64, 4, 16))
    assert backbone.count_params() == GPTConfig(**SHAPE).num_params()


def test_to_keras_hub_logits_match(
    model: GPT, backbone: keras_hub.models.GPT2Backbone, ids: np.ndarray
) -> None:
    ours = keras.ops.convert_to_numpy(model(ids))
    theirs = _hub_logits(backbone, ids)
    assert ours.shape == theirs.shape == (2, 32, 100)
    assert np.abs(ours - theirs).max() <= 1e-4
    # The CausalLM task wrapper gives the same logits.
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm_logits = keras.ops.convert_to_numpy(lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
    assert np.abs(ours - lm_logits).max() <= 1e-4


def test_greedy_generation_matches(model: GPT, backbone: keras_hub.models.GPT2Backbone) -> None:
    steps, prompt_len = 20, 5
    prompt = np.array([[3, 14, 15, 92, 65], [2, 71, 82, 81, 8]], dtype="int32")
    expected = _greedy(model, prompt, steps)

    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy")
    total = prompt_len + steps
    token_ids = np.zeros((2, total), "int32")
    token_ids[:, :prompt_len] = prompt
    padding_mask = np.zeros((2, total), "int32")
    padding_mask[:, :prompt_len] = 1
    out = lm.generate({"token_ids": token_ids, "padding_mask": padding_mask}, stop_token_ids=None)
    np.testing.assert_array_equal(np.asarray(out["token_ids"]), expected)
    # tfgpt's cached, compiled decode loop gives the same tokens as keras-hub's generate.
    ours = generate_ids(model, prompt, steps, temperature=0)
    np.testing.assert_array_equal(ours, np.asarray(out["token_ids"])[:, prompt_len:])


def test_from_keras_hub_logits_match(backbone: keras_hub.models.GPT2Backbone, ids: np.ndarray) -> None:
    # A backbone made by keras-hub itself (its own random init), not by to_keras_hub.
    keras.utils.set_random_seed(3)
    hub = keras_hub.models.GPT2Backbone(
        vocabulary_size=100, num_layers=2, num_heads=4, hidden_dim=64, intermediate_dim=256,
        max_sequence_length=32, dropout=0.0,
    )
    rng = np.random.default_rng(3)
    for v in hub.weights:
        if "gamma" in v.path or "beta" in v.path or "bias" in v.path:
            v.assign(keras.ops.convert_to_numpy(v) + rng.normal(0, 0.1, tuple(v.shape)).astype("float32"))
    model = from_keras_hub(hub)
    assert model.config == GPTConfig(**SHAPE)
    ours = keras.ops.convert_to_numpy(model(ids))
    assert np.abs(ours - _hub_logits(hub, ids)).max() <= 1e-4
    # A GPT2CausalLM is accepted too.
    lm = keras_hub.models.GPT2CausalLM(backbone=hub, preprocessor=None)
    assert np.array_equal(keras.ops.convert_to_numpy(from_keras_hub(lm)(ids)), ours)


def test_round_trip_identical_weights(model: GPT, backbone: keras_hub.models.GPT2Backbone) -> None:
    again = from_keras_hub(backbone)
    assert again.config.to_dict() == {
        "vocab_size": 100, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 64, "dropout": 0.0,
        "bias": True, "norm": "pre", "tie_embeddings": True, "layer_norm_epsilon": 1e-5,
    }
    assert _paths(again) == _paths(model)
    for a, b in zip(model.weights, again.weights, strict=True):
        np.testing.assert_array_equal(_np(a), _np(b), err_msg=a.path)
    # And keras-hub -> tfgpt -> keras-hub is exact too.
    back = to_keras_hub(again)
    assert _paths(back) == _paths(backbone)
    for a, b in zip(backbone.weights, back.weights, strict=True):
        np.testing.assert_array_equal(_np(a), _np(b), err_msg=a.path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(norm="post"), "post-LN"),
        (dict(tie_embeddings=False), "lm_head"),
        (dict(bias=False), "bias-free"),
        (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
    ],
)
def test_incompatible_gpt_raises(overrides: dict, message: str) -> None:
    model = GPT(GPTConfig(**{**SHAPE, **overrides}))
    with pytest.raises(ValueError, match=message):
        to_keras_hub(model)


def test_incompatible_backbone_raises() -> None:
    hub = keras_hub.models.GPT2Backbone(
        vocabulary_size=100, num_layers=1, num_heads=4, hidden_dim=64, intermediate_dim=128,
        max_sequence_length=32, dropout=0.0,
    )
    with pytest.raises(ValueError, match="intermediate_dim"):
        from_keras_hub(hub)
    with pytest.raises(TypeError, match="GPT2Backbone"):
        from_keras_hub(GPT(GPTConfig(**SHAPE)))
    with pytest.raises(TypeError, match="GPT model"):
        to_keras_hub(hub)


_JAX_SCRIPT = """
import keras, numpy as np
from tfgpt.config import GPTConfig
from tfgpt.convert import from_keras_hub, to_keras_hub
from tfgpt.model import GPT
assert keras.backend.backend() == "jax", keras.backend.backend()
keras.utils.set_random_seed(0)
model = GPT(GPTConfig(vocab_size=100, block_size=32, n_layer=2, n_head=4, n_embd=64))
ids = np.random.default_rng(0).integers(0, 100, (2, 16)).astype("int32")
backbone = to_keras_hub(model)
hidden = backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
diff = np.abs(np.asarray(model(ids)) - np.asarray(backbone.token_embedding(hidden, reverse=True))).max()
assert diff <= 1e-4, diff
for a, b in zip(model.weights, from_keras_hub(backbone).weights, strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
print("JAX-OK", diff)
"""


def test_converts_on_jax_backend() -> None:
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "JAX-OK" in result.stdout, result.stderr[-3000:]
