"""GPT-2 names and shapes <-> tfgpt weights: which variable each name is, checks with one-line errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.convert.gpt2_files import numpy_gpt2, random_tensors
from tfgpt.config import GPTConfig
from tfgpt.convert.gpt2_names import (
    check_gpt2_expressible,
    check_tensors,
    expected_shapes,
    gpt2_state_dict,
    model_from_gpt2_state_dict,
)
from tfgpt.errors import ConvertError
from tfgpt.model import GPT

CFG = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=8)


def test_expected_shapes_of_gpt2_124m():
    shapes = expected_shapes(GPTConfig.preset("gpt2"))
    assert len(shapes) == 2 + 12 * 12 + 2
    assert shapes["wte.weight"] == (50257, 768) and shapes["wpe.weight"] == (1024, 768)
    assert shapes["h.11.attn.c_attn.weight"] == (768, 2304) and shapes["h.11.attn.c_attn.bias"] == (2304,)
    assert shapes["h.0.attn.c_proj.weight"] == (768, 768)
    assert shapes["h.0.mlp.c_fc.weight"] == (768, 3072) and shapes["h.0.mlp.c_proj.weight"] == (3072, 768)
    assert shapes["h.5.ln_2.bias"] == (768,) and shapes["ln_f.weight"] == (768,)
    # the parameter count GPT-2 124M is known by
    assert sum(int(np.prod(s)) for s in shapes.values()) == 124_439_808


def test_state_dict_names_the_right_variables():
    keras.utils.set_random_seed(0)
    model = GPT(CFG)
    model.build((None, None))
    t = gpt2_state_dict(model)
    np.testing.assert_array_equal(t["wte.weight"], keras.ops.convert_to_numpy(model.wte.embeddings))
    np.testing.assert_array_equal(t["h.1.attn.c_attn.weight"],
                                  keras.ops.convert_to_numpy(model.blocks[1].attn.c_attn.kernel))
    np.testing.assert_array_equal(t["h.0.mlp.c_proj.bias"], keras.ops.convert_to_numpy(model.blocks[0].mlp.c_proj.bias))
    np.testing.assert_array_equal(t["h.0.ln_2.weight"], keras.ops.convert_to_numpy(model.blocks[0].ln_2.gamma))
    np.testing.assert_array_equal(t["ln_f.bias"], keras.ops.convert_to_numpy(model.ln_f.beta))
    assert {k: v.shape for k, v in t.items()} == expected_shapes(CFG)


def test_model_from_state_dict_computes_gpt2():
    tensors = random_tensors(40, seed=4)
    model = model_from_gpt2_state_dict(tensors, CFG, "mem")
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    got = np.asarray(model(np.array([ids], "int32")))[0]
    assert np.abs(got - numpy_gpt2(tensors, ids)).max() <= 1e-4
    back = gpt2_state_dict(model)
    assert all(np.array_equal(back[k], tensors[k]) for k in tensors)


def test_check_tensors_errors_name_file_and_tensor():
    t = random_tensors(40)
    with pytest.raises(ConvertError, match=r"^f\.st: tensor h\.1\.ln_2\.bias is missing"):
        check_tensors({k: v for k, v in t.items() if k != "h.1.ln_2.bias"}, CFG, "f.st")
    with pytest.raises(ConvertError, match=r"^shard2: tensor transformer\.h\.9\.ln_1\.weight is unexpected"):
        check_tensors({**t, "h.9.ln_1.weight": t["ln_f.weight"]}, CFG, "f.st",
                      origin={"h.9.ln_1.weight": ("shard2", "transformer.h.9.ln_1.weight")})
    with pytest.raises(ConvertError, match=r"f\.st: tensor wpe\.weight has shape \[12, 8\], expected \[16, 8\] "
                                           r"\(hparams\.json: n_layer=2, n_embd=8, vocab=40, ctx=16\)"):
        check_tensors({**t, "wpe.weight": t["wpe.weight"][:12]}, CFG, "f.st", config_source="hparams.json")


@pytest.mark.parametrize("field,value,option", [("norm", "post", "model.norm='post'"), ("bias", False, "model.bias"),
                                                ("tie_embeddings", False, "model.tie_embeddings")])
def test_shapes_gpt2_cannot_express(field, value, option):
    cfg = GPTConfig(**{**CFG.to_dict(), field: value})
    with pytest.raises(ConvertError, match=option):
        check_gpt2_expressible(cfg, "run")
    with pytest.raises(ConvertError, match=option):
        gpt2_state_dict(GPT(cfg))
