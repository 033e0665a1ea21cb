"""Model FLOPs, this machine's measured peak FLOP/s (for MFU), and a memory estimate.

Example:
    >>> from tfgpt.config import GPTConfig
    >>> flops_per_token(GPTConfig.preset("gpt2")) > 6 * 85e6
    True
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from tfgpt.config import GPTConfig
from tfgpt.train.config import TrainConfig


def flops_per_token(cfg: GPTConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token (forward + backward), as PaLM/nanoGPT count them.

    ``6 * N + 12 * n_layer * n_embd * seq_len`` with N the parameters without position embeddings.
    """
    t = seq_len or cfg.block_size
    n = cfg.num_params(non_embedding=True)
    return 6.0 * n + 12.0 * cfg.n_layer * cfg.n_embd * t


@functools.lru_cache(maxsize=4)
def measure_peak_flops(dtype: str = "float32", size: int = 1024, seconds: float = 0.5) -> float:
    """Best observed FLOP/s of an XLA-compiled ``size``² matmul on the default device."""
    import tensorflow as tf

    a = tf.random.normal((size, size), dtype=tf.float32)
    b = tf.random.normal((size, size), dtype=tf.float32)
    if dtype != "float32":
        a, b = tf.cast(a, dtype), tf.cast(b, dtype)

    @tf.function(jit_compile=True)
    def mm(a: Any, b: Any) -> Any:
        return tf.reduce_sum(tf.cast(a @ b, tf.float32))

    mm(a, b).numpy()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        mm(a, b).numpy()
        best = max(best, 2.0 * size**3 / (time.perf_counter() - t0))
    return best


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (falls back to physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate_memory(model: GPTConfig, train: TrainConfig, replicas: int = 1, mixed: bool = False) -> dict[str, int]:
    """Rough peak bytes of one replica: weights, grads, Adam moments, activations of one micro-batch.

    Activations per layer follow Korthikanti et al. (2022), ``T·B·d·(34 + 5·h·T/d)`` bytes at
    16 bits, doubled for float32; with gradient checkpointing only block inputs are kept plus
    one block's activations. Logits and their gradient add ``3·B·T·V·4``.
    """
    p = model.num_params()
    b = max(train.batch_size // replicas, 1)
    t, d, h, L, v = model.block_size, model.n_embd, model.n_head, model.n_layer, model.vocab_size
    state = 4 * p * (4 if train.grad_accum_steps == 1 else 5)  # weights, grads, m, v (+ accumulators)
    per_layer = t * b * d * (34 + 5 * h * t / d) * (1 if mixed else 2)
    if train.gradient_checkpointing:
        acts = L * b * t * d * (2 if mixed else 4) + per_layer
    else:
        acts = L * per_layer
    logits = 3 * b * t * v * 4
    total = int(state + acts + logits)
    return {"params": p, "state_bytes": int(state), "activation_bytes": int(acts + logits), "total_bytes": total}
