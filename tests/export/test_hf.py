"""``export --format hf``: a run out as a Hugging Face GPT-2 dir; HF -> tfgpt -> HF gives the same tensors bit
for bit (compared in the safetensors files, no torch); shapes GPT-2 cannot express are refused by option."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tests.convert.gpt2_files import CTX, hf_config, numpy_gpt2, random_tensors, tiny_tokenizer, write_hf
from tfgpt.config import GPTConfig
from tfgpt.convert import import_gpt2
from tfgpt.convert.hf import read_hf, read_safetensors
from tfgpt.errors import ExportError
from tfgpt.export import export_run
from tfgpt.model import GPT
from tfgpt.runs import save_run


def _tensors_of(directory) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        for k, v in read_safetensors(f).items():
            if not k.endswith((".attn.bias", ".attn.masked_bias")):
                out[k.removeprefix("transformer.")] = v
    return out


@pytest.mark.parametrize("prefix,shards", [("transformer.", 1), ("", 2)])
def test_round_trip_hf_tfgpt_hf_is_bit_exact(tmp_path, prefix, shards):
    tok = tiny_tokenizer()
    tensors = random_tensors(tok.vocab_size, seed=8)
    src = write_hf(tmp_path / "src", tensors, hf_config(tok.vocab_size), prefix=prefix, shards=shards,
                   buffers=True, tok=tok)
    import_gpt2(src, tmp_path / "run")
    info = export_run(tmp_path / "run", tmp_path / "export", formats="hf")
    hf = tmp_path / "export" / "hf"
    out = _tensors_of(hf)
    assert sorted(out) == sorted(tensors)
    for name, array in tensors.items():
        assert out[name].dtype == array.dtype and np.array_equal(out[name], array), name
    assert set(read_safetensors(hf / "model.safetensors")) == {"transformer." + k for k in tensors}
    assert json.loads((hf / "vocab.json").read_text(encoding="utf-8")) == json.loads(
        (src / "vocab.json").read_text(encoding="utf-8"))
    assert (hf / "merges.txt").read_text(encoding="utf-8") == (src / "merges.txt").read_text(encoding="utf-8")
    config, source = json.loads((hf / "config.json").read_text()), hf_config(tok.vocab_size)
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon",
                "activation_function", "resid_pdrop"):
        assert config[key] == source[key], key
    assert info["formats"] == ["hf"] and sorted(info["hf"]["files"]) == sorted(
        f"hf/{n}" for n in ("model.safetensors", "config.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                            "special_tokens_map.json"))
    assert json.loads((tmp_path / "export" / "export.json").read_text())["hf"]["path"] == "hf"


def test_trained_bpe_run_exports_and_reads_back(tmp_path):
    tok = tiny_tokenizer()
    keras.utils.set_random_seed(9)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=CTX, n_layer=2, n_head=2, n_embd=8))
    save_run(tmp_path / "run", model, tok)
    export_run(tmp_path / "run", tmp_path / "export", formats="hf")
    again = read_hf(tmp_path / "export" / "hf")
    ids = tok.encode("I had always thought")
    ref = numpy_gpt2(_tensors_of(tmp_path / "export" / "hf"), ids)
    assert np.abs(np.asarray(again.model(np.array([ids])))[0] - ref).max() <= 1e-4
    assert np.abs(np.asarray(model(np.array([ids])))[0] - ref).max() <= 1e-4


@pytest.mark.parametrize("field,value,option", [("norm", "post", "model.norm='post'"), ("bias", False, "model.bias"),
                                                ("tie_embeddings", False, "model.tie_embeddings")])
def test_shapes_gpt2_cannot_express_are_refused(tmp_path, field, value, option):
    tok = tiny_tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=CTX, n_layer=1, n_head=2, n_embd=8, **{field: value}))
    save_run(tmp_path / "run", model, tok)
    with pytest.raises(ExportError, match=rf"run: --format hf: {option}"):
        export_run(tmp_path / "run", tmp_path / "export", formats="savedmodel,hf")
    assert not (tmp_path / "export").exists()


def test_char_tokenizer_run_is_refused(tiny_run, tmp_path):
    with pytest.raises(ExportError, match=r"--format hf: tokenizer type 'char'.*--format savedmodel,tflite"):
        export_run(tiny_run, tmp_path / "export", formats="hf")
    assert not (tmp_path / "export").exists()


def test_verify_reads_the_hf_dir_back(tmp_path):
    tok = tiny_tokenizer()
    keras.utils.set_random_seed(10)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=CTX, n_layer=1, n_head=2, n_embd=8))
    save_run(tmp_path / "run", model, tok)
    info = export_run(tmp_path / "run", tmp_path / "export", formats="hf", verify=True)
    figures = info["verification"]["hf"]
    assert figures["tensors_equal"] and figures["tokenizer_equal"] and figures["prompts"] > 0
    assert figures["logits_max_abs_diff"] <= 1e-5


def test_verify_hf_catches_a_changed_tensor_and_tokenizer(tmp_path):
    from safetensors.numpy import save_file

    from tfgpt.export.hf import verify_hf
    from tfgpt.tokenizers import BPETokenizer

    tok = tiny_tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=CTX, n_layer=1, n_head=2, n_embd=8))
    hf = tmp_path / "hf"
    from tfgpt.convert.hf import write_hf as write_hf_dir

    write_hf_dir(model, tok, hf)
    tensors = read_safetensors(hf / "model.safetensors")
    save_file({**tensors, "transformer.ln_f.bias": tensors["transformer.ln_f.bias"] + 1}, str(hf / "model.safetensors"))
    with pytest.raises(ExportError, match=r"hf: tensor ln_f.bias differs from the model's \(1 differ\)"):
        verify_hf(hf, model, tok, ["I had"])
    write_hf_dir(model, tok, hf)
    other = BPETokenizer.train(["I had always thought " * 30], vocab_size=tok.vocab_size)
    with pytest.raises(ExportError, match="do not hold the run's tokenizer"):
        verify_hf(hf, model, other, ["I had"])
