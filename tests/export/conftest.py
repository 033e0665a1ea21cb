"""Fixtures for export tests: one tiny run (random weights, char vocabulary) and its verified export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from export_tiny_run import make_tiny_run, sm_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("export_run") / "run")


@pytest.fixture(scope="session")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from tfgpt.export import export_run

    out = tmp_path_factory.mktemp("export_out") / "export"
    info = export_run(tiny_run, out, formats=("savedmodel", "tflite"), quantize="int8", verify=True, name="tiny")
    return out, info


@pytest.fixture(scope="session")
def loaded(tiny_run: Path):
    import tfgpt

    return tfgpt.load(tiny_run)


@pytest.fixture(scope="session")
def padded_exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A verified SavedModel + TFLite export of a run whose char tokenizer has a special token (TF-Text ops in
    the graph) and whose model vocabulary is padded 40 ids past the tokenizer's (the padded ids win argmax)."""
    from export_tiny_run import EOT

    from tfgpt.export import export_run

    root = tmp_path_factory.mktemp("export_padded")
    run = make_tiny_run(root / "run", special_tokens=[EOT], vocab_pad=40)
    info = export_run(run, root / "export", formats="savedmodel,tflite", verify=True, name="padded")
    return root / "export", info


@pytest.fixture(scope="session")
def sm_session(exported: tuple[Path, dict]) -> Iterator:
    """``exported``'s SavedModel loaded once (a TF1 session, as TF Serving holds it) for the signature tests."""
    from tfgpt.export.verify import SavedModelSession

    with SavedModelSession(sm_dir(exported)) as session:
        yield session


@pytest.fixture(scope="session")
def padded_session(padded_exported: tuple[Path, dict]) -> Iterator:
    """``padded_exported``'s SavedModel loaded once."""
    from tfgpt.export.verify import SavedModelSession

    with SavedModelSession(sm_dir(padded_exported)) as session:
        yield session
