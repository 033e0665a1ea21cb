"""Fixtures shared by the tests/train files: a prepared char DATA_DIR, a tiny run on it, and its resume.

Session-scoped so that test_fit.py and test_evaluate.py train the run once when they run together.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.train.helpers import SHAKESPEARE, tiny_config
from tfgpt.train.fit import train


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    from tfgpt.data.prepare import prepare

    text = SHAKESPEARE.read_text(encoding="utf-8")  # 64 KiB
    src = tmp_path_factory.mktemp("src") / "shakespeare.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp_path_factory.mktemp("data") / "char"
    prepare([str(src)], str(out), tokenizer="char", val_fraction=0.1, workers=0, progress=False)
    return out


def vocab_of(data_dir) -> int:
    return json.loads((data_dir / "manifest.json").read_text())["tokenizer"]["vocab_size"]


@pytest.fixture(scope="session")
def run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = tiny_config(max_steps=8, sample_tokens=8, steps_per_execution=4, log_interval=4)
    cfg["model"]["vocab_size"] = vocab_of(data_dir)
    cfg["data"] = {"tokenizer": "char"}
    cwd = os.getcwd()
    os.chdir(data_dir.parent)  # a data dir given relative to the working directory ...
    try:
        summary = train(cfg, data_dir=data_dir.name, run_dir=run_dir, progress=False)
    finally:
        os.chdir(cwd)  # ... is stored absolute, so eval/resume work from anywhere (tests below)
    return run_dir, summary


@pytest.fixture(scope="session")
def resumed(run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resumed") / "copy"
    shutil.copytree(run[0], run_dir)
    return run_dir, train(None, run_dir=run_dir, resume=True, progress=False, overrides=["train.max_steps=12"])


