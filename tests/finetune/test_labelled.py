"""tfgpt.finetune.labelled: reading TSV/CSV/JSONL, bad rows named by file:line, balance, split."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tfgpt.finetune.labelled import LabelledDataError, Record, balance, label_names, read_labelled, split


@pytest.fixture
def sms(fixtures_dir):
    return fixtures_dir / "finetune" / "SMSSpamCollection-200.tsv"


def test_reads_vendored_tsv(sms):
    records = read_labelled(sms)
    assert len(records) == 200
    assert Counter(r.label for r in records) == {"ham": 167, "spam": 33}
    assert records[1] == Record("ham", "Ok lar... Joking wif u oni...", 2)
    assert label_names(records) == ["ham", "spam"]


def test_reads_csv_and_jsonl(tmp_path):
    csv_file = tmp_path / "d.csv"
    csv_file.write_text('ham,"hi, there"\nspam,win\n', encoding="utf-8")
    assert [(r.label, r.text, r.line) for r in read_labelled(csv_file)] == [("ham", "hi, there", 1), ("spam", "win", 2)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(json.dumps({"label": "a", "text": "x"}) + "\n\n" + json.dumps({"label": "b", "text": "y"}) + "\n")
    assert [(r.label, r.text, r.line) for r in read_labelled(jsonl)] == [("a", "x", 1), ("b", "y", 3)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("d.tsv", "ham\thi\n\tno label\n", "d.tsv:2: missing label"),
        ("d.tsv", "ham\thi\nspam\n", "d.tsv:2: row has no text"),
        ("d.tsv", "ham\thi\nham\tyo\n", "needs at least two classes, found ['ham']"),
        ("d.jsonl", '{"label": "a", "text": "x"}\n{"text": "y"}\n', "d.jsonl:2: missing label"),
        ("d.jsonl", '{"label": "a", "text": "x"}\n{"label": "b"}\n', "d.jsonl:2: row has no text"),
        ("d.jsonl", '{"label": "a", "text": "x"}\nnot json\n', "d.jsonl:2: not JSON"),
        ("d.txt", "a\tb\n", "unknown format '.txt'"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LabelledDataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_labelled(path)


def test_missing_file(tmp_path):
    with pytest.raises(LabelledDataError, match="no such file"):
        read_labelled(tmp_path / "nope.tsv")


def test_balance_undersamples_seeded(sms):
    records = read_labelled(sms)
    balanced = balance(records, seed=0)
    assert Counter(r.label for r in balanced) == {"ham": 33, "spam": 33}
    assert [r.line for r in balanced[:5]] == [3, 6, 9, 10, 12]
    assert balance(records, seed=0) == balanced
    assert [r.line for r in balanced] == sorted(r.line for r in balanced)  # file order kept


def test_split_70_10_20_seeded(sms):
    train, val, test = split(balance(read_labelled(sms)), seed=0)
    assert (len(train), len(val), len(test)) == (46, 6, 14)
    assert [r.line for r in train[:3]] == [148, 118, 157]
    assert [r.line for r in test[:3]] == [121, 71, 98]
    assert {r.line for r in train} | {r.line for r in val} | {r.line for r in test} == {
        r.line for r in balance(read_labelled(sms))
    }


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="summing to 1"):
        split([Record("a", "x")], (0.5, 0.5, 0.5))


def test_header_row_and_integer_labels(tmp_path):
    csv_file = tmp_path / "h.csv"
    csv_file.write_text("label,text\n1,yes\n0,no\n", encoding="utf-8")
    assert [(r.label, r.text, r.line) for r in read_labelled(csv_file)] == [("1", "yes", 2), ("0", "no", 3)]
    jsonl = tmp_path / "i.jsonl"
    jsonl.write_text('{"label": 1, "text": "a"}\n{"label": 0, "text": "b"}\n{"label": true, "text": "c"}\n')
    with pytest.raises(LabelledDataError, match="i.jsonl:3: missing label"):
        read_labelled(jsonl)
