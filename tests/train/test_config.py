"""Train configs, overrides, the warmup-cosine schedule, AdamW exclusions and bad input (no training)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfgpt.config import GPTConfig
from tfgpt.errors import ConfigError
from tfgpt.model.gpt import GPT
from tfgpt.train.config import TrainConfig, resolve_config
from tfgpt.train.optim import WarmupCosine, make_optimizer, no_decay_variables
from tfgpt.train.perf import estimate_memory, flops_per_token

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["char-small", "shakespeare-char", "gpt2-124m", "tiny"])
def test_shipped_configs_resolve(name):
    model, train, data = resolve_config(CONFIGS / f"{name}.yaml")
    assert train.max_steps > 0 and data.tokenizer is not None
    if name == "char-small":
        assert (model.n_layer, model.n_head, model.n_embd, model.block_size, model.vocab_size) == (4, 4, 128, 64, 65)
        assert (train.batch_size, train.learning_rate, train.max_steps, model.dropout) == (12, 1e-3, 2000, 0.0)
    if name == "shakespeare-char":
        assert (model.n_layer, model.n_head, model.n_embd, model.block_size, train.batch_size) == (6, 6, 384, 256, 64)
    if name == "gpt2-124m":
        assert train.global_batch * model.block_size == 524288


def test_overrides_and_strict_keys():
    m, t, d = resolve_config({"model": {"preset": "char-small"}},
                             ["train.max_steps=7", "learning_rate=1e-2", "model.n_layer=2", "data.dir=x"])
    assert (t.max_steps, t.learning_rate, m.n_layer, d.dir) == (7, 0.01, 2, "x")
    with pytest.raises(ConfigError, match="unknown key 'max_step'.*valid keys"):
        resolve_config({"train": {"max_step": 5}})
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        resolve_config({"trian": {}})
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        resolve_config({}, ["train.nope=1"])
    with pytest.raises(ConfigError, match="must be int"):
        resolve_config({}, ["train.max_steps=abc"])
    with pytest.raises(ConfigError, match="min_lr"):
        resolve_config({"train": {"min_lr": 1.0, "learning_rate": 0.1}})


def test_file_and_set_read_values_alike(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {preset: char-small}\ntrain:\n  learning_rate: 6e-4\n  min_lr: 6E-5\n"
                   "  epsilon: 1.0e-9\n  sample_prompt: 'x'\n")
    _, t, _ = resolve_config(cfg)
    assert (t.learning_rate, t.min_lr, t.epsilon) == (6e-4, 6e-5, 1e-9)
    _, t2, _ = resolve_config(cfg, ["train.learning_rate=6e-4", "min_lr=6E-5", "train.epsilon=1.0e-9"])
    assert t2 == t
    cfg.write_text("train:\n  learning_rate: fast\n")
    with pytest.raises(ConfigError, match=r"c.yaml: train: key 'learning_rate' must be float, got str 'fast'"):
        resolve_config(cfg)
    # text fields keep the raw text; other fields are YAML scalars
    m, t, d = resolve_config({"data": {"dir": "x"}}, ["train.sample_prompt=ROMEO:", "data.tokenizer=yes",
                                                       "train.memory_check=off", "train.jit_compile=no",
                                                       "data.dir=null", "model.norm=post"])
    assert (t.sample_prompt, d.tokenizer, t.memory_check, t.jit_compile, d.dir, m.norm) == (
        "ROMEO:", "yes", "off", False, None, "post")
    for prompt in ("1.", "Hello: world", "[a, b]", "null", "", " two words "):
        assert resolve_config({}, [f"train.sample_prompt={prompt}"])[1].sample_prompt == prompt
    with pytest.raises(ConfigError, match="learning_rate must be a finite number"):
        resolve_config({}, ["train.learning_rate=.inf"])
    with pytest.raises(ConfigError, match="eval_batch_size must be positive"):
        resolve_config({}, ["train.eval_batch_size=0"])


def test_relative_data_dir_config_dir_first(tmp_path, monkeypatch):
    (tmp_path / "cfg" / "d").mkdir(parents=True)
    (tmp_path / "cwd" / "d").mkdir(parents=True)
    (tmp_path / "cwd" / "only-here").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    for name, expected in (("d", tmp_path / "cfg" / "d"), ("only-here", "only-here")):
        (tmp_path / "cfg" / "c.yaml").write_text(f"data: {{dir: {name}}}\n")
        assert resolve_config(tmp_path / "cfg" / "c.yaml")[2].dir == str(expected)


def test_schedule_shape():
    s = WarmupCosine(1e-3, warmup_steps=10, decay_steps=110, min_lr=1e-4)
    lrs = [float(s(i)) for i in range(130)]
    assert lrs[0] == pytest.approx(1e-3 / 11)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11], strict=True))  # warmup rises
    assert lrs[10] == pytest.approx(1e-3)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[10:110], lrs[11:111], strict=True))  # cosine falls
    assert lrs[60] == pytest.approx(5.5e-4, rel=1e-5)  # half way: the mean of peak and floor
    assert lrs[110:] == pytest.approx([1e-4] * 20)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert again.get_config() == s.get_config()


def test_schedule_linear_and_wsd():
    lin = WarmupCosine(1e-3, warmup_steps=10, decay_steps=110, min_lr=0.0, shape="linear")
    assert lin.value(10) == pytest.approx(1e-3) and lin.value(60) == pytest.approx(5e-4)
    assert lin.value(110) == 0.0
    wsd = WarmupCosine(1e-3, warmup_steps=10, decay_steps=110, min_lr=1e-4, shape="wsd", cooldown=0.3)
    assert [wsd.value(s) for s in (10, 50, 80)] == pytest.approx([1e-3] * 3)  # stable until 70% of the span
    assert wsd.value(95) == pytest.approx(1e-4 + 0.5 * 9e-4)  # half way down the cooldown
    assert wsd.value(110) == pytest.approx(1e-4)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(wsd))
    assert again.get_config() == wsd.get_config()
    with pytest.raises(ValueError, match="shape"):
        WarmupCosine(1e-3, 1, 10, shape="step")
    with pytest.raises(ConfigError, match="lr_schedule"):
        resolve_config({"train": {"lr_schedule": "step"}})
    with pytest.raises(ConfigError, match="lr_cooldown"):
        resolve_config({"train": {"lr_cooldown": 0.0}})


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 50), st.integers(1, 500), st.integers(0, 1000), st.sampled_from(["cosine", "linear", "wsd"]))
def test_schedule_matches_python(warmup, span, step, shape):
    s = WarmupCosine(6e-4, warmup, warmup + span, 6e-5, shape=shape, cooldown=0.25)
    assert float(s(step)) == pytest.approx(s.value(step), rel=1e-5, abs=1e-9)
    assert 0 < s.value(step) <= 6e-4 + 1e-12


def test_weight_decay_exclusions():
    gpt = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32))
    gpt.build((None, 16))
    excluded = {v.path for v in no_decay_variables(gpt)}
    assert any(p.endswith("wte/embeddings") for p in excluded) and any(p.endswith("wpe/embeddings") for p in excluded)
    for v in gpt.trainable_variables:
        is_matrix = len(v.shape) == 2 and "embeddings" not in v.path
        assert (v.path in excluded) == (not is_matrix), v.path
    opt = make_optimizer(TrainConfig(weight_decay=0.5), gpt)
    opt.build(gpt.trainable_variables)
    # with zero gradients, only decayed variables move
    before = [v.numpy().copy() for v in gpt.trainable_variables]
    opt.apply([np.zeros(v.shape, "float32") for v in gpt.trainable_variables], gpt.trainable_variables)
    for b, v in zip(before, gpt.trainable_variables, strict=True):
        moved = not np.array_equal(b, v.numpy())
        assert moved == (v.path not in excluded), v.path


def test_flops_and_memory_estimates():
    gpt2 = GPTConfig.preset("gpt2")
    # nanoGPT: ~6N + 12·L·d·T per token
    assert flops_per_token(gpt2) == pytest.approx(6 * gpt2.num_params(True) + 12 * 12 * 768 * 1024)
    small = estimate_memory(GPTConfig.preset("char-small"), TrainConfig())
    big = estimate_memory(gpt2, TrainConfig(batch_size=4, grad_accum_steps=128))
    remat = estimate_memory(gpt2, TrainConfig(batch_size=4, grad_accum_steps=128, gradient_checkpointing=True))
    assert small["total_bytes"] < 100 * 2**20 < big["total_bytes"]
    assert remat["activation_bytes"] < big["activation_bytes"] / 3
