"""One tiny SavedModel export for all serve tests, and a real ``tfgpt serve`` (uvicorn) on 127.0.0.1 over it.

The export is built once per session: the unit tests load it in-process (:class:`ExportedModel`), the
HTTP tests start servers on it, and the serving/ client tests run TF Serving bodies through it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import CAP, MAX_BODY, STARTUP, start_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))  # export_tiny_run
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "serving"))  # client.py (the deployment's client)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel export named ``tiny`` of a 2-layer char model (block_size 32); its run is ``../run``."""
    from export_tiny_run import make_tiny_run

    from tfgpt.export import export_run

    root = tmp_path_factory.mktemp("serve")
    run = make_tiny_run(root / "run")
    export_run(run, root / "export", formats="savedmodel", name="tiny")
    return root / "export"


@pytest.fixture(scope="session")
def exported_model(tiny_export: Path):
    """:func:`tiny_export` loaded in-process, with the default cap (31 = block_size - 1)."""
    from tfgpt.serve.model import ExportedModel

    return ExportedModel(tiny_export)


@pytest.fixture(scope="session")
def keras_model(tiny_export: Path):
    """The Keras model and tokenizer of :func:`tiny_export`'s run: what the served answers must match."""
    import tfgpt

    return tfgpt.load(tiny_export.parent / "run")


@pytest.fixture(scope="session")
def server(tiny_export: Path) -> Iterator[str]:
    with start_server(tiny_export, "--max-new-tokens-cap", str(CAP), "--max-body-bytes", str(MAX_BODY),
                      "--workers", "4") as base:
        yield base


@pytest.fixture(scope="session")
def special_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export whose char tokenizer has a special token: its in-graph tokenizer uses TF-Text ops."""
    from export_tiny_run import EOT, make_tiny_run

    from tfgpt.export import export_run

    root = tmp_path_factory.mktemp("serve_special")
    run = make_tiny_run(root / "run", special_tokens=[EOT])
    export_run(run, root / "export", formats="savedmodel", name="special")
    return root / "export"


@pytest.fixture(scope="session")
def special_server(special_export: Path) -> Iterator[str]:
    """``tfgpt serve`` over :func:`special_export` in a fresh process (which must register the TF-Text ops)."""
    with start_server(special_export) as base:
        yield base


@pytest.fixture(scope="session")
def startup() -> dict[str, str]:
    """What each server :func:`start_server` started wrote to stderr before it answered (by base URL).
    A fixture, not an import: a test importing ``conftest`` at run time may get another directory's."""
    return STARTUP


@pytest.fixture(scope="session")
def bpe_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel export named ``tinybpe``: a 2-layer byte-level BPE model (block_size 32) whose in-graph
    tokenizer takes any UTF-8 text, so hostile prompts reach the model instead of a vocabulary check."""
    import keras

    from tfgpt.config import GPTConfig
    from tfgpt.export import export_run
    from tfgpt.model import GPT
    from tfgpt.runs import save_run
    from tfgpt.tokenizers import BPETokenizer

    corpus = Path(__file__).resolve().parents[1] / "fixtures" / "corpus" / "the-verdict.txt"
    tok = BPETokenizer.train([corpus.read_text(encoding="utf-8")], vocab_size=400)
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32))
    model.build((None, None))
    root = tmp_path_factory.mktemp("serve_bpe")
    save_run(root / "run", model, tok)
    export_run(root / "run", root / "export", formats="savedmodel", name="tinybpe")
    return root / "export"
