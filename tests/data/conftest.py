"""Fixtures for tests/data: small prepared data directories shared across tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfgpt.data.prepare import prepare


@pytest.fixture(scope="session")
def gpt2_dir(shared_data: Path) -> str:
    return str(shared_data / "gpt2_bpe")


@pytest.fixture(scope="session")
def char_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """tinyshakespeare, char tokenizer, 10% val (tail split), small shards and records."""
    out = tmp_path_factory.mktemp("char") / "data"
    prepare([str(shared_data / "tinyshakespeare.txt")], str(out), "char", val_fraction=0.1, workers=1,
            shard_tokens=300_000, record_tokens=65_536, progress=False, command=["test"])
    return out


@pytest.fixture(scope="session")
def gpt2_docs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, list[str]]:
    """A jsonl corpus of 400 paragraphs-documents from the-verdict + wizard_of_oz."""
    import json

    texts = []
    for name in ("the-verdict.txt", "wizard_of_oz.txt"):
        raw = (shared_data / name).read_text(encoding="utf-8-sig").replace("\r\n", "\n")
        paras = [p for p in raw.split("\n\n") if len(p.strip()) > 40]
        texts.extend(paras[:200])
    src = tmp_path_factory.mktemp("src") / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return src, texts


@pytest.fixture(scope="session")
def gpt2_dir_prepared(tmp_path_factory: pytest.TempPathFactory, gpt2_docs, gpt2_dir: str) -> Path:
    out = tmp_path_factory.mktemp("gpt2") / "data"
    prepare([str(gpt2_docs[0])], str(out), "gpt2", gpt2_dir=gpt2_dir, val_fraction=0.1, workers=1,
            shard_tokens=20_000, record_tokens=4096, progress=False, command=["test"])
    return out
