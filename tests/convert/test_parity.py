"""Exactness against Hugging Face: a random ``GPT2LMHeadModel`` imported into tfgpt gives the same logits
(max abs diff <= 1e-4, float32), a tfgpt run exported with ``--format hf`` loads in ``GPT2LMHeadModel``
and ``AutoTokenizer`` with the same logits and ids, and HF -> tfgpt -> HF gives the same tensors.

Needs the ``parity`` extra (torch + transformers; ``make test`` installs it); skipped without it.
Every model is built here with random weights: nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="HF parity tests need torch: pip install -e '.[parity]' (make test installs it)")
transformers = pytest.importorskip(
    "transformers", reason="HF parity tests need transformers: pip install -e '.[parity]' (make test installs it)")

import keras  # noqa: E402

import tfgpt  # noqa: E402
from tests.tokenizers.helpers import ADVERSARIAL  # noqa: E402
from tfgpt.cli import main  # noqa: E402
from tfgpt.convert import import_gpt2  # noqa: E402

CORPUS = Path(__file__).parents[1] / "fixtures" / "corpus"
TOL = 1e-4
HF_SHAPE = dict(n_layer=2, n_head=2, n_embd=64, n_positions=64, vocab_size=50257)


def _perturb(module, seed: int) -> None:
    """Every parameter random (LayerNorm gains near 1), so biases and norms are all exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            gain = ("ln_" in name) and name.endswith(".weight")
            p.copy_(1.0 + 0.1 * noise if gain else 0.05 * noise)


def _hf_model(seed: int = 0, **shape):
    config = transformers.GPT2Config(**{**HF_SHAPE, **shape})
    model = transformers.GPT2LMHeadModel(config).eval()
    _perturb(model, seed)
    model.tie_weights()
    return model


def _hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(ids.astype("int64"))).logits.numpy()


def _tf_logits(run, ids: np.ndarray) -> np.ndarray:
    model, _ = tfgpt.load(run)
    return keras.ops.convert_to_numpy(model(ids.astype("int32")))


def _ids(seed: int = 1, vocab: int = 50257, length: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, (2, length))


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == np.float32
    assert float(want.std()) > 0.1  # real logits, not a near-constant that any import would match
    diff = float(np.abs(got - want).max())
    assert diff <= TOL, f"max abs logit diff {diff:.3g} > {TOL}"


@pytest.fixture(scope="module")
def hf_model():
    return _hf_model()


@pytest.mark.parametrize("layout", ["single", "sharded", "no-prefix"])
def test_import_matches_hf_logits(hf_model, layout, tmp_path):
    """model.safetensors (``transformer.`` prefix), sharded + index.json, and a bare GPT2Model dir."""
    src = tmp_path / "hf"
    if layout == "single":
        hf_model.save_pretrained(src, safe_serialization=True)
    elif layout == "sharded":
        hf_model.save_pretrained(src, safe_serialization=True, max_shard_size="2MB")
        assert len(json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]) > 0
        assert len(list(src.glob("model-*-of-*.safetensors"))) > 1
    else:
        hf_model.transformer.save_pretrained(src, safe_serialization=True)
    run = tmp_path / "run"
    import_gpt2(src, run)
    ids = _ids()
    _assert_close(_tf_logits(run, ids), _hf_logits(hf_model, ids))
    cfg = tfgpt.load(run)[0].config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size) == (2, 2, 64, 64, 50257)


def test_import_matches_hf_on_short_and_batched_prompts(hf_model, tmp_path):
    """Prompt lengths other than the block size: the causal mask and positions agree too."""
    hf_model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    import_gpt2(tmp_path / "hf", tmp_path / "run")
    for length in (1, 7, 33):
        ids = _ids(seed=length, length=length)
        _assert_close(_tf_logits(tmp_path / "run", ids), _hf_logits(hf_model, ids))


@pytest.fixture(scope="module")
def tfgpt_run(tmp_path_factory):
    """A tfgpt run (GPT-2 tokenizer, random weights, perturbed norms) trained-from-scratch style."""
    from tfgpt.config import GPTConfig
    from tfgpt.model import GPT
    from tfgpt.runs import save_run
    from tfgpt.tokenizers import build_tokenizer

    keras.utils.set_random_seed(4)
    model = GPT(GPTConfig(vocab_size=50257, block_size=48, n_layer=2, n_head=4, n_embd=32))
    model.build((None, None))
    rng = np.random.default_rng(4)
    for v in model.weights:
        base = 1.0 if "gamma" in v.path else 0.0
        v.assign((base + rng.normal(0, 0.1 if base else 0.05, tuple(v.shape))).astype("float32"))
    return save_run(tmp_path_factory.mktemp("tfgpt-run") / "run", model, build_tokenizer("gpt2"))


@pytest.fixture(scope="module")
def exported(tfgpt_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "out"
    assert main(["export", "--run", str(tfgpt_run), "--out", str(out), "--format", "hf"]) == 0
    return out / "hf"


def test_export_hf_loads_in_transformers_with_equal_logits(tfgpt_run, exported):
    hf = transformers.GPT2LMHeadModel.from_pretrained(exported).eval()
    assert (hf.config.n_layer, hf.config.n_head, hf.config.n_embd, hf.config.n_positions) == (2, 4, 32, 48)
    for length in (48, 5):
        ids = _ids(seed=length, length=length)
        _assert_close(_tf_logits(tfgpt_run, ids), _hf_logits(hf, ids))


def test_export_hf_tokenizer_encodes_like_tfgpt(tfgpt_run, exported):
    from tfgpt.tokenizers import load_tokenizer

    ours = load_tokenizer(tfgpt_run / "tokenizer")
    theirs = transformers.AutoTokenizer.from_pretrained(exported)
    texts = [t for t in ADVERSARIAL if t] + ["Hello, world! It's 2026.\n\n  Indented\tline",
                                              (CORPUS / "the-verdict.txt").read_text(encoding="utf-8")[:4000]]
    for text in texts:
        assert theirs.encode(text) == ours.encode(text), repr(text)
    assert theirs.decode(ours.encode("naïve café 😀")) == "naïve café 😀"


def test_hf_to_tfgpt_to_hf_gives_the_same_tensors(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    import_gpt2(tmp_path / "hf", tmp_path / "run")
    export_dir = tmp_path / "export"
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(export_dir), "--format", "hf"]) == 0
    again = transformers.GPT2LMHeadModel.from_pretrained(export_dir / "hf").eval()
    want, got = hf_model.state_dict(), again.state_dict()
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    ids = _ids(seed=9)
    np.testing.assert_array_equal(_hf_logits(again, ids), _hf_logits(hf_model, ids))
