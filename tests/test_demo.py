"""`tfgpt demo` end to end (what `make demo` runs), shortened to a few training steps."""

import json
import subprocess
import sys

import pytest


def run_demo(out, *flags):
    """``tfgpt demo --out OUT --steps 10 FLAGS`` in a subprocess: ``(out, stdout)``."""
    proc = subprocess.run(
        [sys.executable, "-m", "tfgpt", "demo", "--out", str(out), "--steps", "10", *flags],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    """A 10-step demo run by the CLI: prepared data, a trained run, an export."""
    return run_demo(tmp_path_factory.mktemp("demo") / "demo")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The same demo without the export (the part the resume test does not need, and the slow one)."""
    return run_demo(tmp_path_factory.mktemp("demo_run") / "demo", "--no-export")


@pytest.mark.slow
def test_demo_prepares_trains_samples_and_exports(demo_out, capsys):
    out, stdout = demo_out
    assert "ROMEO:" in stdout and "tensorboard" in stdout.lower()
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["tokenizer"]["vocab_size"] == 65
    assert (out / "run" / "model.keras").is_file() and list((out / "run" / "logs").rglob("events.out.*"))
    export = json.loads((out / "export" / "export.json").read_text())
    assert export["verification"]["savedmodel"]["greedy_completions_equal"] is True
    assert (out / "export" / "tflite" / "model_int8.tflite").is_file()
    # A second run reuses everything instead of redoing or failing (in process: no second TensorFlow start-up).
    from tfgpt.cli import main

    assert main(["demo", "--out", str(out), "--steps", "10"]) == 0
    again = capsys.readouterr().out
    assert "reusing" in again and "keeping it" in again and "ROMEO:" in again


@pytest.mark.reliability
@pytest.mark.slow  # the demo_run fixture: ~30 s
def test_a_killed_demo_resumes_on_rerun(demo_run, capsys):
    """A demo killed after a checkpoint failed on re-run with "already holds a run; pass --resume": it called
    train() without resume. Now it resumes. The kill here: after the last checkpoint, before model.keras (~4 s;
    rolling back to an earlier checkpoint costs ~25 s more, for the compile of the train step)."""
    from tfgpt.cli import main

    out, _ = demo_run
    (out / "run" / "model.keras").unlink()
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--steps", "10", "--no-export"]) == 0
    again = capsys.readouterr().out
    assert "resuming the interrupted training of char-small" in again and "ROMEO:" in again
    assert (out / "run" / "model.keras").is_file()
    assert json.loads((out / "run" / "checkpoints" / "latest.json").read_text()) == {"step": 10, "dir": "step-000010"}
