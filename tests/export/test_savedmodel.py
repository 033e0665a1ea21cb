"""SavedModel export: signatures through the TF1 session loader, export.json, warmup, bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfgpt
from tfgpt.errors import ExportError, RunDirError
from tfgpt.export import export_run
from tfgpt.export.savedmodel import sample_tf
from tfgpt.export.verify import saved_model_cli_ids, session_run


def _sm(exported) -> Path:
    out, info = exported
    return out / info["savedmodel"]["path"]


def test_export_json_records_source_formats_and_figures(exported, tiny_run):
    out, info = exported
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk == info
    assert info["source"]["run"] == str(tiny_run.resolve())
    assert info["source"]["checkpoint"].endswith("model.keras")
    assert info["formats"] == ["savedmodel", "tflite"]
    assert info["savedmodel"]["path"] == "savedmodel/tiny/1"
    sigs = info["savedmodel"]["signatures"]
    assert set(sigs) == {"serving_default", "logits", "generate_ids"}
    assert sigs["serving_default"]["inputs"]["prompts"] == {"dtype": "string", "shape": [-1]}
    assert sigs["serving_default"]["defaults"] == {"max_new_tokens": 32, "seed": 0, "temperature": 0.0, "top_k": 0}
    assert set(sigs["serving_default"]["outputs"]) == {"completions", "ids", "num_tokens"}
    ver = info["verification"]["savedmodel"]
    assert ver["logits_max_abs_diff"] <= 1e-5
    assert ver["greedy_completions_equal"] and ver["saved_model_cli_greedy_ids_equal"]
    assert (out / "tokenizer" / "tokenizer.json").is_file()


def _graph_ops(sm_dir: Path) -> set[str]:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((sm_dir / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    return {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}


def test_graph_has_no_xla_or_python_ops(exported):
    ops = _graph_ops(_sm(exported))
    assert not [o for o in ops if o.startswith("Xla") or "PyFunc" in o], ops
    assert "TensorScatterUpdate" in ops  # the non-XLA KV-cache write


def test_warmup_requests_parse_as_prediction_logs(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    path = _sm(exported) / "assets.extra" / "tf_serving_warmup_requests"
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    assert [r.predict_log.request.model_spec.signature_name for r in records] == [
        "serving_default", "logits", "generate_ids"
    ]
    for r in records:  # each warmup request runs as is through the session loader
        req = r.predict_log.request
        feeds = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
        assert session_run(_sm(exported), req.model_spec.signature_name, feeds)


def test_logits_signature_matches_keras(exported, loaded):
    model, _ = loaded
    ids = np.array([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]], np.int32)
    got = session_run(_sm(exported), "logits", {"ids": ids})["logits"]
    assert got.shape == (2, 5, model.config.vocab_size)
    assert np.max(np.abs(got - np.asarray(model(ids)))) <= 1e-5


def test_serving_default_batch_of_different_lengths_equals_per_prompt(exported, loaded):
    model, tok = loaded
    prompts = ["ROMEO:", "The quick brown", "w", "hello world"]
    got = session_run(_sm(exported), "serving_default", {"prompts": np.array(prompts, object), "max_new_tokens": 10})
    expected = [tfgpt.generate(model, tok, p, max_new_tokens=10, temperature=0) for p in prompts]
    assert [c.decode() for c in got["completions"]] == expected
    assert got["ids"].shape == (4, 10) and list(got["num_tokens"]) == [10] * 4
    for row, text in zip(got["ids"], expected, strict=True):
        assert tok.decode([int(t) for t in row if t >= 0]) == text


def test_serving_default_equal_lengths_batch_and_defaults(exported, loaded):
    model, tok = loaded
    prompts = ["hello", "world"]  # equal token lengths: one batched decode
    got = session_run(_sm(exported), "serving_default", {"prompts": np.array(prompts, object)})  # defaults
    # default max_new_tokens 32 is clipped to block_size - 1 = 31; the prompt keeps its last token
    assert got["ids"].shape == (2, 31)
    expected = [tfgpt.generate(model, tok, p[-1:], max_new_tokens=31, temperature=0) for p in prompts]
    assert [c.decode() for c in got["completions"]] == expected


def test_sampling_is_reproducible_for_a_seed_and_respects_top_k(exported, loaded):
    model, tok = loaded
    feeds = {"prompts": np.array(["ROMEO:"], object), "max_new_tokens": 12, "temperature": 0.9, "top_k": 1, "seed": 7}
    top1 = session_run(_sm(exported), "serving_default", feeds)["completions"][0].decode()
    assert top1 == tfgpt.generate(model, tok, "ROMEO:", max_new_tokens=12, temperature=0)  # top_k=1 is greedy
    feeds["top_k"] = 0
    feeds["temperature"] = 5.0
    a = session_run(_sm(exported), "serving_default", feeds)["completions"][0].decode()
    assert a == session_run(_sm(exported), "serving_default", feeds)["completions"][0].decode()
    feeds["seed"] = 8
    assert a != session_run(_sm(exported), "serving_default", feeds)["completions"][0].decode()


def test_generate_ids_signature_and_saved_model_cli(exported, loaded):
    model, tok = loaded
    ids = tok.encode("JULIET: ")
    got = session_run(_sm(exported), "generate_ids", {"ids": np.array([ids], np.int32), "max_new_tokens": 8})
    expected = tfgpt.generate_ids(model, [ids], max_new_tokens=8, temperature=0)[0].tolist()
    assert got["ids"][0].tolist() == expected
    assert saved_model_cli_ids(_sm(exported), ids, 8) == expected


def test_verify_runs_saved_model_cli_on_an_export_with_tf_text_ops(padded_exported):
    out, info = padded_exported
    sm = _sm(padded_exported)
    assert "RegexSplitWithOffsets" in _graph_ops(sm)  # a fresh saved_model_cli process must register TF-Text
    assert info["verification"]["savedmodel"]["saved_model_cli_greedy_ids_equal"]
    model, tok = tfgpt.load(out.parent / "run")
    ids = tok.encode("ROMEO:")
    expected = tfgpt.generate_ids(model, [ids], max_new_tokens=6, temperature=0, vocab_limit=tok.vocab_size)
    assert saved_model_cli_ids(sm, ids, 6) == expected[0].tolist()


def test_padded_vocabulary_ids_are_never_produced(padded_exported):
    out, _ = padded_exported
    model, tok = tfgpt.load(out.parent / "run")
    prompts = ["ROMEO:", "hello"]
    for p in prompts:  # unmasked, the padded ids would win: this test can fail
        assert int(np.argmax(model(np.array([tok.encode(p)], np.int32))[0, -1])) >= tok.vocab_size
    expected = [tfgpt.generate(model, tok, p, max_new_tokens=8, temperature=0) for p in prompts]
    feeds = {"prompts": np.array(prompts, object), "max_new_tokens": 8}
    assert [c.decode() for c in session_run(_sm(padded_exported), "serving_default", feeds)["completions"]] == expected
    for seed in range(3):
        sampled = {**feeds, "temperature": 1.0, "seed": seed}
        ids = session_run(_sm(padded_exported), "serving_default", sampled)["ids"]
        assert ids.max() < tok.vocab_size and (ids >= 0).sum() > 0
        ids = session_run(_sm(padded_exported), "generate_ids", {"ids": np.array([tok.encode("hello")], np.int32),
                                                                "max_new_tokens": 8, "temperature": 1.0,
                                                                "top_k": tok.vocab_size + 10, "seed": seed})["ids"]
        assert ids.max() < tok.vocab_size


def test_long_prompt_is_cropped_to_fit_the_cache(exported, loaded):
    model, tok = loaded
    long = "the quick brown fox " * 5  # 100 chars > block_size 32
    got = session_run(_sm(exported), "serving_default", {"prompts": np.array([long], object), "max_new_tokens": 6})
    # cropped to the last block_size - 6 tokens, then 6 new ones
    expected = tfgpt.generate(model, tok, long[-(32 - 6):], max_new_tokens=6, temperature=0)
    assert got["completions"][0].decode() == expected
    huge = session_run(_sm(exported), "serving_default", {"prompts": np.array(["ab"], object), "max_new_tokens": 999})
    assert huge["ids"].shape == (1, 31)  # clipped to block_size - 1


@pytest.mark.parametrize(
    ("prompt", "message"),
    [(b"\xff\xfeROMEO", "not valid UTF-8"), (b"", "encodes to no tokens"), ("ROMEO: \u2603".encode(), "vocabulary")],
)
def test_bad_prompts_fail_clearly(exported, prompt, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        session_run(_sm(exported), "serving_default", {"prompts": np.array([prompt], object)})


def test_out_of_vocab_ids_fail_clearly(exported):
    with pytest.raises(tf.errors.InvalidArgumentError, match="ids must be in"):
        session_run(_sm(exported), "generate_ids", {"ids": np.array([[999]], np.int32)})


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


def test_variables_are_saved_once(exported, loaded):
    model, _ = loaded  # the module tracks the model's variables once (not again under model/...)
    keys = [k for k, _ in tf.train.list_variables(str(_sm(exported) / "variables" / "variables"))]
    keys = [k for k in keys if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert len(keys) == len(model.variables), keys


def test_sample_tf_treats_a_vanishing_temperature_as_greedy():
    logits = tf.constant([[50.0, 100.0, 0.0]])
    # 1e-37 is a normal float32 > 0, but logits / 1e-37 overflow to +inf in two places, and argmax
    # over [inf, inf, 0] would pick index 0, not the greedy 1
    token = sample_tf(logits, tf.constant(1e-37), tf.constant(0), tf.constant(3), tf.constant(0))
    assert token.numpy().tolist() == [1]
