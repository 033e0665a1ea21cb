"""import_gpt2 end to end: tiny random GPT-2s in every layout become run dirs that compute GPT-2's logits;
every bad input is one line naming the file and the tensor, and leaves nothing at --out."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import tfgpt
from tests.convert.gpt2_files import (
    CTX,
    N_HEAD,
    N_LAYER,
    D,
    hf_config,
    numpy_gpt2,
    openai_hparams,
    random_tensors,
    tiny_tokenizer,
    write_hf,
    write_openai,
    write_tokenizer,
)
from tfgpt.convert import gpt2_state_dict, import_gpt2
from tfgpt.convert.gpt2 import detect_layout
from tfgpt.errors import ConvertError, TfgptError

TEXT = "I had always thought Jack Gisburn rather a cheap genius"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def tensors(tok):
    return random_tensors(tok.vocab_size, seed=1)


def _layout(kind: str, d: Path, tensors: dict, tok) -> Path:
    v = tok.vocab_size
    if kind == "hf":
        return write_hf(d, tensors, hf_config(v), tok=tok)
    if kind == "hf-prefix-buffers":
        return write_hf(d, tensors, hf_config(v), prefix="transformer.", buffers=True, tok=tok)
    if kind == "hf-sharded":
        return write_hf(d, tensors, hf_config(v), shards=3, tok=tok)
    if kind == "hf-sharded-prefix":
        return write_hf(d, tensors, hf_config(v), prefix="transformer.", shards=2, buffers=True, tok=tok)
    return write_openai(d, tensors, openai_hparams(v), tok=tok)


EXPECTED_LAYOUT = {"hf": "hf-safetensors", "hf-prefix-buffers": "hf-safetensors",
                   "hf-sharded": "hf-safetensors-sharded", "hf-sharded-prefix": "hf-safetensors-sharded",
                   "openai": "openai-tf-checkpoint"}


@pytest.mark.parametrize("kind", list(EXPECTED_LAYOUT))
def test_every_layout_imports_to_gpt2s_logits(kind, tmp_path, tensors, tok):
    src = _layout(kind, tmp_path / "src", tensors, tok)
    info = import_gpt2(src, tmp_path / "run")
    model, tokenizer = tfgpt.load(tmp_path / "run")
    got = gpt2_state_dict(model)
    assert sorted(got) == sorted(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)  # bit for bit
    ids = tokenizer.encode(TEXT)[:CTX]
    assert tokenizer.encode(TEXT) == tok.encode(TEXT) and len(ids) == CTX
    logits = np.asarray(model(np.array([ids], "int32")))[0]
    assert np.abs(logits - numpy_gpt2(tensors, ids)).max() <= 1e-4
    assert info["layout"] == EXPECTED_LAYOUT[kind] and info["tokenizer"]["how"] == "beside the weights"


def test_run_dir_config_and_source_json(tmp_path, tensors, tok):
    src = write_hf(tmp_path / "src", tensors, hf_config(tok.vocab_size, layer_norm_epsilon=1e-6), shards=2, tok=tok)
    import_gpt2(src, tmp_path / "run")
    model_cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]
    assert model_cfg == {"vocab_size": tok.vocab_size, "block_size": CTX, "n_layer": N_LAYER, "n_head": N_HEAD,
                         "n_embd": D, "dropout": 0.1, "bias": True, "norm": "pre", "tie_embeddings": True,
                         "layer_norm_epsilon": 1e-6}
    source = json.loads((tmp_path / "run" / "source.json").read_text())
    names = [f["path"] for f in source["files"]]
    assert names == ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                     "model-00002-of-00002.safetensors"]
    for f in source["files"] + source["tokenizer"]["files"]:
        data = (src / f["path"]).read_bytes()
        assert (f["sha256"], f["size_bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))
    assert [f["path"] for f in source["tokenizer"]["files"]] == ["vocab.json", "merges.txt"]
    assert source["hyperparameters"]["n_positions"] == CTX and source["tfgpt_version"] == tfgpt.__version__
    assert source["layout"] == "hf-safetensors-sharded" and source["from"] == str(src.resolve())


def test_packaged_tokenizer_when_none_beside(tmp_path):
    tensors = random_tensors(50257, seed=2, n_layer=1)
    src = write_hf(tmp_path / "src", tensors, hf_config(50257, n_layer=1))
    info = import_gpt2(src, tmp_path / "run")
    _, tokenizer = tfgpt.load(tmp_path / "run")
    assert (tokenizer.kind, tokenizer.vocab_size, info["tokenizer"]["how"]) == ("gpt2", 50257, "packaged gpt2")
    assert tokenizer.encode("Hello world<|endoftext|>") == [15496, 995, 50256]


def test_tokenizer_option_dir_and_gpt2(tmp_path, tensors, tok):
    src = write_hf(tmp_path / "src", tensors, hf_config(tok.vocab_size))  # no tokenizer beside
    (tmp_path / "tok").mkdir()
    write_tokenizer(tmp_path / "tok", tok, ("encoder.json", "vocab.bpe"))
    info = import_gpt2(src, tmp_path / "run", tokenizer=tmp_path / "tok")
    assert info["tokenizer"]["how"] == "--tokenizer DIR"
    assert tfgpt.load(tmp_path / "run")[1].encode(TEXT) == tok.encode(TEXT)
    with pytest.raises(ConvertError, match=r"tokenizer has 50257 tokens .*wte.weight has 320 rows"):
        import_gpt2(src, tmp_path / "run2", tokenizer="gpt2")
    assert not (tmp_path / "run2").exists()


def test_detect_layout(tmp_path, tensors, tok):
    assert detect_layout(write_hf(tmp_path / "a", tensors, hf_config(tok.vocab_size))) == "hf"
    assert detect_layout(write_openai(tmp_path / "b", tensors, openai_hparams(tok.vocab_size))) == "openai"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConvertError, match="no GPT-2 checkpoint found"):
        detect_layout(tmp_path / "empty")
    with pytest.raises(ConvertError, match="absent: not found"):
        detect_layout(tmp_path / "absent")


# -- bad input ----------------------------------------------------------------------------------------


def _no_trace(out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []


def _bad(src: Path, out: Path, pattern: str, **kw) -> str:
    with pytest.raises(ConvertError, match=pattern) as e:
        import_gpt2(src, out, **kw)
    assert isinstance(e.value, TfgptError) and "\n" not in str(e.value)
    _no_trace(out)
    return str(e.value)


def test_missing_tensor(tmp_path, tensors, tok):
    t = {k: v for k, v in tensors.items() if k != "h.1.mlp.c_fc.bias"}
    src = write_hf(tmp_path / "src", t, hf_config(tok.vocab_size), tok=tok)
    _bad(src, tmp_path / "run", r"src/model.safetensors: tensor h\.1\.mlp\.c_fc\.bias is missing")


def test_missing_tensor_of_a_sharded_checkpoint_names_the_index(tmp_path, tensors, tok):
    t = {k: v for k, v in tensors.items() if k != "wpe.weight"}
    src = write_hf(tmp_path / "src", t, hf_config(tok.vocab_size), shards=2, tok=tok)
    _bad(src, tmp_path / "run", r"src/model.safetensors.index.json: tensor wpe\.weight is missing")


def test_unexpected_tensor(tmp_path, tensors, tok):
    t = {**tensors, "h.0.attn.q_proj.weight": np.zeros((D, D), "float32")}
    src = write_hf(tmp_path / "src", t, hf_config(tok.vocab_size), prefix="transformer.", shards=2, tok=tok)
    _bad(src, tmp_path / "run", r"model-0000\d-of-00002.safetensors: tensor transformer\.h\.0\.attn\.q_proj\.weight "
                                r"is unexpected")


def test_wrong_shape(tmp_path, tensors, tok):
    t = {**tensors, "h.0.mlp.c_fc.weight": tensors["h.0.mlp.c_fc.weight"].T.copy()}  # [out, in]: nn.Linear's
    src = write_hf(tmp_path / "src", t, hf_config(tok.vocab_size), tok=tok)
    _bad(src, tmp_path / "run", r"model.safetensors: tensor h\.0\.mlp\.c_fc\.weight has shape \[32, 8\], "
                                r"expected \[8, 32\]")


def test_hparams_disagree_with_tensors(tmp_path, tensors, tok):
    src = write_hf(tmp_path / "src", tensors, hf_config(tok.vocab_size, n_embd=16), tok=tok)
    msg = _bad(src, tmp_path / "run",
               r"model.safetensors: tensor wte\.weight has shape \[320, 8\], expected \[320, 16\]")
    assert "config.json" in msg
    oa = write_openai(tmp_path / "oa", tensors, openai_hparams(tok.vocab_size, n_layer=3), tok=tok)
    msg = _bad(oa, tmp_path / "run", r"model.ckpt: tensor model/h2/ln_1/g is missing")
    assert "hparams.json" in msg and "n_layer=3" in msg


def test_tokenizer_size_disagrees_with_wte(tmp_path, tensors):
    other = tiny_tokenizer().__class__.train(["aaa bbb ccc " * 50], vocab_size=270)
    src = write_hf(tmp_path / "src", tensors, hf_config(320), tok=other)
    _bad(src, tmp_path / "run", rf"src/vocab.json: tokenizer has {other.vocab_size} tokens but .*model.safetensors: "
                                r"tensor wte.weight has 320 rows")


def test_truncated_safetensors(tmp_path, tensors, tok):
    src = write_hf(tmp_path / "src", tensors, hf_config(tok.vocab_size), tok=tok)
    f = src / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size - 100])
    _bad(src, tmp_path / "run", r"model.safetensors: tensor \S+ is truncated")
    f.write_bytes(f.read_bytes()[:20])
    _bad(src, tmp_path / "run", r"model.safetensors: truncated safetensors file")


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.pkl"])
def test_pickle_is_refused_unopened(tmp_path, tok, name):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(hf_config(tok.vocab_size)))
    (src / name).write_bytes(b"\x80\x04not really a pickle")
    msg = _bad(src, tmp_path / "run", rf"src/{name}: a pickle-based file")
    assert "safetensors" in msg and "never opens pickle" in msg
    _bad(src / name, tmp_path / "run", rf"{name}: a pickle-based file")


def test_pickle_renamed_as_safetensors(tmp_path, tok):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(hf_config(tok.vocab_size)))
    (src / "model.safetensors").write_bytes(b"PK\x03\x04 a torch zip")
    _bad(src, tmp_path / "run", "model.safetensors: a PyTorch/pickle file")


def test_untied_head_refused_tied_accepted(tmp_path, tensors, tok):
    tied = write_hf(tmp_path / "tied", {**tensors, "lm_head.weight": tensors["wte.weight"]}, hf_config(320), tok=tok)
    import_gpt2(tied, tmp_path / "ok")
    assert tfgpt.load(tmp_path / "ok")[0].config.tie_embeddings
    head = tensors["wte.weight"] + 1
    src = write_hf(tmp_path / "src", {**tensors, "lm_head.weight": head}, hf_config(320), tok=tok)
    _bad(src, tmp_path / "run", r"model.safetensors: tensor lm_head.weight differs from wte.weight: an untied head")


def test_out_holding_a_run_is_never_overwritten(tmp_path, tensors, tok):
    src = write_hf(tmp_path / "src", tensors, hf_config(tok.vocab_size), tok=tok)
    import_gpt2(src, tmp_path / "run")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    with pytest.raises(ConvertError, match=r"run: an existing run; import-gpt2 never overwrites"):
        import_gpt2(src, tmp_path / "run")
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConvertError, match="other: not empty"):
        import_gpt2(src, tmp_path / "other")
    (tmp_path / "empty").mkdir()
    import_gpt2(src, tmp_path / "empty")  # an empty dir is fine
    assert (tmp_path / "empty" / "source.json").is_file()


def test_failure_while_writing_removes_the_stage(tmp_path, tensors, tok, monkeypatch):
    import tfgpt.convert.gpt2 as gpt2

    src = write_hf(tmp_path / "src", tensors, hf_config(tok.vocab_size), tok=tok)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gpt2, "save_run", broken)
    with pytest.raises(OSError, match="disk full"):
        import_gpt2(src, tmp_path / "run")
    _no_trace(tmp_path / "run")


def test_source_dir_is_left_as_it_was(tmp_path, tensors, tok):
    src = write_hf(tmp_path / "src", tensors, hf_config(tok.vocab_size), tok=tok)
    snapshot = {p.name: p.read_bytes() for p in src.iterdir()}
    import_gpt2(src, tmp_path / "run")
    assert {p.name: p.read_bytes() for p in src.iterdir()} == snapshot
    shutil.rmtree(tmp_path / "run")


def test_keras_hub_preset_imports_to_its_logits(tmp_path, tok):
    from tests.convert.gpt2_files import keras_hub_logits, write_keras_hub

    backbone = write_keras_hub(tmp_path / "preset", tok, seed=3)
    info = import_gpt2(tmp_path / "preset", tmp_path / "run")
    model, tokenizer = tfgpt.load(tmp_path / "run")
    ids = tokenizer.encode(TEXT)[:CTX]
    assert tokenizer.encode(TEXT) == tok.encode(TEXT)
    got = np.asarray(model(np.array([ids], "int32")))[0]
    assert np.abs(got - keras_hub_logits(backbone, ids)).max() <= 1e-4
    assert np.abs(got - numpy_gpt2(gpt2_state_dict(model), ids)).max() <= 1e-4
    assert info["layout"] == "keras-hub-preset" and info["tokenizer"]["how"] == "beside the weights"
    assert [f["path"] for f in info["tokenizer"]["files"]] == ["assets/tokenizer/vocabulary.json",
                                                               "assets/tokenizer/merges.txt"]
    assert [f["path"] for f in info["files"]] == ["config.json", "model.weights.h5", "metadata.json"]
    assert model.config.n_layer == N_LAYER and model.config.block_size == CTX


def test_keras_hub_preset_bad_input(tmp_path, tok):
    from tests.convert.gpt2_files import write_keras_hub

    write_keras_hub(tmp_path / "preset", tok)
    weights = tmp_path / "preset" / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:4000])
    _bad(tmp_path / "preset", tmp_path / "run", r"preset/model.weights.h5: could not load the preset")
    cfg = json.loads((tmp_path / "preset" / "config.json").read_text())
    cfg["registered_name"] = "keras_hub>GemmaBackbone"
    (tmp_path / "preset" / "config.json").write_text(json.dumps(cfg))
    _bad(tmp_path / "preset", tmp_path / "run", r"preset/config.json: a keras-hub 'keras_hub>GemmaBackbone' preset")


_OPENED: list[str] | None = None  # paths opened while a test watches (an audit hook cannot be removed)


def _watch_opens(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and args and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_watch_opens)


def test_safetensors_beside_a_pickle_is_read_and_the_pickle_left_unopened(tmp_path, tensors, tok):
    global _OPENED
    src = write_hf(tmp_path / "src", tensors, hf_config(tok.vocab_size), tok=tok)
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04 would run code")
    _OPENED = []
    try:
        info = import_gpt2(src, tmp_path / "run")
        opened, _OPENED = _OPENED, None
    finally:
        _OPENED = None
    assert any(p.endswith("vocab.json") for p in opened)  # the watch sees the files that are read
    assert info["layout"] == "hf-safetensors" and not any(p.endswith("pytorch_model.bin") for p in opened)
    assert "pytorch_model.bin" not in [f["path"] for f in info["files"]]
