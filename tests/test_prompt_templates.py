"""tfgpt.prompt_templates: the Alpaca prompt, the transcript markers and a run's template, without TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tfgpt.errors import ConfigError
from tfgpt.prompt_templates import PREAMBLE, format_prompt, role_markers, run_template, template_name
from tfgpt.tokenizers import CharTokenizer


def test_the_alpaca_prompt():
    assert format_prompt({"instruction": "Say hi.", "input": ""}) == (
        f"{PREAMBLE}\n\n### Instruction:\nSay hi.\n\n### Response:\n")


def test_a_runs_template(tmp_path):
    assert run_template(_run(tmp_path / "lm", {"model": {"n_layer": 1}})) is None
    assert run_template(_run(tmp_path / "it", {"instruct": {"template": "alpaca"}})) == "alpaca"
    with pytest.raises(ConfigError, match=r"config.yaml: instruct.template must be 'alpaca', got 'chatml'"):
        run_template(_run(tmp_path / "bad", {"instruct": {"template": "chatml"}}))
    with pytest.raises(ConfigError, match="instruct.template must be 'alpaca', got None"):
        template_name("alpaca", "x")  # not a mapping


def test_markers_only_where_the_vocabulary_spells_them():
    assert role_markers(CharTokenizer.train(["You: Model:"])) == ("You: ", "Model:")
    assert role_markers(CharTokenizer.train(["hello"])) == ("", "")


def test_importing_it_imports_no_tensorflow():
    code = "import sys, tfgpt.prompt_templates; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def _run(path, config):
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    return path
