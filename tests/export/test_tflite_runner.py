"""tfgpt.export.tflite_runner: the LiteRT runner equals Keras, stays in the vocabulary, refuses bad input."""

from __future__ import annotations

import pytest

import tfgpt
from tfgpt.errors import ExportError
from tfgpt.export.tflite_runner import TFLiteGenerator, generate_tflite


def test_float_greedy_equals_keras_and_int8_reported(exported, loaded):
    model, tok = loaded
    out, info = exported
    for prompt in ["ROMEO:", "The ", "w"]:
        text = generate_tflite(out / "tflite" / "model.tflite", out / "tokenizer", prompt, 20, temperature=0)
        assert text == tfgpt.generate(model, tok, prompt, max_new_tokens=20, temperature=0)
    v = info["verification"]["tflite"]
    assert v["model.tflite"]["greedy_tokens_equal"] is True
    assert "greedy_tokens_equal" in v["model_int8.tflite"]
    for p in v["model_int8.tflite"]["prompts"]:
        assert p["first_divergence"] is None or 0 <= p["first_divergence"] < p["tokens"]


def test_runner_never_produces_padded_vocabulary_ids(padded_exported):
    out, info = padded_exported
    model, tok = tfgpt.load(out.parent / "run")
    path = out / "tflite" / "model.tflite"
    for prompt in ["ROMEO:", "hello"]:
        text = generate_tflite(path, None, prompt, 8, temperature=0)
        assert text == tfgpt.generate(model, tok, prompt, max_new_tokens=8, temperature=0)
    assert info["verification"]["tflite"]["model.tflite"]["greedy_tokens_equal"] is True
    gen = TFLiteGenerator(path)
    assert gen.vocab_size == tok.vocab_size + 40
    assert max(gen.generate_ids(tok.encode("hello"), 4, temperature=0)) >= tok.vocab_size  # unmasked
    for seed in range(3):
        ids = gen.generate_ids(tok.encode("hello"), 8, temperature=1.0, seed=seed, vocab_limit=tok.vocab_size)
        assert max(ids) < tok.vocab_size
    with pytest.raises(tfgpt.errors.GenerationError, match="vocab_limit must be in"):
        gen.generate_ids([1], 2, vocab_limit=0)


@pytest.fixture(scope="module")
def varied_tflite(tmp_path_factory):
    """A float TFLite export of a tiny run whose greedy text past the block varies (seed 3; seed 0's repeats one
    character, which would make shift and slide agree trivially)."""
    from export_tiny_run import make_tiny_run

    from tfgpt.export import export_run

    root = tmp_path_factory.mktemp("varied")
    run = make_tiny_run(root / "run", seed=3)
    export_run(run, root / "export", formats="tflite", verify=False, name="varied")
    return root / "export" / "tflite" / "model.tflite", tfgpt.load(run)


@pytest.mark.slow
def test_runner_goes_past_block_size_as_keras_does(varied_tflite):
    path, (model, tok) = varied_tflite
    texts = {}
    for context in ("shift", "slide"):  # 6 + 70 > block_size 32: two shifts
        texts[context] = generate_tflite(path, None, "ROMEO:", 70, temperature=0, context=context)
        assert texts[context] == tfgpt.generate(model, tok, "ROMEO:", 70, temperature=0, context=context), context
    assert texts["shift"] != texts["slide"] and len(set(texts["shift"])) > 2
    assert texts["shift"] == generate_tflite(path, None, "ROMEO:", 70, temperature=0)  # the default
    with pytest.raises(tfgpt.errors.GenerationError, match="context must be one of shift, slide"):
        generate_tflite(path, None, "ROMEO:", 3, context="crop")


def test_runner_slides_past_block_size_and_samples(exported):
    out, _ = exported
    path = out / "tflite" / "model.tflite"
    text = generate_tflite(path, None, "ROMEO:", 40, temperature=0)  # 6 + 40 > block_size 32
    assert len(text) == 40
    a = generate_tflite(path, None, "ROMEO:", 10, temperature=0.8, top_k=5, seed=1)
    assert a == generate_tflite(path, None, "ROMEO:", 10, temperature=0.8, top_k=5, seed=1)
    stop = text[3]
    assert generate_tflite(path, None, "ROMEO:", 10, temperature=0, stop=stop) == text[: text.index(stop)]


def test_runner_bad_input(exported, tmp_path):
    out, _ = exported
    with pytest.raises(ExportError, match="not found"):
        generate_tflite(tmp_path / "missing.tflite", out / "tokenizer", "ROMEO:", 5)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ExportError, match="not a valid TFLite model"):
        TFLiteGenerator(bad)
    from tfgpt.errors import GenerationError

    with pytest.raises(GenerationError, match="not valid UTF-8"):
        generate_tflite(out / "tflite" / "model.tflite", out / "tokenizer", b"\xff", 5)


def test_runner_names_the_missing_file_and_refuses_another_tokenizer(exported, tmp_path):
    """A missing .tflite is reported as such even with no --tokenizer (it was reported as a missing
    tokenizer dir); a tokenizer with more ids than the model's logits, or another fingerprint than
    export.json's, is refused (it printed garbage)."""
    from tfgpt.tokenizers import CharTokenizer

    out, _ = exported
    with pytest.raises(ExportError, match="TFLite file not found"):
        generate_tflite(tmp_path / "nope.tflite", None, "ROMEO:", 5)
    path = out / "tflite" / "model.tflite"
    big = CharTokenizer.train(["".join(chr(0x4E00 + i) for i in range(300))])
    big.save(tmp_path / "big")
    with pytest.raises(ExportError, match="the tokenizer has 300 tokens but .* has .* logits"):
        generate_tflite(path, tmp_path / "big", "ROMEO:", 5)
    small = CharTokenizer.train(["ROMEO: abc"])
    small.save(tmp_path / "small")
    with pytest.raises(ExportError, match="is not the one .*export.json was exported with"):
        generate_tflite(path, tmp_path / "small", "ROMEO:", 5)
