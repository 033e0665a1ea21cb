"""The notebooks run top to bottom (code cells executed in order, as a kernel would), and ship executed."""

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
QUICKSTART = NOTEBOOKS / "quickstart.ipynb"
#: The tag of the cell that needs matplotlib (in dev and the `notebooks` extra: it runs here too).
NEEDS_MATPLOTLIB = "needs-matplotlib"


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_quickstart_notebook_runs(tmp_path):
    nb = json.loads(QUICKSTART.read_text())
    code = "\n\n".join("".join(c["source"]) for c in code_cells(nb))  # every cell, the plot's included
    env = {**os.environ, "TFGPT_NOTEBOOK_DIR": str(tmp_path), "TFGPT_NOTEBOOK_STEPS": "20", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ROMEO:" in proc.stdout and "reloaded" in proc.stdout
    losses = re.search(r"train loss ([\d.]+)  val loss ([\d.]+)", proc.stdout)
    assert losses and all(1.0 < float(v) < 4.5 for v in losses.groups()), proc.stdout  # ln 65 = 4.17 at the start
    assert (tmp_path / "run" / "model.keras").is_file()


def test_quickstart_notebook_is_committed_executed():
    """Every code cell ran, in order, in one kernel with the default 300 steps; the loss plot is a PNG."""
    nb = json.loads(QUICKSTART.read_text())
    cells = code_cells(nb)
    assert [c.get("execution_count") for c in cells] == list(range(1, len(cells) + 1))
    assert not [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    text = "".join(t for c in cells for o in c["outputs"] if o["output_type"] == "stream" for t in o["text"])
    assert "; 300 training steps" in text and "reloaded" in text
    pngs = [(c["metadata"].get("tags"), o["data"]["image/png"]) for c in cells for o in c["outputs"]
            if "image/png" in o.get("data", {})]
    assert len(pngs) == 1 and pngs[0][0] == [NEEDS_MATPLOTLIB]
    assert base64.b64decode(pngs[0][1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert len(text) < 8000 and QUICKSTART.stat().st_size < 100_000  # modest outputs: a few KB and one plot
