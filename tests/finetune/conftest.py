"""Fixtures shared by the fine-tuning test modules, built once per session: the 120-row SMS slice, a tiny
char run over it, and one float32 LoRA classifier trained on them (the uninterrupted side of the classify
resume test and the run of the LoRA-mode test)."""

from __future__ import annotations

import pytest

from tests.finetune.helpers import LORA_ARGS, Grab, char_tokenizer, tiny_run
from tfgpt.finetune.classify import finetune_classify
from tfgpt.finetune.labelled import read_labelled


@pytest.fixture(scope="session")
def sms120(fixtures_dir, tmp_path_factory):
    """The first 120 rows of the vendored SMS slice (balanced: 16 spam + 16 ham, 22 train rows)."""
    rows = (fixtures_dir / "finetune" / "SMSSpamCollection-200.tsv").read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("data") / "sms.tsv"
    path.write_text("\n".join(rows[:120]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sms_run(tmp_path_factory, sms120):
    """A seeded random 1-block run (block 48) over the slice's characters plus "~"."""
    tok = char_tokenizer([r.text for r in read_labelled(sms120)] + ["~"])
    return tiny_run(tmp_path_factory.mktemp("base") / "run", tok, 48)


@pytest.fixture(scope="session")
def lora_classifier(sms_run, sms120, tmp_path_factory):
    """``(run dir, metrics, the in-memory model)`` of ``finetune_classify(**LORA_ARGS)``, uninterrupted."""
    out, grab = tmp_path_factory.mktemp("lora") / "straight", Grab()
    metrics = finetune_classify(sms_run, sms120, out, callbacks=[grab], **LORA_ARGS)
    return out, metrics, grab.trained
