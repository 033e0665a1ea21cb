"""Model FLOPs, the peak FLOP/s MFU is measured against (configured, or measured once and cached), and a
memory estimate.

Example:
    >>> from tfgpt.config import GPTConfig
    >>> flops_per_token(GPTConfig.preset("gpt2")) > 6 * 85e6
    True
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from tfgpt.atomic import write_text_atomic
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


#: Where the measured peak is cached: ``$TFGPT_CACHE_DIR`` or ``~/.cache/tfgpt``.
PEAK_CACHE = "peak_flops.json"


def cache_dir() -> Path:
    return Path(os.environ.get("TFGPT_CACHE_DIR") or Path.home() / ".cache" / "tfgpt")


def machine_key(dtype: str) -> str:
    """What a measured peak belongs to: CPU model and count, accelerators, dtype."""
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpus = len(tf.config.list_physical_devices("GPU"))
    return f"{cpu} x{os.cpu_count()} | {gpus} GPU | {dtype}"


def peak_flops(dtype: str = "float32", configured_tflops: float | None = None) -> tuple[float, str]:
    """The peak FLOP/s MFU is measured against, and where it came from.

    ``train.peak_tflops`` when set; else a measurement cached per :func:`machine_key` in
    ``cache_dir() / PEAK_CACHE``, made once (2 s of matmuls) and reused, so identical runs report
    identical MFU. Delete the file to measure again.

    Example:
        >>> peak_flops("float32", configured_tflops=1.5)
        (1500000000000.0, 'train.peak_tflops')
    """
    if configured_tflops is not None:
        return configured_tflops * 1e12, "train.peak_tflops"
    path, key = cache_dir() / PEAK_CACHE, machine_key(dtype)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    entry = cached.get(key) if isinstance(cached, dict) else None
    if isinstance(entry, dict) and isinstance(entry.get("flops"), (int, float)) and entry["flops"] > 0:
        return float(entry["flops"]), f"measured {entry.get('date', '?')}, cached in {path}"
    flops = measure_peak_flops(dtype, seconds=2.0)
    cached = {**(cached if isinstance(cached, dict) else {}),
              key: {"flops": flops, "date": time.strftime("%Y-%m-%d"), "method": "best 1024^2 XLA matmul, 2 s"}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(cached, indent=1) + "\n")
    except OSError:
        return flops, "measured now (cache not writable)"
    return flops, f"measured now, cached in {path}"


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
