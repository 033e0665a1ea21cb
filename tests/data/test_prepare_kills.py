"""Crash safety of ``tfgpt prepare`` (issue 17, item 2): SIGKILLs at random moments, re-runs, the same bytes.

Three fixture files (input A) are prepared into ~100 small shards, uninterrupted: the reference. The
same command then runs in another place and is SIGKILLed, at seeded random moments in three phases:
while it reads the corpus and builds the tokenizer (TensorFlow still importing), while it writes the
staged shards, and while the shards stand in place under their final names with no ``manifest.json``
yet (``TFGPT_TEST_PREPARE_PAUSE`` holds that moment open). Killed runs alternate between input A and
a different input B, so every re-run after a kill comes with the other input: it must start clean
(no shard, tokenizer or count of the killed input may leak in). After every kill the out dir is
either not a data dir at all (no manifest: every reader refuses it) or a whole one. The last re-run,
with A, must equal the reference file by file (sha256), the manifest but for :data:`RUN_SPECIFIC`;
then a re-run with B on the finished dir is refused with a one-line message and changes nothing.
``tests/data/test_prepare.py::test_sigkill_during_prepare_leaves_nothing_half_done`` kills once,
in-process API, same input; this test drives the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfgpt.data.manifest import load_manifest, verify_shards
from tfgpt.data.prepare import PAUSE_ENV
from tfgpt.errors import DataError

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

REPO = Path(__file__).resolve().parents[2]
SEED = 21
KILLS = 6
PAUSE_S = 3.0
WAIT_S = 60  # the bound of any one wait on a subprocess (not a timing assertion)
#: The manifest fields that legitimately differ between two runs of the same command: when it ran
#: (``created``, an ISO timestamp) and how fast (``timing``: seconds, MB/s, tokens/s).
RUN_SPECIFIC = ("created", "timing")
PHASES = ("reading the corpus", "writing shards", "shards in place, no manifest")


def _args(inputs: list[Path]) -> list[str]:
    return [sys.executable, "-m", "tfgpt", "prepare", "--input", *map(str, inputs), "--out", "data",
            "--tokenizer", "char", "--val-fraction", "0.1", "--shard-tokens", "1000", "--workers", "1", "--quiet"]


def start(cwd: Path, inputs: list[Path], pause: float | None = None) -> subprocess.Popen:
    """``tfgpt prepare ... --out data`` in ``cwd`` (the same relative --out: the manifests record the same
    command wherever the run is)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(PAUSE_ENV, None)
    if pause is not None:
        env[PAUSE_ENV] = str(pause)
    cwd.mkdir(exist_ok=True)
    return subprocess.Popen(_args(inputs), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> None:
    try:
        _, err = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")


def tree_digests(d: Path) -> dict[str, str]:
    """sha256 of every file under ``d`` by relative path; manifest.json's as JSON without RUN_SPECIFIC."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
    manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    for key in RUN_SPECIFIC:
        assert key in manifest, f"manifest field {key} is gone: update RUN_SPECIFIC"
        del manifest[key]
    out["manifest.json"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    return out


def phase_of(out: Path) -> str | None:
    """Which phase the files in ``out`` show: None once the manifest is written (the run had finished)."""
    if (out / "manifest.json").exists():
        return None
    if any(out.glob("*.tfrecord")):
        return PHASES[2]
    staging = out / ".prepare-tmp"
    if staging.is_dir() and any(p.name.startswith(("train-", "val-", ".train-", ".val-")) for p in staging.iterdir()):
        return PHASES[1]
    return PHASES[0]


def _wait_for(proc: subprocess.Popen, ready, what: str) -> None:
    deadline = time.time() + WAIT_S
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"prepare ended (exit {proc.returncode}) before {what}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {WAIT_S} s")
        time.sleep(0.003)


def _stamps(out: Path) -> dict[Path, tuple[int, int]]:
    """(inode, mtime) of everything under ``out``: what a killed run left, to tell its files from the next run's."""
    return {p: _stamp(p) for p in out.rglob("*")} if out.is_dir() else {}


def kill_in(phase: int, proc: subprocess.Popen, out: Path, rng: random.Random, left: dict) -> None:
    """SIGKILL at a random moment of ``PHASES[phase]``: after this run saved its tokenizer (0), after its first
    staged shard (1), or while its finished shards wait in place for their manifest (2). ``left``: the stamps
    of what the killed run before left, which the waits must not take for this run's files."""
    staging = out / ".prepare-tmp"

    def new(paths) -> bool:
        return any(_stamp(p) not in (None, left.get(p)) for p in paths)

    if phase == 0:
        _wait_for(proc, lambda: new([staging / "tokenizer" / "tokenizer.json"]), "its tokenizer")
        time.sleep(rng.uniform(0, 1.0))
    elif phase == 1:
        _wait_for(proc, lambda: new([*staging.glob(".train-*.tmp"), *staging.glob("train-*")]), "a staged shard")
        time.sleep(rng.uniform(0, 0.1))  # ~100 shards take ~0.5 s here: well before the end
    else:
        _wait_for(proc, lambda: new(out.glob("*.tfrecord")), "shards in place")
        time.sleep(rng.uniform(0, PAUSE_S / 4))
    assert proc.poll() is None, f"prepare finished before the kill in {PHASES[phase]}"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(WAIT_S) == -signal.SIGKILL


def _stamp(p: Path) -> tuple[int, int] | None:
    try:
        st = p.stat()
    except FileNotFoundError:  # not yet there, or just renamed or cleared
        return None
    return st.st_ino, st.st_mtime_ns


def check_after_kill(out: Path) -> str:
    """A killed run leaves no data dir (no manifest: load_manifest, and so train, refuses it), never half
    of one; returns the phase the kill landed in, as the files show it."""
    phase = phase_of(out)
    assert phase is not None, "the kill landed after manifest.json was written: pick earlier kill moments"
    with pytest.raises(DataError, match="is not a tfgpt data directory: no manifest.json"):
        load_manifest(out)
    return phase


def check_refused(cwd: Path, inputs: list[Path], out: Path, want: dict[str, str]) -> str:
    """A re-run with other inputs on a finished data dir: exit 2, one line naming the dir, nothing changed."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(_args(inputs), cwd=cwd, env=env, capture_output=True, text=True, timeout=WAIT_S)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "data already holds a prepared dataset made with different inputs" in err, err
    assert tree_digests(out) == want
    return err


def test_sigkills_and_reruns_with_another_input_end_equal_to_an_uninterrupted_run(
        tmp_path, shakespeare_file, verdict_file, wizard_file, figures):
    a = [shakespeare_file, verdict_file, wizard_file]
    upper = tmp_path / "upper.txt"  # input B: another vocabulary, other documents
    upper.write_text(shakespeare_file.read_text(encoding="utf-8").upper(), encoding="utf-8")
    b = [upper, verdict_file]
    rng = random.Random(SEED)
    plan = [i % len(PHASES) for i in range(KILLS)]
    rng.shuffle(plan)
    out, seen = tmp_path / "killed" / "data", dict.fromkeys(PHASES, 0)
    reference = start(tmp_path / "ref", a)  # beside the killed runs: another dir
    try:
        for i, phase in enumerate(plan):
            other, left = (len(plan) - i) % 2, _stamps(out)  # B, A, B, ... back from the last re-run's A
            proc = start(tmp_path / "killed", b if other else a, pause=PAUSE_S if phase == 2 else None)
            kill_in(phase, proc, out, rng, left)
            seen[check_after_kill(out)] += 1
        finish(start(tmp_path / "killed", a))  # after a kill of a run on B
        finish(reference)
    finally:
        reference.kill()
    want, got = tree_digests(tmp_path / "ref" / "data"), tree_digests(out)
    assert got == want
    verify_shards(out, hashes=True)
    assert sum(name.endswith(".tfrecord") for name in want) > 50 and not (out / ".prepare-tmp").exists()
    check_refused(tmp_path / "killed", b, out, want)
    figures("21-kills-prepare", title="Kills survived: tfgpt prepare",
            columns=["kills", *(f"in: {p}" for p in PHASES), "re-runs with the other input", "files equal by sha256",
                     "other input on the finished dir"],
            rows=[[len(plan), *seen.values(), len(plan), f"{len(got)} / {len(want)}", "refused (exit 2)"]],
            test="tests/data/test_prepare_kills.py::"
                 "test_sigkills_and_reruns_with_another_input_end_equal_to_an_uninterrupted_run",
            note=f"Three fixture files (~106k chars) into 1,000-token shards; kills at seeded random moments, "
                 f"the killed runs alternating between two inputs; the phase is what the files showed after each "
                 f"kill. The manifest is compared without its run-specific fields {', '.join(RUN_SPECIFIC)}.")
