"""`tfgpt demo` end to end (what `make demo` runs), shortened to a few training steps."""

import json
import subprocess
import sys


def test_demo_prepares_trains_samples_and_exports(tmp_path, capsys):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "tfgpt", "demo", "--out", str(out), "--steps", "10"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ROMEO:" in proc.stdout and "tensorboard" in proc.stdout.lower()
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
