"""A tiny run dir for export/serve tests (imported by their conftests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TEXT = "ROMEO: hello world, the quick brown fox!\nThe Hello JULIET: what light"


def make_tiny_run(run_dir: Path, block_size: int = 32, seed: int = 0) -> Path:
    """A run dir with a 2-layer, 32-wide GPT whose weights are large enough to give varied greedy tokens."""
    import keras

    from tfgpt.config import GPTConfig
    from tfgpt.model import GPT
    from tfgpt.runs import save_run
    from tfgpt.tokenizers import CharTokenizer

    tok = CharTokenizer.train([TEXT])
    keras.utils.set_random_seed(seed)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32))
    model.build((None, None))
    rng = np.random.default_rng(seed)
    for v in model.variables:
        v.assign(rng.normal(0.0, 0.3, v.shape).astype("float32"))
    return save_run(run_dir, model, tok)
