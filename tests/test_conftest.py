"""The shared-data guard in tests/conftest.py fires, and the vendored test data is intact."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tfgpt.assets_path import gpt2_vocab_dir

CONFTEST = Path(__file__).resolve().parent / "conftest.py"

READS = '''
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def test_reads_shared():
    (SHARED / "data" / "corpus.txt").read_text()


def test_swallows_the_error():
    try:
        open(SHARED / "data" / "corpus.txt").close()
    except Exception:
        pass


def test_lists_shared():
    sorted(SHARED.iterdir())


def test_globs_shared():
    import glob

    glob.glob(str(SHARED / "data" / "*.txt"))


def test_reads_fixture(shakespeare_file):
    assert shakespeare_file.read_text().startswith("First Citizen:")
'''


def test_guard_fails_every_test_that_touches_shared(tmp_path: Path) -> None:
    """A copy of the conftest, in a repo with a ``shared`` directory beside it, fails the four tests that
    touch it (even the one that swallows the error) and passes the one that reads a fixture."""
    repo, shared = tmp_path / "repo", tmp_path / "shared"
    (shared / "data").mkdir(parents=True)
    (shared / "data" / "corpus.txt").write_text("not for tests")
    (repo / "tests" / "fixtures" / "corpus").mkdir(parents=True)
    shutil.copy(CONFTEST.parent / "fixtures/corpus/tinyshakespeare-64k.txt", repo / "tests/fixtures/corpus")
    shutil.copy(CONFTEST, repo / "tests" / "conftest.py")
    (repo / "tests" / "test_reads.py").write_text(READS)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", "tests"],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "4 failed, 1 passed" in out, out
    target = str((shared / "data" / "corpus.txt").resolve())
    for name in ("test_reads_shared", "test_swallows_the_error", "test_lists_shared", "test_globs_shared"):
        assert f"FAILED tests/test_reads.py::{name}" in out, out
    assert out.count(f"test read {target}, under {shared.resolve()}") >= 2, out
    assert f"test read {shared.resolve()}, under" in out, out  # the directory listing
    assert f"test read {shared.resolve() / 'data' / '*.txt'}, under" in out, out  # the glob


def test_guard_raises_here_and_names_the_path(shared_guard, tmp_path: Path) -> None:
    """The process's hook, rebuilt on a root in ``tmp_path``: it refuses an open under that root before
    any I/O and names the path. No test opens anything under the real sibling directory, not even to
    prove that it would be refused; the copy-of-conftest test above covers the installed hook."""
    guard = type(shared_guard)(tmp_path / "shared")
    target = tmp_path / "shared" / "guard-probe.txt"
    with pytest.raises(AssertionError, match=r"test read .*guard-probe\.txt.*tests/fixtures/") as e:
        guard("open", (str(target), "r", 0))
    assert type(e.value).__name__ == "SharedDataRead"
    assert guard.take() == [str(target)]
    guard("open", (str(tmp_path / "elsewhere.txt"), "r", 0))  # outside the root: allowed, not recorded
    assert guard.take() == []
    assert Path(shared_guard.roots[0]) == CONFTEST.parents[1].parent / "shared"  # the installed hook's root


def _sums(directory: Path) -> dict[str, str]:
    lines = (directory / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines)}


@pytest.mark.parametrize("directory", [gpt2_vocab_dir(), CONFTEST.parent / "fixtures"], ids=["gpt2", "fixtures"])
def test_vendored_files_match_their_sha256sums(directory: Path) -> None:
    sums = _sums(directory)
    assert sums and all((directory / name).is_file() for name in sums)
    for name, digest in sums.items():
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest, directory / name


def test_packaged_gpt2_files_are_openai_s() -> None:
    """The published GPT-2 digests (Hugging Face ``gpt2`` vocab.json / merges.txt carry the same bytes)."""
    assert _sums(gpt2_vocab_dir()) == {
        "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    }
