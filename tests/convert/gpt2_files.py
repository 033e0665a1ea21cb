"""Tiny random GPT-2 checkpoints written the way each tool writes them, and GPT-2's forward pass in NumPy.

The writers know the layouts independently of tfgpt.convert (names, [1, in, out] kernels, config
keys are spelled out here), so the tests check the readers against the formats, not against themselves.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from tests.conftest import FIXTURES

D, N_HEAD, N_LAYER, CTX = 8, 2, 2, 16
LINEARS = {"attn.c_attn": (D, 3 * D), "attn.c_proj": (D, D), "mlp.c_fc": (D, 4 * D), "mlp.c_proj": (4 * D, D)}


@lru_cache(maxsize=1)
def tiny_tokenizer():
    """A small byte-level BPE trained on a fixture slice (GPT-2 format, <|endoftext|> last)."""
    from tfgpt.tokenizers import BPETokenizer

    text = (FIXTURES / "corpus" / "the-verdict.txt").read_text(encoding="utf-8")[:20000]
    return BPETokenizer.train([text], vocab_size=320)


def random_tensors(vocab: int, seed: int = 0, n_layer: int = N_LAYER) -> dict[str, np.ndarray]:
    """HF-named GPT-2 tensors (no prefix, Conv1D [in, out]) with random values, LayerNorm gains near 1."""
    rng = np.random.default_rng(seed)

    def r(*shape: int, mean: float = 0.0) -> np.ndarray:
        return (mean + rng.normal(0, 0.2, shape)).astype("float32")

    t = {"wte.weight": r(vocab, D), "wpe.weight": r(CTX, D)}
    for i in range(n_layer):
        for ln in ("ln_1", "ln_2"):
            t[f"h.{i}.{ln}.weight"], t[f"h.{i}.{ln}.bias"] = r(D, mean=1.0), r(D)
        for name, (n_in, n_out) in LINEARS.items():
            t[f"h.{i}.{name}.weight"], t[f"h.{i}.{name}.bias"] = r(n_in, n_out), r(n_out)
    t["ln_f.weight"], t["ln_f.bias"] = r(D, mean=1.0), r(D)
    return t


def hf_config(vocab: int, n_layer: int = N_LAYER, **overrides) -> dict:
    """config.json as transformers' GPT2Config writes it (the keys the reader needs, and a few more)."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab, "n_positions": CTX,
            "n_ctx": CTX, "n_embd": D, "n_layer": n_layer, "n_head": N_HEAD, "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1, "n_inner": None, **overrides}


def write_tokenizer(directory: Path, tok, names=("vocab.json", "merges.txt")) -> None:
    """The tokenizer's encoder + merges under HF's (or OpenAI's) file names."""
    encoder = dict(sorted(tok.encoder.items(), key=lambda kv: kv[1]))
    (directory / names[0]).write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in tok.merges)]
    (directory / names[1]).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_hf(directory: Path, tensors: dict, config: dict, prefix: str = "", shards: int = 1,
             buffers: bool = False, tok=None) -> Path:
    """An HF GPT-2 dir: config.json + model.safetensors, or ``shards`` files + model.safetensors.index.json."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    stored = {prefix + k: v for k, v in tensors.items()}
    if buffers:  # the causal-mask buffers older transformers saved
        for i in range(config["n_layer"]):
            stored[f"{prefix}h.{i}.attn.bias"] = np.tril(np.ones((CTX, CTX), "float32"))[None, None]
            stored[f"{prefix}h.{i}.attn.masked_bias"] = np.array(-1e4, "float32")
    if shards == 1:
        save_file(stored, str(directory / "model.safetensors"), metadata={"format": "pt"})
    else:
        names = sorted(stored)
        weight_map = {}
        for s in range(shards):
            file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: stored[n] for n in names[s::shards]}
            save_file(part, str(directory / file), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, file))
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    if tok is not None:
        write_tokenizer(directory, tok)
    return directory


def openai_name(name: str) -> str:
    """OpenAI's variable name for an HF GPT-2 name (``h.0.attn.c_attn.weight`` -> ``model/h0/attn/c_attn/w``)."""
    if name in ("wte.weight", "wpe.weight"):
        return "model/" + name.split(".")[0]
    parts = name.split(".")
    leaf = parts[-1]
    is_ln = parts[-2].startswith("ln")
    leaf = ("g" if is_ln else "w") if leaf == "weight" else "b"
    if parts[0] == "ln_f":
        return f"model/ln_f/{leaf}"
    return "model/h" + parts[1] + "/" + "/".join(parts[2:-1]) + "/" + leaf


