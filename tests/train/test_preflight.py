"""tfgpt.train.preflight: every problem with train's inputs in one message, before TensorFlow is imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.train.helpers import tiny_config
from tfgpt.errors import ConfigError
from tfgpt.train.preflight import preflight, resolve_with_data


def test_preflight_imports_no_tensorflow():
    code = "import sys, tfgpt.train.preflight; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_every_problem_in_one_message(tmp_path, data_dir):
    """A tokenizer-kind mismatch, a vocabulary that does not fit and a run dir that already holds a
    run, all reported by one call (they used to take three runs)."""
    (tmp_path / "run/checkpoints").mkdir(parents=True)
    (tmp_path / "run/checkpoints/latest.json").write_text(json.dumps({"step": 4, "dir": "step-000004"}))
    cfg = tiny_config()
    cfg["model"]["vocab_size"] = 10
    cfg["data"] = {"tokenizer": "bpe"}
    with pytest.raises(ConfigError) as e:
        preflight(cfg, data_dir=data_dir, run_dir=tmp_path / "run")
    lines = str(e.value).splitlines()
    assert lines[0] == "3 problems:"
    assert "built with the 'char' tokenizer but the config expects 'bpe'" in lines[1]
    assert "model.vocab_size is 10" in lines[2] and "already holds a run" in lines[3]


def test_a_broken_config_still_gets_its_data_dir_checked(tmp_path):
    with pytest.raises(ConfigError) as e:
        preflight({"train": {"max_stepz": 3}}, data_dir=tmp_path / "none", run_dir=tmp_path / "r")
    msg = str(e.value)
    assert msg.startswith("2 problems:") and "(did you mean 'max_steps'?)" in msg and "does not exist" in msg


def test_vocab_size_comes_from_the_data_dir_when_left_out(tmp_path, data_dir):
    vocab = json.loads((data_dir / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    cfg = tiny_config()
    del cfg["model"]["vocab_size"]
    assert resolve_with_data(cfg, [], data_dir)[0].vocab_size == vocab
    preset = {"model": {"preset": "char-small"}, "data": {"dir": str(data_dir)}}  # a preset's 65 gives way too
    assert resolve_with_data(preset, [], None)[0].vocab_size == vocab
    given = tiny_config()  # an explicit vocab_size is kept (and checked)
    assert resolve_with_data(given, [], data_dir)[0].vocab_size == given["model"]["vocab_size"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    preflight(str(tmp_path / "c.yaml"), data_dir=data_dir, run_dir=tmp_path / "new")  # no problem: returns


def test_resume_problems(tmp_path):
    with pytest.raises(ConfigError, match=r"^--resume: .* is not a run dir \(no config.yaml\)$"):
        preflight(None, run_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="a config is required"):
        preflight(None)


@pytest.mark.parametrize("text,message", [("", "empty file"), ("model: [1, 2\n", "config.yaml")])
def test_resume_names_an_empty_or_damaged_run_config(tmp_path, text, message):
    """A run whose config.yaml was emptied or cut: --resume names that file, not a missing data dir alone."""
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest.json").write_text(json.dumps({"step": 5, "dir": "step-000005"}))
    with pytest.raises(ConfigError) as e:
        preflight(None, run_dir=tmp_path, resume=True)
    assert any(str(tmp_path / "config.yaml") in p and message in p for p in e.value.problems), e.value.problems
