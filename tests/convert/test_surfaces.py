"""An imported GPT-2 on every surface: generate, chat, eval --text, SavedModel (TF1 session loader,
saved_model_cli), tfgpt serve (TF-Serving REST predict, completions), TFLite float + int8.

The test writes a small random GPT-2-shaped Hugging Face dir itself (GPT-2's 50,257-token vocabulary,
tiny width, safetensors written from NumPy, no tokenizer files, so the import takes the packaged GPT-2
vocabulary). Every surface is checked against a NumPy GPT-2 forward pass over the same arrays (an
independent reference, not the converter's output), sharing one import and one export.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import requests
from safetensors.numpy import save_file

from tests.serve.helpers import start_server
from tfgpt.cli import main
from tfgpt.export.tflite_runner import TFLiteGenerator
from tfgpt.export.verify import saved_model_cli_ids, session_run
from tfgpt.tokenizers import build_tokenizer

N_LAYER, N_HEAD, N_EMBD, N_CTX, VOCAB, EOT = 2, 2, 32, 128, 50257, 50256
PROMPT = "The quick brown fox, déjà vu:"
NEW = 8
NAME = "gpt2tiny"
CORPUS = Path(__file__).parents[1] / "fixtures" / "corpus"


def _random_gpt2(seed: int = 0) -> dict[str, np.ndarray]:
    """GPT-2 tensors (HF names without ``transformer.``; Conv1D ``[in, out]``), all random. The
    ``<|endoftext|>`` row of wte is zero, so its logit is 0 and greedy decoding never stops early."""
    rng = np.random.default_rng(seed)
    d = N_EMBD

    def normal(*shape: int, std: float = 0.02, mean: float = 0.0) -> np.ndarray:
        return (mean + std * rng.standard_normal(shape)).astype(np.float32)

    t = {"wte.weight": normal(VOCAB, d, std=0.1), "wpe.weight": normal(N_CTX, d, std=0.3)}
    t["wte.weight"][EOT] = 0.0
    for i in range(N_LAYER):
        for name, (n_in, n_out) in {"attn.c_attn": (d, 3 * d), "attn.c_proj": (d, d),
                                    "mlp.c_fc": (d, 4 * d), "mlp.c_proj": (4 * d, d)}.items():
            t[f"h.{i}.{name}.weight"] = normal(n_in, n_out, std=0.1)
            t[f"h.{i}.{name}.bias"] = normal(n_out)
        for ln in ("ln_1", "ln_2"):
            t[f"h.{i}.{ln}.weight"], t[f"h.{i}.{ln}.bias"] = normal(d, std=0.1, mean=1.0), normal(d)
    t["ln_f.weight"], t["ln_f.bias"] = normal(d, std=0.1, mean=1.0), normal(d)
    return t


def _numpy_gpt2(t: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """GPT-2's forward pass in float64 NumPy: logits ``[len(ids), vocab]``."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    n, hd = len(ids), N_EMBD // N_HEAD

    def ln(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * t[p + ".weight"] + t[p + ".bias"]

    def lin(x, p):
        return x @ t[p + ".weight"] + t[p + ".bias"]

    def heads(a):
        return a.reshape(n, N_HEAD, hd).transpose(1, 0, 2)  # [n, d] -> [heads, n, hd]

    x = t["wte.weight"][ids] + t["wpe.weight"][:n]  # [n, d]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(N_LAYER):
        q, k, v = np.split(lin(ln(x, f"h.{i}.ln_1"), f"h.{i}.attn.c_attn"), 3, axis=-1)
        att = heads(q) @ heads(k).transpose(0, 2, 1) / math.sqrt(hd) + mask  # [heads, n, n]
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ heads(v)).transpose(1, 0, 2).reshape(n, N_EMBD)  # [heads, n, hd] -> [n, d]
        x = x + lin(y, f"h.{i}.attn.c_proj")
        h = lin(ln(x, f"h.{i}.ln_2"), f"h.{i}.mlp.c_fc")
        h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))  # gelu_new
        x = x + lin(h, f"h.{i}.mlp.c_proj")
    return ln(x, "ln_f") @ t["wte.weight"].T


