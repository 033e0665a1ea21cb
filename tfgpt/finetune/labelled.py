"""Labelled text for classification: read TSV, CSV or JSONL (label, text), balance and split.

Every bad row is reported as ``file:line: what is wrong``; nothing is read half-way.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tfgpt.errors import DataError


class LabelledDataError(DataError):
    """A labelled data file that cannot be used: the message names the file and line."""


@dataclass(frozen=True)
class Record:
    """One labelled example; ``line`` is its 1-based line in the source file."""

    label: str
    text: str
    line: int = 0


def _rows(path: Path) -> list[tuple[int, object, object]]:
    """``(line, label, text)`` rows of a .tsv/.csv/.jsonl file, unchecked."""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise LabelledDataError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise LabelledDataError(f"{path}:{n}: expected an object with 'label' and 'text'")
            rows.append((n, obj.get("label"), obj.get("text")))
        return rows
    if suffix not in (".tsv", ".csv"):
        raise LabelledDataError(f"{path}: unknown format {suffix!r} (use .tsv, .csv or .jsonl)")
    lines = text.splitlines()
    delimiter = "\t" if suffix == ".tsv" else ","
    reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL)
    return [(reader.line_num, r[0] if r else None, delimiter.join(r[1:]) if len(r) > 1 else None) for r in reader]


def read_labelled(path: str | os.PathLike) -> list[Record]:
    """Records of a labelled file: TSV/CSV ``label<sep>text`` rows, or JSONL ``{"label", "text"}``.

    Blank lines and a first-line ``label<sep>text`` header are skipped; integer JSONL labels
    become strings; a missing label, a row without text, or fewer than two classes
    raise :class:`LabelledDataError` naming ``file:line``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "d.tsv"
        >>> _ = p.write_text("ham\\thello\\nspam\\tWIN now\\n")
        >>> [(r.label, r.text) for r in read_labelled(p)]
        [('ham', 'hello'), ('spam', 'WIN now')]
    """
    path = Path(path)
    if not path.is_file():
        raise LabelledDataError(f"{path}: no such file")
    records = []
    for line, label, text in _rows(path):
        if (label is None and text is None) or (line == 1 and (label, text) == ("label", "text")):
            continue  # a blank line, or a ``label<sep>text`` header
        if isinstance(label, int) and not isinstance(label, bool):
            label = str(label)  # JSONL class ids such as 0/1
        if not isinstance(label, str) or not label.strip():
            raise LabelledDataError(f"{path}:{line}: missing label")
        if not isinstance(text, str) or not text.strip():
            raise LabelledDataError(f"{path}:{line}: row has no text")
        records.append(Record(label.strip(), text, line))
    labels = sorted({r.label for r in records})
    if len(labels) < 2:
        raise LabelledDataError(f"{path}: needs at least two classes, found {labels or 'none'}")
    return records


def label_names(records: list[Record]) -> list[str]:
    """The sorted class names: index ``i`` is class id ``i``.

    Example:
        >>> label_names([Record("spam", "a"), Record("ham", "b")])
        ['ham', 'spam']
    """
    return sorted({r.label for r in records})


def balance(records: list[Record], seed: int = 0) -> list[Record]:
    """Undersample every class to the size of the smallest one (seeded), keeping file order.

    Example:
        >>> recs = [Record("a", "1"), Record("a", "2"), Record("a", "3"), Record("b", "4")]
        >>> sorted(Counter(r.label for r in balance(recs)).items())
        [('a', 1), ('b', 1)]
    """
    counts = Counter(r.label for r in records)
    smallest = min(counts.values())
    rng = random.Random(seed)
    keep: set[int] = set()
    for label in sorted(counts):
        idx = [i for i, r in enumerate(records) if r.label == label]
        keep.update(rng.sample(idx, smallest))
    return [r for i, r in enumerate(records) if i in keep]


def split(
    records: list[Record], fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0
) -> tuple[list[Record], list[Record], list[Record]]:
    """Seeded shuffle, then ``(train, val, test)`` of ``int(n * 0.7)``, ``int(n * 0.1)`` and the rest.

    Example:
        >>> recs = [Record("a", str(i)) for i in range(10)]
        >>> [len(s) for s in split(recs)]
        [7, 1, 2]
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    order = list(records)
    random.Random(seed).shuffle(order)
    n_train = int(len(order) * fractions[0])
    n_val = int(len(order) * fractions[1])
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
