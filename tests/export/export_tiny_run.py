"""A tiny run dir for export/serve tests (imported by their conftests), and helpers to read its export."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

TEXT = "ROMEO: hello world, the quick brown fox!\nThe Hello JULIET: what light"
EOT = "<|endoftext|>"


def make_tiny_run(
    run_dir: Path, block_size: int = 32, seed: int = 0, special_tokens: Sequence[str] = (), vocab_pad: int = 0
) -> Path:
    """A run dir with a 2-layer, 32-wide GPT whose weights are large enough to give varied greedy tokens.

    ``special_tokens`` (e.g. ``[EOT]``) puts TF-Text ops in the exported in-graph tokenizer;
    ``vocab_pad`` pads the model's vocabulary past the tokenizer's, with the padded rows of the tied
    embedding scaled up so that unmasked sampling would pick them.
    """
    import keras

    from tfgpt.config import GPTConfig
    from tfgpt.model import GPT
    from tfgpt.runs import save_run
    from tfgpt.tokenizers import CharTokenizer

    tok = CharTokenizer.train([TEXT], special_tokens=tuple(special_tokens))
    keras.utils.set_random_seed(seed)
    vocab = tok.vocab_size + vocab_pad
    model = GPT(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=2, n_head=2, n_embd=32))
    model.build((None, None))
    rng = np.random.default_rng(seed)
    for v in model.variables:
        v.assign(rng.normal(0.0, 0.3, v.shape).astype("float32"))
    if vocab_pad:
        emb = np.asarray(model.wte.embeddings).copy()
        emb[tok.vocab_size:] *= 3.0  # enough to win argmax everywhere, small enough for 1e-5 logits
        model.wte.embeddings.assign(emb)
    return save_run(run_dir, model, tok)


def sm_dir(exported: tuple[Path, dict]) -> Path:
    """The SavedModel dir of an ``(export dir, export.json)`` fixture."""
    out, info = exported
    return out / info["savedmodel"]["path"]


def graph_ops(sm_dir: Path) -> set[str]:
    """Every op type in a SavedModel's graph and its functions."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((sm_dir / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    return {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