def _numpy_greedy(t: dict[str, np.ndarray], ids: list[int], n: int) -> list[int]:
    out = list(ids)
    for _ in range(n):
        out.append(int(np.argmax(_numpy_gpt2(t, out[-N_CTX:])[-1])))
    return out[len(ids):]


@pytest.fixture(scope="session")
def tensors() -> dict[str, np.ndarray]:
    return _random_gpt2()


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer("gpt2")


@pytest.fixture(scope="session")
def run(tensors, tmp_path_factory) -> Path:
    """The HF dir (config.json + model.safetensors, ``transformer.`` names) imported as a run dir."""
    from tfgpt.convert import import_gpt2

    src = tmp_path_factory.mktemp("gpt2-hf")
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_layer": N_LAYER, "n_head": N_HEAD,
              "n_embd": N_EMBD, "n_positions": N_CTX, "vocab_size": VOCAB, "layer_norm_epsilon": 1e-5,
              "activation_function": "gelu_new", "tie_word_embeddings": True}
    (src / "config.json").write_text(json.dumps(config))
    save_file({f"transformer.{k}": v for k, v in tensors.items()}, str(src / "model.safetensors"))
    out = tmp_path_factory.mktemp("gpt2-run") / "run"
    import_gpt2(src, out)
    return out


@pytest.fixture(scope="session")
def expected(tensors, tokenizer) -> dict:
    """The NumPy GPT-2's greedy continuation of PROMPT: ids and text."""
    ids = tokenizer.encode(PROMPT)
    new = _numpy_greedy(tensors, ids, NEW)
    assert EOT not in new and len(set(new)) > NEW // 2  # a varied continuation: context matters at each step
    return {"prompt_ids": ids, "ids": new, "text": tokenizer.decode_bytes(new).decode("utf-8", errors="replace")}


