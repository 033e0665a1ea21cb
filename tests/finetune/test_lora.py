"""LoRA and freezing (tfgpt/finetune/lora.py): counts, merge on save, training, int8 + LoRA."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfgpt.config import GPTConfig
from tfgpt.errors import ConfigError
from tfgpt.finetune.lora import enable_lora_on, freeze, lora_dense_layers, param_counts, quantize_base
from tfgpt.model.gpt import GPT

V, T, L, C = 13, 8, 2, 16  # vocab, block, layers, width


def _gpt(seed: int = 0) -> GPT:
    keras.utils.set_random_seed(seed)
    gpt = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=2, n_embd=C))
    gpt.build((None, None))
    return gpt


def _batch(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, size=(8, T + 1)).astype("int32")
    return ids[:, :-1], ids[:, 1:]


def _train(model: keras.Model, steps: int = 8) -> list[float]:
    # jit_compile=False: on a model this small the XLA compile takes longer than the training
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    x, y = _batch()
    return [float(model.train_on_batch(x, y)) for _ in range(steps)]


def _randomize_lora(model: keras.Model) -> None:
    """LoRA B starts at zero; give it values so the merge has something to merge."""
    rng = np.random.default_rng(3)
    for layer in lora_dense_layers(model):
        layer.lora_kernel_b.assign(rng.normal(0, 0.1, layer.lora_kernel_b.shape).astype("float32"))


def test_lora_counts_are_rank_times_in_plus_out() -> None:
    gpt = _gpt()
    enable_lora_on(gpt, rank=4, alpha=8)
    freeze(gpt, "lora")
    # per block: c_attn C->3C, attn c_proj C->C, c_fc C->4C, mlp c_proj 4C->C
    per_block = 4 * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
    base = V * C + T * C + 2 * C + L * (2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C)
                                        + (C * 4 * C + 4 * C) + (4 * C * C + C))
    assert param_counts(gpt) == (L * per_block, base + L * per_block)
    assert L * per_block == 2048  # 2 blocks · rank 4 · (64 + 32 + 80 + 80)


def test_freeze_groups_count_by_hand() -> None:
    gpt = _gpt()
    block = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    head = 2 * C + V * C  # ln_f gamma/beta + tied wte
    total = V * C + T * C + 2 * C + L * block
    freeze(gpt, "head")
    assert param_counts(gpt) == (head, total)
    freeze(gpt, "last-block")
    assert param_counts(gpt) == (head + block, total)
    freeze(gpt, "all")
    assert param_counts(gpt) == (total, total)


def test_bad_rank_group_and_lora_without_rank() -> None:
    gpt = _gpt()
    for rank in (0, -2):
        with pytest.raises(ConfigError, match="--lora-rank must be a positive integer"):
            enable_lora_on(gpt, rank=rank)
    with pytest.raises(ConfigError, match="--trainable lora needs LoRA enabled"):
        freeze(gpt, "lora")
    with pytest.raises(ConfigError, match="--trainable must be one of"):
        freeze(gpt, "heads")
    with pytest.raises(ConfigError, match="--quantize must be int8 or int4"):
        quantize_base(gpt, "float8")
    with pytest.raises(ConfigError, match="a .backbone GPT"):
        freeze(keras.Sequential([keras.layers.Dense(2)]), "all")


def test_freeze_accepts_a_model_with_a_backbone() -> None:
    class Classifier(keras.Model):
        def __init__(self, backbone: GPT) -> None:
            super().__init__()
            self.backbone = backbone
            self.score = keras.layers.Dense(2, name="score")

        def call(self, ids: object) -> object:
            return self.score(self.backbone.hidden_states(ids)[0][:, -1])

    model = Classifier(_gpt())
    model(np.zeros((1, T), "int32"))
    total = param_counts(model)[1]
    freeze(model, "head")
    assert param_counts(model) == (C * 2 + 2, total)
    enable_lora_on(model, rank=1)
    freeze(model, "lora")
    assert param_counts(model)[0] == C * 2 + 2 + L * (4 * C + 2 * C + 5 * C + 5 * C)


def test_lora_trains_and_base_kernels_stay(tmp_path) -> None:
    gpt = _gpt()
    enable_lora_on(gpt, rank=4)
    freeze(gpt, "lora")
    frozen = {v.path: np.array(v) for v in gpt.weights if "lora" not in v.path}
    losses = _train(gpt)
    assert losses[-1] < losses[0] - 0.1
    for v in gpt.weights:
        if "lora" not in v.path:
            np.testing.assert_array_equal(np.array(v), frozen[v.path], err_msg=v.path)


def test_save_merges_lora_into_the_kernel(tmp_path) -> None:
    gpt = _gpt()
    enable_lora_on(gpt, rank=4, alpha=8)
    _randomize_lora(gpt)
    x, _ = _batch()
    want = np.array(gpt(x))
    assert np.abs(want - np.array(_gpt()(x))).max() > 1e-3  # LoRA changed the logits
    gpt.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(np.array(loaded(x)), want, atol=1e-5)
    assert not [v.path for v in loaded.weights if "lora" in v.path]
    assert not any(layer.lora_enabled for layer in lora_dense_layers(loaded))


def test_int8_base_with_lora_trains_and_round_trips(tmp_path) -> None:
    gpt = _gpt()
    quantize_base(gpt, "int8")
    enable_lora_on(gpt, rank=4)
    freeze(gpt, "lora")
    kernels = {v.path: np.array(v) for v in gpt.weights if v.path.endswith(("/kernel", "_scale"))}
    losses = _train(gpt)
    assert losses[-1] < losses[0] - 0.1
    for v in gpt.weights:
        if v.path in kernels:
            np.testing.assert_array_equal(np.array(v), kernels[v.path], err_msg=v.path)
    x, y = _batch()
    want = np.array(gpt(x))
    gpt.save(tmp_path / "q.keras")
    loaded = GPT(gpt.config)
    loaded.build((None, None))
    quantize_base(loaded, "int8")
    loaded.load_weights(tmp_path / "q.keras")
    got = np.array(loaded(x))
    # the saved kernel is LoRA merged and re-quantized: equal up to one int8 step, not 1e-5
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert abs(float(loss(y, got)) - losses[-1]) < 0.1
