"""Subprocess entry for distributed tests: ``python -m tests.train.dist_worker STRATEGY RUN_DIR [N_CPU]``.

Sets up logical CPU devices before TensorFlow initialises them, trains a tiny config on an
in-memory corpus and prints the summary as one JSON line prefixed with ``SUMMARY``.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    strategy, run_dir = sys.argv[1], sys.argv[2]
    n_cpu = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    import tensorflow as tf

    if n_cpu > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n_cpu)

    print("SUMMARY " + json.dumps(train_tiny(strategy, run_dir)), flush=True)


def train_tiny(strategy: str, run_dir: str) -> dict:
    """The tiny run every distributed test trains (the default-strategy reference runs it in process)."""
    from tests.train.helpers import char_tokens, tiny_config
    from tfgpt.train.data import array_source
    from tfgpt.train.fit import train

    ids, _ = char_tokens(30000)
    source = array_source({"train": ids[:25000], "val": ids[25000:]})
    cfg = tiny_config(max_steps=6, eval_interval=3, checkpoint_interval=3, grad_accum_steps=2, batch_size=4)
    return train(cfg, run_dir=run_dir, source=source, strategy=strategy, progress=False)


if __name__ == "__main__":
    main()