@pytest.fixture(scope="session")
def export(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpt2-export") / "export"
    assert main(["export", "--run", str(run), "--out", str(out), "--format", "savedmodel,tflite",
                 "--quantize", "int8", "--name", NAME]) == 0
    return out


def test_imported_keras_model_is_the_numpy_gpt2(run, tensors, expected):
    import keras

    import tfgpt

    model, tok = tfgpt.load(run)
    assert tok.vocab_size == VOCAB and tok.eot_id == EOT
    ids = expected["prompt_ids"]
    got = keras.ops.convert_to_numpy(model(np.asarray([ids], np.int32)))[0]
    np.testing.assert_allclose(got, _numpy_gpt2(tensors, ids), atol=1e-4, rtol=0)
    assert tfgpt.generate(model, tok, PROMPT, max_new_tokens=NEW, temperature=0) == expected["text"]


def test_generate_cli(run, expected, capsys):
    assert main(["generate", "--run", str(run), "--prompt", PROMPT, "--max-new-tokens", str(NEW),
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out == PROMPT + expected["text"] + "\n"  # the prompt, then its continuation


def test_chat_cli(run, tensors, tokenizer, monkeypatch, capsys):
    said = "You: Hello there\nModel:"
    new = _numpy_greedy(tensors, tokenizer.encode(said), 6)
    reply = tokenizer.decode_bytes(new).decode("utf-8", errors="replace").split("\nYou:")[0]
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there\n"))
    assert main(["chat", "--run", str(run), "--max-new-tokens", "6", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert f"You: Model:{reply}\nYou: " in out, out


def test_eval_text_cli(run, tensors, tokenizer, tmp_path, capsys):
    text = (CORPUS / "the-verdict.txt").read_text(encoding="utf-8")[:400]
    ids = tokenizer.encode(text)
    assert 2 < len(ids) <= N_CTX + 1  # one window: the reference is one forward pass
    logits = _numpy_gpt2(tensors, ids[:-1])
    top = logits.max(-1)
    nll = np.log(np.exp(logits - top[:, None]).sum(-1)) + top - logits[np.arange(len(ids) - 1), ids[1:]]
    path = tmp_path / "verdict.txt"
    path.write_text(text, encoding="utf-8")
    assert main(["eval", "--run", str(run), "--text", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == len(ids) - 1 and out["file"] == str(path)
    assert out["loss"] == pytest.approx(float(nll.mean()), abs=1e-4)
    assert out["perplexity"] == pytest.approx(math.exp(float(nll.mean())), rel=1e-4)


def test_savedmodel_through_the_tf1_session_loader_and_saved_model_cli(export, expected):
    """The loader TF Serving's C++ mirrors, with the GPT-2 BPE in the graph: prompt text in, text out."""
    sm = export / "savedmodel" / NAME / "1"
    got = session_run(sm, "serving_default", {"prompts": np.array([PROMPT], object), "max_new_tokens": NEW})
    assert got["completions"][0].decode("utf-8") == expected["text"]
    assert saved_model_cli_ids(sm, expected["prompt_ids"], NEW) == expected["ids"]


def test_serve_rest_predict_and_completions(export, expected):
    with start_server(export) as base:
        r = requests.post(f"{base}/v1/models/{NAME}:predict",
                          json={"instances": [{"prompts": PROMPT, "max_new_tokens": NEW}]}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["completions"] == expected["text"]
        c = requests.post(f"{base}/v1/completions", json={"prompt": PROMPT, "max_tokens": NEW, "temperature": 0},
                          timeout=120)
        assert c.status_code == 200, c.text
        assert c.json()["choices"][0]["text"] == expected["text"]


def test_tflite_float_prefill_decode(export, tensors, expected, capsys):
    path = export / "tflite" / "model.tflite"
    gen = TFLiteGenerator(path)
    ids = expected["prompt_ids"]
    logits = gen.prefill(ids=np.asarray([ids], np.int32))["logits"][0]
    np.testing.assert_allclose(logits, _numpy_gpt2(tensors, ids)[-1], atol=1e-4, rtol=0)
    assert gen.generate_ids(ids, NEW, temperature=0.0, eot_id=EOT) == expected["ids"]
    assert main(["generate", "--tflite", str(path), "--tokenizer", str(export / "tokenizer"), "--prompt", PROMPT,
                 "--max-new-tokens", str(NEW), "--temperature", "0"]) == 0
    assert capsys.readouterr().out == PROMPT + expected["text"] + "\n"  # prompt + completion, as generate --run
    assert main(["generate", "--tflite", str(path), "--tokenizer", str(export / "tokenizer"), "--prompt", PROMPT,
                 "--max-new-tokens", str(NEW), "--temperature", "0", "--completion-only"]) == 0
    assert capsys.readouterr().out == expected["text"] + "\n"


def test_tflite_int8_prefill_decode(export, tensors, expected):
    """int8 weights change the logits a little: they must stay close to the float model's, and the
    greedy pick must be among the reference's top 5 (exact greedy equality is not promised)."""
    gen = TFLiteGenerator(export / "tflite" / "model_int8.tflite")
    ids = expected["prompt_ids"]
    want = _numpy_gpt2(tensors, ids)[-1]
    got = gen.prefill(ids=np.asarray([ids], np.int32))["logits"][0]
    assert np.corrcoef(got, want)[0, 1] > 0.99
    assert int(np.argmax(got)) in np.argsort(want)[-5:]
    new = gen.generate_ids(ids, NEW, temperature=0.0, eot_id=EOT)
    assert len(new) == NEW and all(0 <= t < VOCAB for t in new)
    sizes = [(export / "tflite" / name).stat().st_size for name in ("model_int8.tflite", "model.tflite")]
    assert sizes[0] < sizes[1]
