"""The notebooks run top to bottom (code cells executed in order, as a kernel would)."""

import json
import os
import subprocess
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_quickstart_notebook_runs(tmp_path):
    nb = json.loads((NOTEBOOKS / "quickstart.ipynb").read_text())
    code = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    env = {**os.environ, "TFGPT_NOTEBOOK_DIR": str(tmp_path), "TFGPT_NOTEBOOK_STEPS": "20"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "val loss" in proc.stdout and "ROMEO:" in proc.stdout and "reloaded" in proc.stdout
    assert (tmp_path / "run" / "model.keras").is_file()
