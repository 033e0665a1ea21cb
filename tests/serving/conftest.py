"""A tiny SavedModel export shared by the serving/ client tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "serving"))


@pytest.fixture(scope="session")
def sm_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export_tiny_run import make_tiny_run

    from tfgpt.export import export_run

    root = tmp_path_factory.mktemp("serving_client")
    run = make_tiny_run(root / "run")
    export_run(run, root / "export", formats="savedmodel", name="tiny")
    return root / "export"
