"""tfgpt.export.export: export_run's steps, export.json, and refusing unsafe output dirs."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tfgpt.errors import ExportError, RunDirError
from tfgpt.export import export_run
from tfgpt.export.export import _check_options, default_name, load_export_info

TINY_MODEL = {"vocab_size": 34, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.0,
              "bias": True, "norm": "pre", "tie_embeddings": True, "layer_norm_epsilon": 1e-05}


def test_export_json_records_source_formats_and_figures(exported, tiny_run):
    out, info = exported
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk == info
    assert info["source"]["run"] == str(tiny_run.resolve())
    assert info["source"]["checkpoint"].endswith("model.keras")
    assert info["formats"] == ["savedmodel", "tflite"]
    assert (info["format_version"], info["name"], info["version"], info["tokenizer"]) == (1, "tiny", 1, "tokenizer")
    assert info["source"]["model"] == TINY_MODEL
    assert info["source"]["tokenizer"] == {
        "type": "char", "vocab_size": 34, "eot_id": None,
        "fingerprint": "63e4be9dc65cfb8d455771d98fd1f73b291badb51155eb1b572b0bdbb4f283d6",
    }
    assert load_export_info(out) == info
    lite = info["tflite"]
    assert sorted(lite["files"]) == ["tflite/model.tflite", "tflite/model_int8.tflite"]
    assert lite["cache_shape"] == [1, 2, 2, 32, 32] and lite["builtins_only"] is True
    sizes = {k: v["size_bytes"] for k, v in lite["files"].items()}
    assert lite["int8_size_ratio"] == round(sizes["tflite/model_int8.tflite"] / sizes["tflite/model.tflite"], 4)
    assert 0 < lite["int8_size_ratio"] < 1
    assert info["savedmodel"]["path"] == "savedmodel/tiny/1"
    sigs = info["savedmodel"]["signatures"]
    assert set(sigs) == {"serving_default", "complete", "logits", "generate_ids"}
    assert sigs["serving_default"]["inputs"]["prompts"] == {"dtype": "string", "shape": [-1]}
    assert sigs["serving_default"]["defaults"] == {"max_new_tokens": 32, "seed": 0, "temperature": 0.0, "top_k": 0}
    assert set(sigs["serving_default"]["outputs"]) == {"completions", "ids", "num_tokens"}
    ver = info["verification"]["savedmodel"]
    assert ver["logits_max_abs_diff"] <= 1e-5
    assert ver["greedy_completions_equal"] and ver["saved_model_cli_greedy_ids_equal"]
    assert (out / "tokenizer" / "tokenizer.json").is_file()


def test_export_bad_input(tmp_path, tiny_run):
    with pytest.raises(ExportError, match="unsupported export format onnx"):
        export_run(tiny_run, tmp_path / "e", formats="savedmodel,onnx")
    with pytest.raises(ExportError, match="unsupported quantization"):
        export_run(tiny_run, tmp_path / "e", formats="tflite", quantize="int4")
    with pytest.raises(ExportError, match="applies to the tflite format"):
        export_run(tiny_run, tmp_path / "e", formats="savedmodel", quantize="int8")
    empty = tmp_path / "run_without_weights"
    empty.mkdir()
    (empty / "config.yaml").write_text((tiny_run / "config.yaml").read_text())
    (empty / "tokenizer").symlink_to(tiny_run / "tokenizer")
    with pytest.raises(RunDirError, match="holds no weights"):
        export_run(empty, tmp_path / "e")
    assert not (tmp_path / "e").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".e.")]  # no temp dirs left behind


def test_export_refuses_to_replace_what_is_not_an_export(tmp_path, tiny_run):
    run = tmp_path / "runs" / "victim"
    shutil.copytree(tiny_run, run)
    before = sorted(p.name for p in run.iterdir())
    for out in (run, run.parent, tmp_path):
        with pytest.raises(ExportError, match="is or contains the run dir"):
            export_run(run, out, formats="savedmodel")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match=r"other is not empty and holds no export.json"):
        export_run(run, other, formats="savedmodel")
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(ExportError, match="exists and is not a directory"):
        export_run(run, tmp_path / "file", formats="savedmodel")
    assert sorted(p.name for p in run.iterdir()) == before
    assert (other / "notes.txt").read_text() == "keep me" and (tmp_path / "file").read_text() == "keep me"


def test_export_replaces_a_previous_export(tmp_path, tiny_run):
    out = tmp_path / "e"
    out.mkdir()  # an empty dir is fine too
    export_run(tiny_run, out, formats="savedmodel", name="first")
    (out / "stale.txt").write_text("from the first export")
    info = export_run(tiny_run, out, formats="savedmodel", name="second")
    assert json.loads((out / "export.json").read_text()) == info and info["name"] == "second"
    assert not (out / "stale.txt").exists() and (out / "savedmodel" / "second" / "1" / "saved_model.pb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # no temp dirs left behind


def test_export_files_get_the_umask_modes_not_owner_only(exported):
    out, _ = exported
    umask = os.umask(0)
    os.umask(umask)
    if umask & 0o044:
        pytest.skip(f"umask {umask:o} makes files owner-only anyway")
    dirs = [out, *(p for p in out.rglob("*") if p.is_dir())]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {out / "tflite" / "model.tflite", out / "tflite" / "model_int8.tflite", out / "export.json"} <= set(files)
    assert {p.relative_to(out).as_posix(): oct(p.stat().st_mode & 0o777) for p in dirs
            if p.stat().st_mode & 0o777 != 0o777 & ~umask} == {}
    assert {p.relative_to(out).as_posix(): oct(p.stat().st_mode & 0o777) for p in files
            if p.stat().st_mode & 0o777 != 0o666 & ~umask} == {}


def test_check_options_normalises_formats():
    assert _check_options("tflite, savedmodel,tflite", None, 1, "m") == ["tflite", "savedmodel"]
    assert _check_options(("savedmodel",), None, 3, "a_b-C9") == ["savedmodel"]
    assert _check_options("tflite", "int8", 1, "m") == ["tflite"]


@pytest.mark.parametrize(
    ("formats", "quantize", "version", "name", "message"),
    [
        ("", None, 1, "m", r"unsupported export format \(none\)"),
        ("onnx", None, 1, "m", "unsupported export format onnx; choose from savedmodel, tflite, hf"),
        ("tflite", "int4", 1, "m", "unsupported quantization 'int4'"),
        ("savedmodel", "int8", 1, "m", "applies to the tflite format"),
        ("savedmodel", None, 0, "m", "version must be a positive integer, got 0"),
        ("savedmodel", None, True, "m", "version must be a positive integer, got True"),
        ("savedmodel", None, 1, "my model", "model name 'my model' may only hold"),
    ],
)
def test_check_options_refuses(formats, quantize, version, name, message):
    with pytest.raises(ExportError, match=message):
        _check_options(formats, quantize, version, name)


def test_default_name(tmp_path):
    assert default_name(tmp_path / "My run.v2") == "My_run_v2"
    assert default_name(tmp_path / "char-small") == "char-small"
    assert default_name(tmp_path / "...") == "tfgpt"


def test_load_export_info_errors(tmp_path):
    with pytest.raises(RunDirError, match="export.json is missing"):
        load_export_info(tmp_path)
    (tmp_path / "export.json").write_text("{broken")
    with pytest.raises(RunDirError, match="export.json: invalid JSON"):
        load_export_info(tmp_path)
    (tmp_path / "export.json").write_text("[1]")
    with pytest.raises(RunDirError, match="expected a JSON object"):
        load_export_info(tmp_path)
