"""tfgpt.model.quantize: int8 attention/MLP kernels, float embeddings, outputs close to float32."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfgpt.config import GPTConfig
from tfgpt.errors import ConfigError
from tfgpt.generate import generate_ids
from tfgpt.model import GPT
from tfgpt.model.quantize import quantize_dense


def _pair():
    keras.utils.set_random_seed(7)
    cfg = GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=64)
    a, b = GPT(cfg), GPT(cfg)
    a.build((None, None))
    b.build((None, None))
    b.set_weights(a.get_weights())
    quantize_dense(b)
    return a, b


def test_dense_kernels_int8_embeddings_float():
    _, q = _pair()
    for block in q.blocks:
        for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
            assert str(layer.kernel.dtype) == "int8"
    assert str(q.wte.embeddings.dtype) == "float32" and str(q.wpe.embeddings.dtype) == "float32"


def test_int8_logits_and_greedy_tokens_stay_close_to_float():
    f, q = _pair()
    ids = np.random.default_rng(0).integers(0, 50, (2, 32)).astype(np.int32)
    lf, lq = np.asarray(f(ids)), np.asarray(q(ids))
    rel = np.abs(lq - lf).max() / np.abs(lf).max()
    assert 0 < rel < 0.05, rel  # changed (int8), but by a few percent of the logit range at most
    pf, pq = (np.exp(x - x.max(-1, keepdims=True)) for x in (lf, lq))
    pf, pq = pf / pf.sum(-1, keepdims=True), pq / pq.sum(-1, keepdims=True)
    assert 0.5 * np.abs(pf - pq).sum(-1).max() < 0.05  # total variation between the next-token distributions
    same = (generate_ids(f, ids[:, :4], 24, temperature=0) == generate_ids(q, ids[:, :4], 24, temperature=0)).mean()
    assert same >= 0.75, same


def test_unknown_mode_is_refused():
    f, _ = _pair()
    with pytest.raises(ConfigError, match="--quantize must be one of int8, got 'int4'"):
        quantize_dense(f, "int4")
