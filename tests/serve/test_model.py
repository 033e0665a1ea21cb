"""tfgpt.serve.model: ExportedModel loads an export's SavedModel and checks JSON inputs before running it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import tfgpt
from tfgpt.errors import ExportError, RunDirError
from tfgpt.serve.errors import BadRequest
from tfgpt.serve.model import ExportedModel

I32 = {"dtype": "int32", "shape": []}


def test_reads_the_export(exported_model, tiny_export):
    m = exported_model
    assert (m.name, m.version, m.block_size, m.max_new_tokens_cap) == ("tiny", 1, 32, 31)  # 256 clipped to 32 - 1
    assert m.sm_dir == tiny_export / "savedmodel" / "tiny" / "1"
    assert sorted(m.specs) == ["complete", "generate_ids", "logits", "serving_default"]
    assert m.specs["serving_default"]["inputs"] == {
        "max_new_tokens": I32, "prompts": {"dtype": "string", "shape": [-1]}, "seed": I32,
        "temperature": {"dtype": "float32", "shape": []}, "top_k": I32}
    assert m.specs["serving_default"]["defaults"] == {"max_new_tokens": 32, "seed": 0, "temperature": 0.0, "top_k": 0}
    assert m.specs["logits"]["inputs"] == {"ids": {"dtype": "int32", "shape": [-1, -1]}}


def test_feeds_fill_in_defaults_with_max_new_tokens_held_to_the_cap(exported_model):
    feeds = exported_model.feeds("serving_default", {"prompts": ["ROMEO:"], "seed": 3})
    assert sorted(feeds) == ["max_new_tokens", "prompts", "seed", "temperature", "top_k"]
    assert feeds["prompts"].numpy().tolist() == [b"ROMEO:"]
    assert [int(feeds[k]) for k in ("max_new_tokens", "seed", "top_k")] == [31, 3, 0]
    assert feeds["temperature"].dtype.name == "float32" and float(feeds["temperature"]) == 0.0


#: A two-prompt `complete` request: every setting one per prompt.
COMPLETE = {"prompts": ["ROMEO:", "The"], "max_new_tokens": [4, 6], "temperature": [0.0, 0.8], "top_k": [0, 5],
            "seed": [1, 2]}


@pytest.mark.parametrize(("signature", "inputs", "message"), [
    ("nope", {}, "unknown signature_name 'nope'; have complete, generate_ids, logits, serving_default"),
    ("serving_default", {"prompts": ["a"], "colour": 1, "size": 2},
     "unknown input(s) colour, size for signature 'serving_default'; "
     "expected max_new_tokens, prompts, seed, temperature, top_k"),
    ("logits", {}, "missing input 'ids' for signature 'logits'"),
    ("serving_default", {"prompts": ["a"], "max_new_tokens": 32}, "max_new_tokens 32 is above this server's cap (31)"),
    ("serving_default", {"prompts": ["a"], "max_new_tokens": -1}, "max_new_tokens must be ≥ 0, got -1"),
    ("serving_default", {"prompts": ["a"], "temperature": -0.5}, "temperature must be ≥ 0 (0: greedy), got -0.5"),
    ("generate_ids", {"ids": [[1]], "top_k": -1}, "top_k must be ≥ 0 (0: no top-k filter), got -1"),
    ("complete", {**COMPLETE, "max_new_tokens": [4, 40]}, "max_new_tokens 40 is above this server's cap (31)"),
    ("complete", {**COMPLETE, "top_k": [0, -3]}, "top_k must be ≥ 0 (0: no top-k filter), got -3"),
    ("complete", {**COMPLETE, "top_k": [0], "seed": [1, 2, 3]}, "signature 'complete' takes one row of each input "
     "per prompt; got 2 max_new_tokens, 2 prompts, 3 seed, 2 temperature, 1 top_k"),
    ("serving_default", {"prompts": ["a"], "max_new_tokens": -2**31}, "max_new_tokens must be ≥ 0, got -2147483648"),
    ("serving_default", {"prompts": "a"}, "input 'prompts' must be a 1-D list (shape [-1], -1 = any) of strings"),
])
def test_feeds_reject_with_a_clear_message(exported_model, signature, inputs, message):
    with pytest.raises(BadRequest) as e:
        exported_model.feeds(signature, inputs)
    assert str(e.value) == message and e.value.status == 400


def test_complete_checks_every_row_and_runs(exported_model):
    out = exported_model.predict("complete", COMPLETE)
    assert out["num_tokens"].tolist() == [4, 6]
    alone = exported_model.predict("complete", {k: v[1:] for k, v in COMPLETE.items()})
    assert out["ids"][1, :6].tolist() == alone["ids"][0, :6].tolist()


def test_a_lower_cap(tiny_export):
    m = ExportedModel(tiny_export, max_new_tokens_cap=5)
    assert m.max_new_tokens_cap == 5 and int(m.feeds("serving_default", {"prompts": ["a"]})["max_new_tokens"]) == 5


def test_predict_matches_the_keras_model(exported_model, keras_model):
    model, tok = keras_model
    out = exported_model.predict("serving_default", {"prompts": ["ROMEO:", "The"], "max_new_tokens": 7})
    assert [c.decode() for c in out["completions"]] == [
        tfgpt.generate(model, tok, p, max_new_tokens=7, temperature=0) for p in ("ROMEO:", "The")]
    assert out["ids"].shape == (2, 7) and out["num_tokens"].tolist() == [7, 7]
    ids = np.array([tok.encode("ROMEO:")], np.int32)
    logits = exported_model.predict("logits", {"ids": ids.tolist()})["logits"]
    np.testing.assert_allclose(logits, np.asarray(model(ids)), atol=1e-5)


@pytest.mark.parametrize(("signature", "inputs", "message"), [
    ("logits", {"ids": [[1, -1]]}, "ids must be in [0, "),
    ("generate_ids", {"ids": [[10**6]]}, "ids must be in [0, "),
    ("logits", {"ids": [[1] * 33]}, "ids has 33 positions, more than block_size 32"),
    ("serving_default", {"prompts": ["ROMEO:", "ROMEO: \u2603"]},
     "prompt 1: 1 character(s) not in the char vocabulary (34 characters): '\u2603' (U+2603) at position 7"),
    ("serving_default", {"prompts": [""]}, "a prompt encodes to no tokens: give at least one character"),
])
def test_predict_turns_model_errors_into_bad_requests(exported_model, signature, inputs, message):
    with pytest.raises(BadRequest) as e:
        exported_model.predict(signature, inputs)
    assert str(e.value).startswith(message)


def test_an_export_without_a_savedmodel_is_a_run_dir_error(tiny_export, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(tiny_export, copy)
    (copy / "savedmodel" / "tiny" / "1" / "saved_model.pb").unlink()
    with pytest.raises(RunDirError, match="holds no saved_model.pb"):
        ExportedModel(copy)
    info = json.loads((copy / "export.json").read_text())
    del info["savedmodel"]
    (copy / "export.json").write_text(json.dumps(info))
    with pytest.raises(RunDirError, match="has no SavedModel"):
        ExportedModel(copy)
    with pytest.raises(RunDirError, match="not an export directory"):
        ExportedModel(tmp_path)


def test_only_the_graph_tfgpt_export_wrote_is_loaded(tiny_export, tmp_path):
    """A crafted or altered saved_model.pb (another graph's, one flipped byte), a path leading out of the
    export, or an export.json recording no digest: refused before TensorFlow parses the graph."""
    copy = tmp_path / "export"
    shutil.copytree(tiny_export, copy)
    pb = copy / "savedmodel" / "tiny" / "1" / "saved_model.pb"
    raw = bytearray(pb.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pb.write_bytes(bytes(raw))
    with pytest.raises(RunDirError, match=f"{pb} is not the graph tfgpt export wrote"):
        ExportedModel(copy)
    info = json.loads((copy / "export.json").read_text())
    for path, digest, message in [("../../elsewhere", "x", "savedmodel.path '../../elsewhere' leaves the export"),
                                  ("savedmodel/tiny/1", None, "records no sha256 of saved_model.pb")]:
        entry = {**info["savedmodel"], "path": path, "saved_model_sha256": digest}
        (copy / "export.json").write_text(json.dumps({**info, "savedmodel": entry}))
        with pytest.raises(RunDirError, match=message):
            ExportedModel(copy)
    assert len(info["savedmodel"]["saved_model_sha256"]) == 64  # what tfgpt export recorded


def test_damaged_variables_without_a_recorded_digest_are_one_line(tiny_export, tmp_path):
    """An export made before variables digests were recorded, with a damaged variables file: an ExportError
    naming the SavedModel, not TensorFlow's traceback."""
    copy = tmp_path / "export"
    shutil.copytree(tiny_export, copy)
    info = json.loads((copy / "export.json").read_text())
    info["savedmodel"].pop("files_sha256")
    (copy / "export.json").write_text(json.dumps(info))
    data = next((copy / "savedmodel" / "tiny" / "1" / "variables").glob("variables.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(ExportError, match=r"savedmodel/tiny/1: the SavedModel could not be loaded \(.+\); re-export"):
        ExportedModel(copy)
