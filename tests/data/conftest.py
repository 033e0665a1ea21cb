"""Fixtures for tests/data: small prepared data directories shared across tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfgpt.assets_path import gpt2_vocab_dir
from tfgpt.data.prepare import prepare


@pytest.fixture(scope="session")
def gpt2_dir() -> str:
    """GPT-2's encoder.json + vocab.bpe as shipped in the package (tfgpt/assets/gpt2)."""
    return str(gpt2_vocab_dir())


@pytest.fixture(scope="session")
def char_dir(tmp_path_factory: pytest.TempPathFactory, shakespeare_file: Path) -> Path:
    """64 KiB of tinyshakespeare, char tokenizer, 10% val (tail split): 4 train shards of <= 16k tokens."""
    out = tmp_path_factory.mktemp("char") / "data"
    prepare([str(shakespeare_file)], str(out), "char", val_fraction=0.1, workers=1,
            shard_tokens=16_000, record_tokens=4096, progress=False, command=["test"])
    return out


@pytest.fixture(scope="session")
def gpt2_docs(
    tmp_path_factory: pytest.TempPathFactory, verdict_file: Path, wizard_file: Path
) -> tuple[Path, list[str]]:
    """A jsonl corpus of 173 paragraph-documents: 76 from the-verdict, 97 from the wizard_of_oz slice."""
    import json

    texts = []
    for path in (verdict_file, wizard_file):
        raw = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
        paras = [p for p in raw.split("\n\n") if len(p.strip()) > 40]
        texts.extend(paras)
    assert len(texts) == 173
    src = tmp_path_factory.mktemp("src") / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return src, texts


@pytest.fixture(scope="session")
def gpt2_dir_prepared(tmp_path_factory: pytest.TempPathFactory, gpt2_docs, gpt2_dir: str) -> Path:
    out = tmp_path_factory.mktemp("gpt2") / "data"
    prepare([str(gpt2_docs[0])], str(out), "gpt2", gpt2_dir=gpt2_dir, val_fraction=0.1, workers=1,
            shard_tokens=20_000, record_tokens=4096, progress=False, command=["test"])
    return out
