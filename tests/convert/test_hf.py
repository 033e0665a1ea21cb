"""Hugging Face GPT-2 dirs: config.json fields, names with and without prefix, shards, buffers, truncation;
write_hf's files as transformers reads them."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from tests.convert.gpt2_files import CTX, D, hf_config, random_tensors, tiny_tokenizer, write_hf
from tfgpt.config import GPTConfig
from tfgpt.convert.gpt2_names import gpt2_state_dict
from tfgpt.convert.hf import hf_config as parse_config
from tfgpt.convert.hf import read_hf, read_safetensors
from tfgpt.convert.hf import write_hf as write_hf_dir
from tfgpt.errors import ConvertError
from tfgpt.model import GPT
from tfgpt.tokenizers import CharTokenizer


def test_hf_config_fields(tmp_path):
    cfg = parse_config(hf_config(320, layer_norm_epsilon=1e-6, resid_pdrop=0.0), tmp_path / "config.json")
    assert cfg == GPTConfig(vocab_size=320, block_size=CTX, n_layer=2, n_head=2, n_embd=D, dropout=0.0,
                            layer_norm_epsilon=1e-6)
    old = {k: v for k, v in hf_config(320).items() if k != "n_positions"}  # only n_ctx: older files
    assert parse_config(old, tmp_path / "config.json").block_size == CTX


@pytest.mark.parametrize("override,message", [
    ({"activation_function": "gelu"}, "activation_function 'gelu'"),
    ({"n_inner": 20}, "n_inner 20"),
    ({"model_type": "llama"}, "model_type 'llama'"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings=False"),
    ({"n_embd": None}, "missing n_embd / hidden_size"),
    ({"n_embd": "wide"}, "n_embd: invalid literal"),
    ({"n_head": 3}, "divisible"),
])
def test_hf_config_refusals(tmp_path, override, message):
    with pytest.raises(ConvertError, match=f"config.json: .*{message}"):
        parse_config(hf_config(320, **override), tmp_path / "config.json")


@pytest.mark.parametrize("prefix,shards,buffers", [("", 1, False), ("transformer.", 1, True), ("", 2, True),
                                                   ("transformer.", 3, False)])
def test_read_hf_names_shards_buffers(tmp_path, prefix, shards, buffers):
    tensors = random_tensors(50, seed=5)
    d = write_hf(tmp_path / "hf", tensors, hf_config(50), prefix=prefix, shards=shards, buffers=buffers)
    ckpt = read_hf(d)
    got = gpt2_state_dict(ckpt.model)
    assert sorted(got) == sorted(tensors) and all(np.array_equal(got[k], tensors[k]) for k in tensors)
    assert ckpt.layout == ("hf-safetensors" if shards == 1 else "hf-safetensors-sharded")
    names = [p.name for p in ckpt.files]
    assert names[0] == "config.json" and len(names) == (2 if shards == 1 else 2 + shards)


def test_missing_shard_and_missing_weights(tmp_path):
    d = write_hf(tmp_path / "hf", random_tensors(50), hf_config(50), shards=2)
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConvertError, match=r"index.json: names shard model-00002-of-00002.safetensors, which is"):
        read_hf(d)
    (d / "model.safetensors.index.json").unlink()
    with pytest.raises(ConvertError, match="no model.safetensors or model.safetensors.index.json"):
        read_hf(d)


def test_shard_names_stay_beside_the_index(tmp_path):
    d = write_hf(tmp_path / "hf", random_tensors(50), hf_config(50), shards=2)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    index["weight_map"]["wte.weight"] = "../elsewhere.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConvertError, match=r"index.json: shard name '../elsewhere.safetensors' is not a file name"):
        read_hf(d)


def test_duplicate_with_and_without_prefix(tmp_path):
    from safetensors.numpy import save_file

    t = random_tensors(50)
    d = write_hf(tmp_path / "hf", t, hf_config(50))
    save_file({**t, "transformer.wte.weight": t["wte.weight"]}, str(d / "model.safetensors"))
    with pytest.raises(ConvertError, match=r"tensor (transformer\.)?wte\.weight duplicates"):
        read_hf(d)


def test_truncation_names_the_first_cut_tensor(tmp_path):
    from safetensors.numpy import save_file

    f = tmp_path / "model.safetensors"
    save_file({"a": np.zeros(10, "float32"), "b": np.ones(10, "float32")}, str(f))
    n = struct.unpack("<Q", f.read_bytes()[:8])[0]
    header = json.loads(f.read_bytes()[8:8 + n])
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    f.write_bytes(f.read_bytes()[:-4])
    with pytest.raises(ConvertError, match=rf"model.safetensors: tensor {last} is truncated: it ends at byte 80 "
                                           r"of the data, the file holds 76"):
        read_safetensors(f)
    f.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ConvertError, match="not a safetensors file \\(bad header: JSONDecodeError"):
        read_safetensors(f)
    f.write_bytes(struct.pack("<Q", 10) + b'{"a": [1]}')  # a header without data_offsets
    with pytest.raises(ConvertError, match="not a safetensors file \\(bad header: TypeError"):
        read_safetensors(f)
    with pytest.raises(ConvertError, match="weights file not found"):
        read_safetensors(tmp_path / "absent.safetensors")


def test_write_hf_files(tmp_path):
    from safetensors import safe_open

    tok = tiny_tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=CTX, n_layer=1, n_head=2, n_embd=D,
                          layer_norm_epsilon=1e-6))
    files = write_hf_dir(model, tok, tmp_path / "out")
    assert files == ["model.safetensors", "config.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                     "special_tokens_map.json"]
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "numpy") as f:
        assert f.metadata() == {"format": "pt"}
        assert sorted(f.keys()) == sorted("transformer." + k for k in gpt2_state_dict(model))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert {k: config[k] for k in ("architectures", "model_type", "vocab_size", "n_positions", "n_embd", "n_layer",
                                   "n_head", "layer_norm_epsilon", "activation_function", "tie_word_embeddings",
                                   "eos_token_id")} == {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": tok.vocab_size, "n_positions": CTX,
        "n_embd": D, "n_layer": 1, "n_head": 2, "layer_norm_epsilon": 1e-6, "activation_function": "gelu_new",
        "tie_word_embeddings": True, "eos_token_id": tok.eot_id}
    vocab = json.loads((tmp_path / "out" / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == tok.encoder and list(vocab.values()) == sorted(vocab.values())
    merges = (tmp_path / "out" / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2" and [tuple(m.split(" ")) for m in merges[1:]] == tok.merges
    tok_cfg = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert (tok_cfg["tokenizer_class"], tok_cfg["eos_token"], tok_cfg["model_max_length"]) == (
        "GPT2Tokenizer", "<|endoftext|>", CTX)
    assert json.loads((tmp_path / "out" / "special_tokens_map.json").read_text())["bos_token"] == "<|endoftext|>"
    again = read_hf(tmp_path / "out")
    assert again.model.config == model.config


def test_write_hf_refuses_char_tokenizer(tmp_path):
    tok = CharTokenizer.train(["abc"])
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=CTX, n_layer=1, n_head=2, n_embd=D))
    with pytest.raises(ConvertError, match="tokenizer type 'char'.*byte-level BPE only"):
        write_hf_dir(model, tok, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_files_load_as_float32(tmp_path, dtype):
    import ml_dtypes

    np_dtype = np.float16 if dtype == "float16" else ml_dtypes.bfloat16
    tensors = {k: v.astype(np_dtype) for k, v in random_tensors(50).items()}
    ckpt = read_hf(write_hf(tmp_path / "hf", tensors, hf_config(50)))
    got = gpt2_state_dict(ckpt.model)
    assert all(got[k].dtype == np.float32 and np.array_equal(got[k], tensors[k].astype("float32")) for k in tensors)
