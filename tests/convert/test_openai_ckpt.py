"""OpenAI's GPT-2 TF checkpoint: names, [1, in, out] kernels, hparams.json, read from a tf.compat.v1 Saver file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.convert.gpt2_files import CTX, D, openai_hparams, random_tensors, write_openai
from tfgpt.config import GPTConfig
from tfgpt.convert.gpt2_names import expected_shapes, gpt2_state_dict
from tfgpt.convert.openai_ckpt import (
    checkpoint_prefix,
    gpt2_name,
    hparams_config,
    openai_name,
    read_openai_ckpt,
)
from tfgpt.errors import ConvertError


@pytest.mark.parametrize("openai,hf", [
    ("model/wte", "wte.weight"), ("model/wpe", "wpe.weight"), ("model/ln_f/g", "ln_f.weight"),
    ("model/ln_f/b", "ln_f.bias"), ("model/h0/ln_1/g", "h.0.ln_1.weight"), ("model/h11/ln_2/b", "h.11.ln_2.bias"),
    ("model/h3/attn/c_attn/w", "h.3.attn.c_attn.weight"), ("model/h3/attn/c_proj/b", "h.3.attn.c_proj.bias"),
    ("model/h7/mlp/c_fc/w", "h.7.mlp.c_fc.weight"), ("model/h7/mlp/c_proj/w", "h.7.mlp.c_proj.weight"),
    ("model/h0/attn/c_attn/w/Adam", "model/h0/attn/c_attn/w/Adam"), ("global_step", "global_step"),
])
def test_gpt2_name(openai, hf):
    assert gpt2_name(openai) == hf


def test_openai_name_inverts_gpt2_name():
    names = expected_shapes(GPTConfig(vocab_size=10, block_size=4, n_layer=12, n_head=1, n_embd=2))
    assert all(gpt2_name(openai_name(n)) == n for n in names)
    assert {openai_name(n) for n in names if n.startswith("h.11.")} == {
        f"model/h11/{p}" for p in ("ln_1/g", "ln_1/b", "attn/c_attn/w", "attn/c_attn/b", "attn/c_proj/w",
                                   "attn/c_proj/b", "ln_2/g", "ln_2/b", "mlp/c_fc/w", "mlp/c_fc/b", "mlp/c_proj/w",
                                   "mlp/c_proj/b")}


def test_missing_variable_named_as_openai_spells_it(tmp_path):
    tensors = random_tensors(60)
    d = write_openai(tmp_path / "ckpt", {k: v for k, v in tensors.items() if k != "h.1.attn.c_proj.bias"},
                     openai_hparams(60))
    with pytest.raises(ConvertError, match=r"model.ckpt: tensor model/h1/attn/c_proj/b is missing"):
        read_openai_ckpt(d)


def test_read_tf1_checkpoint(tmp_path):
    tensors = random_tensors(60, seed=6)
    d = write_openai(tmp_path / "ckpt", tensors, openai_hparams(60))
    ckpt = read_openai_ckpt(d)
    got = gpt2_state_dict(ckpt.model)
    assert all(np.array_equal(got[k], tensors[k]) for k in tensors) and sorted(got) == sorted(tensors)
    assert checkpoint_prefix(d) == d / "model.ckpt"
    assert ckpt.model.config.block_size == CTX and ckpt.model.config.layer_norm_epsilon == 1e-5
    names = [p.name for p in ckpt.files]
    assert names == ["hparams.json", "model.ckpt.data-00000-of-00001", "model.ckpt.index", "checkpoint"]
    assert ckpt.hyperparameters == openai_hparams(60)


def test_kernel_without_leading_one(tmp_path):
    tensors = random_tensors(60)
    d = write_openai(tmp_path / "ckpt", {k: v for k, v in tensors.items() if k != "h.1.mlp.c_fc.weight"},
                     openai_hparams(60), extra={"model/h1/mlp/c_fc/w": tensors["h.1.mlp.c_fc.weight"]})
    with pytest.raises(ConvertError, match=r"model.ckpt: tensor model/h1/mlp/c_fc/w has shape \[8, 32\], "
                                           r"expected \[1, in, out\]"):
        read_openai_ckpt(d)


def test_unexpected_variable_named_as_openai_spells_it(tmp_path):
    d = write_openai(tmp_path / "ckpt", random_tensors(60), openai_hparams(60),
                     extra={"model/h0/attn/c_attn/w/Adam": np.zeros((1, D, 3 * D), "float32")})
    with pytest.raises(ConvertError, match=r"model.ckpt: tensor model/h0/attn/c_attn/w/Adam is unexpected"):
        read_openai_ckpt(d)


def test_hparams_errors(tmp_path):
    tensors = random_tensors(60)
    d = write_openai(tmp_path / "ckpt", tensors, openai_hparams(60))
    (d / "hparams.json").write_text(json.dumps({**openai_hparams(60), "n_embd": "8"}))
    with pytest.raises(ConvertError, match=r"hparams.json: n_embd must be an integer, got '8'"):
        read_openai_ckpt(d)
    (d / "hparams.json").write_text(json.dumps({**openai_hparams(60), "n_vocab": 61}))
    with pytest.raises(ConvertError, match=r"model.ckpt: tensor model/wte has shape \[60, 8\], expected \[61, 8\] "
                                           r"\(.*hparams.json"):
        read_openai_ckpt(d)
    (d / "hparams.json").write_text(json.dumps(openai_hparams(60)))
    config, raw = hparams_config(d / "hparams.json")
    assert config == GPTConfig(vocab_size=60, block_size=CTX, n_layer=2, n_head=2, n_embd=D, dropout=0.0)
    assert len(expected_shapes(config)) == len(tensors) and raw == openai_hparams(60)


def test_damaged_checkpoint(tmp_path):
    d = write_openai(tmp_path / "ckpt", random_tensors(60), openai_hparams(60))
    data = next(d.glob("model.ckpt.data-*"))
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ConvertError, match=r"model.ckpt: tensor \S+ unreadable"):
        read_openai_ckpt(d)
    (d / "model.ckpt.index").write_bytes(b"garbage")
    with pytest.raises(ConvertError, match=r"model.ckpt: unreadable TF checkpoint"):
        read_openai_ckpt(d)
