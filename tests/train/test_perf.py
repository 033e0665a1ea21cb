"""tfgpt.train.perf: model FLOPs per token and the memory estimate (no training)."""

from __future__ import annotations

import pytest

from tfgpt.config import GPTConfig
from tfgpt.train.config import TrainConfig
from tfgpt.train.perf import estimate_memory, flops_per_token


def test_flops_and_memory_estimates():
    gpt2 = GPTConfig.preset("gpt2")
    # nanoGPT: ~6N + 12·L·d·T per token
    assert flops_per_token(gpt2) == pytest.approx(6 * gpt2.num_params(True) + 12 * 12 * 768 * 1024)
    small = estimate_memory(GPTConfig.preset("char-small"), TrainConfig())
    big = estimate_memory(gpt2, TrainConfig(batch_size=4, grad_accum_steps=128))
    remat = estimate_memory(gpt2, TrainConfig(batch_size=4, grad_accum_steps=128, gradient_checkpointing=True))
    assert small["total_bytes"] < 100 * 2**20 < big["total_bytes"]
    assert remat["activation_bytes"] < big["activation_bytes"] / 3
