"""tfgpt.export.verify: saved_model_cli in a fresh process, the recorded figures, divergence reporting."""

from __future__ import annotations

from export_tiny_run import graph_ops, sm_dir

import tfgpt
from tfgpt.export.verify import _first_divergence, saved_model_cli_ids


def test_verify_runs_saved_model_cli_on_an_export_with_tf_text_ops(padded_exported):
    out, info = padded_exported
    sm = sm_dir(padded_exported)
    assert "RegexSplitWithOffsets" in graph_ops(sm)  # a fresh saved_model_cli process must register TF-Text
    assert info["verification"]["savedmodel"]["saved_model_cli_greedy_ids_equal"]
    model, tok = tfgpt.load(out.parent / "run")
    ids = tok.encode("ROMEO:")
    expected = tfgpt.generate_ids(model, [ids], max_new_tokens=6, temperature=0, vocab_limit=tok.vocab_size)
    assert saved_model_cli_ids(sm, ids, 6) == expected[0].tolist()


def test_first_divergence():
    assert _first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert _first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert _first_divergence([7], [8]) == 0
    assert _first_divergence([1, 2], [1, 2, 3]) == 2  # one stopped early (end of text)
    assert _first_divergence([], []) is None


def test_verification_figures_recorded_in_export_json(exported):
    _, info = exported
    sm = info["verification"]["savedmodel"]
    assert sm["loader"] == "tf.compat.v1.saved_model.loader.load"
    assert sm["prompts"] == ["ROMEO:", "The ", "Hello, world"]
    assert sm["max_new_tokens"] == 16 and 0 <= sm["logits_max_abs_diff"] <= 1e-5
    assert sm["greedy_completions_equal"] is True and sm["saved_model_cli_greedy_ids_equal"] is True
    lite = info["verification"]["tflite"]
    assert sorted(lite) == ["model.tflite", "model_int8.tflite"]
    assert [p["prompt"] for p in lite["model.tflite"]["prompts"]] == ["ROMEO:", "The ", "Hello, world"]
    assert all(p["first_divergence"] is None and p["tokens"] == 16 for p in lite["model.tflite"]["prompts"])


def test_quantized_divergence_is_a_warning_with_the_agreement_rate(exported):
    """int8 may part from Keras (a warning saying how often and where); float must not (an error)."""
    from tfgpt.export.verify import divergence_warning

    _, info = exported
    lite = info["verification"]["tflite"]
    assert lite["model.tflite"]["token_agreement"] == 1.0
    rate = lite["model_int8.tflite"]["token_agreement"]
    int8 = lite["model_int8.tflite"]["prompts"]
    assert rate == sum(p["agreeing"] for p in int8) / sum(p["tokens"] for p in int8)
    per = [{"prompt": "a", "tokens": 8, "first_divergence": None}, {"prompt": "b", "tokens": 8, "first_divergence": 3}]
    assert divergence_warning("model_int8.tflite", per, 0.6875) == (
        "model_int8.tflite: greedy tokens agree with Keras at 69% of 16 positions; first divergence at token 3 of "
        "prompt 'b' (int8 weights move the logits a little; model.tflite matches exactly)")