def write_openai(directory: Path, tensors: dict, hparams: dict, extra: dict | None = None, tok=None) -> Path:
    """OpenAI's layout: hparams.json + a TF1 checkpoint (tf.compat.v1.train.Saver), ``w`` kernels [1, in, out]."""
    import tensorflow as tf

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hparams.json").write_text(json.dumps(hparams), encoding="utf-8")
    variables = {}
    for name, value in tensors.items():
        var = openai_name(name)
        variables[var] = value[None] if var.endswith("/w") else value  # [in, out] -> [1, in, out]
    variables.update(extra or {})
    with tf.Graph().as_default():
        tf_vars = [tf.compat.v1.get_variable(k, initializer=tf.constant(v)) for k, v in variables.items()]
        saver = tf.compat.v1.train.Saver(tf_vars)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(directory / "model.ckpt"))
    if tok is not None:
        write_tokenizer(directory, tok, ("encoder.json", "vocab.bpe"))
    return directory


def openai_hparams(vocab: int, n_layer: int = N_LAYER) -> dict:
    return {"n_vocab": vocab, "n_ctx": CTX, "n_embd": D, "n_head": N_HEAD, "n_layer": n_layer}


# -- GPT-2's forward pass, in NumPy (float64) ------------------------------------------------------


def _ln(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _attention(x: np.ndarray, t: dict, p: str, n_head: int) -> np.ndarray:
    n, d = x.shape
    qkv = x @ t[p + "attn.c_attn.weight"] + t[p + "attn.c_attn.bias"]  # [T, 3d], q | k | v
    q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(n, n_head, d // n_head).transpose(1, 0, 2) for j in range(3))
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(d // n_head)  # [H, T, T]
    scores = np.where(np.tril(np.ones((n, n), bool)), scores, -np.inf)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    y = (w @ v).transpose(1, 0, 2).reshape(n, d)  # [T, d]
    return y @ t[p + "attn.c_proj.weight"] + t[p + "attn.c_proj.bias"]


def numpy_gpt2(tensors: dict, ids: list[int], n_head: int = N_HEAD, eps: float = 1e-5) -> np.ndarray:
    """Logits [T, vocab] of GPT-2 (pre-LN, tanh GELU, causal attention, head tied to wte) on ``ids``."""
    t = {k: np.asarray(v, "float64") for k, v in tensors.items()}
    x = t["wte.weight"][ids] + t["wpe.weight"][: len(ids)]
    i = 0
    while f"h.{i}.ln_1.weight" in t:
        p = f"h.{i}."
        x = x + _attention(_ln(x, t[p + "ln_1.weight"], t[p + "ln_1.bias"], eps), t, p, n_head)
        h = _ln(x, t[p + "ln_2.weight"], t[p + "ln_2.bias"], eps)
        x = x + _gelu(h @ t[p + "mlp.c_fc.weight"] + t[p + "mlp.c_fc.bias"]) @ t[p + "mlp.c_proj.weight"] \
            + t[p + "mlp.c_proj.bias"]
        i += 1
    return _ln(x, t["ln_f.weight"], t["ln_f.bias"], eps) @ t["wte.weight"].T


def write_keras_hub(directory: Path, tok, seed: int = 0):
    """A keras-hub preset dir (GPT2Backbone.save_to_preset + GPT2Tokenizer.save_to_preset); returns the backbone.

    The backbone starts from keras-hub's own random init; every weight is then perturbed so that
    LayerNorm gains and biases are not 1 / 0.
    """
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=tok.vocab_size, num_layers=N_LAYER, num_heads=N_HEAD,
                                             hidden_dim=D, intermediate_dim=4 * D, max_sequence_length=CTX)
    rng = np.random.default_rng(seed)
    for v in backbone.weights:
        v.assign(keras.ops.convert_to_numpy(v) + rng.normal(0, 0.1, tuple(v.shape)).astype("float32"))
    encoder = dict(sorted(tok.encoder.items(), key=lambda kv: kv[1]))
    keras_tok = keras_hub.models.GPT2Tokenizer(vocabulary=encoder, merges=[f"{a} {b}" for a, b in tok.merges])
    backbone.save_to_preset(str(directory))
    keras_tok.save_to_preset(str(directory))
    return backbone


def keras_hub_logits(backbone, ids: list[int]) -> np.ndarray:
    """The backbone's logits [T, vocab] (hidden states through the reversed token embedding)."""
    import keras

    x = np.array([ids], "int32")
    hidden = backbone({"token_ids": x, "padding_mask": np.ones_like(x)})
    return keras.ops.convert_to_numpy(backbone.token_embedding(hidden, reverse=True))[0]
