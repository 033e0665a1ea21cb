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
