"""Shared pytest fixtures for the tfgpt test suite, and the guard that keeps tests off the team's data directory.

The tests read only what travels with the repository: the slices in ``tests/fixtures/`` (see its
``SOURCES.md``) and the files shipped in the package (``tfgpt/assets/``). A development machine
may hold bigger corpora in a ``shared`` directory beside the checkout (benchmarks read them); a test that
opens or lists anything there fails, naming the path, so ``make test`` keeps working on a bare clone.
It also gathers the reliability suite's figures (the ``figures`` fixture) and renders them, after the
session, into a Markdown report: ``docs/reliability.md`` when ``TFGPT_RELIABILITY_DOC`` names it
(``make reliability``), a temp file otherwise, and a summary at the end of the terminal report.
This file uses only the standard library and pytest (``tests/test_conftest.py`` runs a copy of it).
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: The directory beside the repository root that tests must not read.
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
# The peak FLOP/s that MFU uses is measured once and cached; tests keep that cache out of $HOME.
os.environ.setdefault("TFGPT_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"tfgpt-test-cache-{os.getuid()}"))
_GUARDED_EVENTS = frozenset({"open", "os.listdir", "os.scandir", "glob.glob", "glob.glob/2"})


class SharedDataRead(AssertionError):
    """A test read a file under ``SHARED_DIR``: vendor a slice into ``tests/fixtures/`` instead."""


class SharedReadGuard:
    """An audit hook that refuses (and records) every open, listing or glob of a path under ``root``.

    Raising stops the read where it happens; recording catches reads whose error was swallowed
    (``pytest_runtest_makereport`` fails the test that made them).
    """

    def __init__(self, root: Path) -> None:
        self.roots = tuple(dict.fromkeys((os.path.abspath(root), os.path.realpath(root))))
        self.hits: list[str] = []

    def __call__(self, event: str, args: tuple) -> None:
        if event not in _GUARDED_EVENTS or not args or args[0] is None or isinstance(args[0], int):
            return
        try:
            path = os.path.abspath(os.fsdecode(args[0]))
        except (TypeError, ValueError):
            return
        if any(path == root or path.startswith(root + os.sep) for root in self.roots):
            self.hits.append(path)
            raise SharedDataRead(self.message([path]))

    def message(self, paths: list[str]) -> str:
        return (f"test read {', '.join(sorted(set(paths)))}, under {self.roots[0]} (beside the checkout, "
                "absent from a fresh clone): use a file in tests/fixtures/ (see its SOURCES.md) or tfgpt/assets/")

    def take(self) -> list[str]:
        """The paths refused since the last call (and forget them)."""
        hits, self.hits = self.hits, []
        return hits


GUARD = SharedReadGuard(SHARED_DIR)
sys.addaudithook(GUARD)  # audit hooks cannot be removed: one per process, installed on import


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """Fail the setup/call/teardown phase in which a read under ``SHARED_DIR`` was refused."""
    outcome = yield
    hits = GUARD.take()
    if hits:
        report = outcome.get_result()
        if not report.failed:
            report.longrepr = GUARD.message(hits)
        report.outcome = "failed"


@pytest.fixture
def shared_guard() -> SharedReadGuard:
    """The process's guard (for tests of the guard itself)."""
    return GUARD


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``tests/fixtures``: small corpus slices and fine-tuning samples, sources in its SOURCES.md."""
    return FIXTURES


@pytest.fixture(scope="session")
def shakespeare_file() -> Path:
    """The first 64 KiB of tinyshakespeare (2,468 lines, 59 distinct characters)."""
    return FIXTURES / "corpus" / "tinyshakespeare-64k.txt"


@pytest.fixture(scope="session")
def verdict_file() -> Path:
    """Edith Wharton's "The Verdict", whole (20,479 ASCII characters, 5,145 GPT-2 tokens)."""
    return FIXTURES / "corpus" / "the-verdict.txt"


@pytest.fixture(scope="session")
def wizard_file() -> Path:
    """The first 20 KB of "Dorothy and the Wizard in Oz": UTF-8 BOM and CRLF line endings."""
    return FIXTURES / "corpus" / "wizard_of_oz-20k.txt"


#: Figure sets recorded this session by the ``figures`` fixture, by key (the report sorts by key).
FIGURES: dict[str, dict] = {}
RELIABILITY_DOC = Path(os.environ.get("TFGPT_RELIABILITY_DOC")
                       or Path(tempfile.gettempdir()) / f"tfgpt-reliability-{os.getuid()}.md")
REPORT_HEAD = """# Reliability and security: figures

Produced by the test suite itself: each section is written by the tests named under it, in the run
dated below (`make reliability` regenerates this file; `make test` writes the same report to a temp file
and prints a summary). Every loop in these tests is bounded in count and time; servers bind to 127.0.0.1.
"""


def record_figures(key: str, *, title: str, columns: list[str], rows: list[list], test: str, note: str = "") -> None:
    """Keep one figure set (a small table) for the report; a later record under ``key`` replaces it."""
    if any(len(row) != len(columns) for row in rows):
        raise ValueError(f"figures {key!r}: every row needs {len(columns)} cells")
    FIGURES[key] = {"title": title, "columns": columns, "rows": rows, "test": test, "note": note}


@pytest.fixture(scope="session")
def figures():
    """``figures(key, title=..., columns=[...], rows=[[...]], test=..., note=...)`` records a figure set."""
    return record_figures


def render_figures(figures: dict[str, dict], when: str) -> str:
    """The Markdown report: the head, then one section per figure set (a table, its test, its note)."""
    parts = [REPORT_HEAD, f"Run: {when}.\n"]
    for key in sorted(figures):
        f = figures[key]
        table = ["| " + " | ".join(f["columns"]) + " |", "|" + "---|" * len(f["columns"])]
        table += ["| " + " | ".join(str(c) for c in row) + " |" for row in f["rows"]]
        parts.append(f"## {f['title']}\n\n" + "\n".join(table) + f"\n\nBy `{f['test']}`." +
                     (f" {f['note']}" if f["note"] else "") + "\n")
    return "\n".join(parts)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not FIGURES:
        return
    when = (f"{datetime.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}")
    text = render_figures(FIGURES, when)
    tmp = RELIABILITY_DOC.with_name(RELIABILITY_DOC.name + ".tmp")
    RELIABILITY_DOC.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, RELIABILITY_DOC)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for key in sorted(FIGURES):
        f = FIGURES[key]
        terminalreporter.write_line(f"{f['title']}:")
        for row in f["rows"]:
            terminalreporter.write_line("  " + ", ".join(f"{c}={v}" for c, v in zip(f["columns"], row, strict=True)))
    terminalreporter.write_line(f"report: {RELIABILITY_DOC}")
