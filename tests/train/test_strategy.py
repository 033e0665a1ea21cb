"""tfgpt.train.strategy: choosing a strategy, and training under mirrored and multi-worker ones.

Mirrored (2 logical CPU devices) and multi-worker (2 processes on 127.0.0.1) training each run in
subprocesses: logical devices and TF_CONFIG must be set before TensorFlow starts.
Both use gradient accumulation; the global batch and data are the same as a default-strategy
run, so all three must reach (nearly) the same loss, and the two workers identical weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tfgpt.errors import ConfigError
from tfgpt.train.strategy import STRATEGIES, get_strategy, is_chief, is_multi_worker

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 240


def test_get_strategy_by_name(monkeypatch):
    default = get_strategy("default")
    assert default.num_replicas_in_sync == 1 and is_chief(default) and not is_multi_worker(default)
    assert STRATEGIES == ("default", "mirrored", "multiworker")
    with pytest.raises(ConfigError, match="unknown strategy 'tpu'; valid: default, mirrored, multiworker"):
        get_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="needs the TF_CONFIG environment variable"):
        get_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{cluster")
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        get_strategy("multiworker")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    return env


def _summary(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.startswith("SUMMARY ")]
    assert lines, out[-3000:]
    return json.loads(lines[-1][len("SUMMARY "):])


def _run(args: list[str], **env: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "tests.train.dist_worker", *args], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return _summary(proc.stdout)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The same run under the default strategy, in process (it needs no devices or TF_CONFIG set up first)."""
    from tests.train.dist_worker import train_tiny

    return train_tiny("default", str(tmp_path_factory.mktemp("ref") / "run"))


def test_mirrored_two_logical_cpus(tmp_path, reference):
    out = _run(["mirrored", str(tmp_path / "run"), "2"])
    assert out["replicas"] == 2 and out["path"] == "fit" and out["jit_compile"] is False
    assert out["step"] == 6
    assert out["loss"] == pytest.approx(reference["loss"], abs=2e-3)
    assert (tmp_path / "run" / "model.keras").is_file()
    assert json.loads((tmp_path / "run/checkpoints/latest.json").read_text())["step"] == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multiworker_two_processes(tmp_path, reference):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run_dir = tmp_path / "run"
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.train.dist_worker", "multiworker", str(run_dir)], cwd=ROOT,
            env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, stdout[-2000:] + stderr[-4000:]
            outs.append(_summary(stdout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    a, b = outs
    assert a["path"] == b["path"] == "custom_loop" and a["replicas"] == 2
    assert a["step"] == b["step"] == 6
    assert a["weights_sha256"] == b["weights_sha256"]
    assert a["loss"] == pytest.approx(reference["loss"], abs=2e-3)
    # only the chief (worker 0) wrote the run dir
    assert (run_dir / "model.keras").is_file()
    assert json.loads((run_dir / "checkpoints/latest.json").read_text())["step"] == 6
