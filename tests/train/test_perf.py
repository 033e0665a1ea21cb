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


def test_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    """Identical runs report identical MFU: the peak is measured once per machine and dtype, then read back."""
    import json

    from tfgpt.train import perf

    monkeypatch.setenv("TFGPT_CACHE_DIR", str(tmp_path))
    calls = []
    real = perf.measure_peak_flops.__wrapped__
    monkeypatch.setattr(perf, "measure_peak_flops", lambda dtype, seconds: calls.append(dtype) or real(
        dtype, size=256, seconds=0.05))
    first, source = perf.peak_flops("float32")
    assert first > 0 and source == f"measured now, cached in {tmp_path / perf.PEAK_CACHE}"
    again, source2 = perf.peak_flops("float32")
    assert again == first and source2.startswith("measured ") and "cached in" in source2 and calls == ["float32"]
    cached = json.loads((tmp_path / perf.PEAK_CACHE).read_text())
    assert cached[perf.machine_key("float32")]["flops"] == first
    assert perf.peak_flops("float32", configured_tflops=2.0) == (2e12, "train.peak_tflops")
    (tmp_path / perf.PEAK_CACHE).write_text("{not json")  # a damaged cache is measured again, not fatal
    assert perf.peak_flops("float32")[1].startswith("measured now") and len(calls) == 2
