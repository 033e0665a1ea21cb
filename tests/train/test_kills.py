"""Crash safety of ``tfgpt train`` (issue 17, item 1), proven on a real run in a real subprocess.

One tiny char run trains uninterrupted (the reference). The same config then trains in a fresh run dir
that is SIGKILLed at seeded random moments: at a random step after the process started stepping, or in
the middle of a checkpoint write (``TFGPT_TEST_CHECKPOINT_PAUSE`` holds each write open after its
weights file; the kill lands while the hidden ``.step-NNNNNN.tmp-PID`` dir holds only that). One more
interruption is a Ctrl-C (SIGINT): a clean stop that checkpoints the step in flight and prints the
resume command. After every interruption ``latest.json`` and ``best.json`` name complete checkpoints
that restore; the next run cleans the dead run's temp dir; resumed with ``tfgpt train --run-dir RUN
--resume`` (the printed command) until done, the run logs the same losses and ends with the same
weights and optimizer state as the reference. Startup costs seconds (TensorFlow's import), so the
test uses as few process starts as it can: 1 reference (beside the others) + 5 kills + 1 stop + the last
resume, killed once more between its last checkpoint and model.keras, + the resume that writes model.keras.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.train.helpers import tiny_config, train_records
from tfgpt.train.checkpoint import PAUSE_ENV

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 120
CKPT_EVERY = 5
SEED = 20261202  # the kill plan's: which kind of kill when, and at which step
PAUSE_S = 4.0  # a checkpoint write held open this long: the kill lands inside it
WAIT_S = 120  # any one wait on a subprocess; a bound, not a timing assertion
CKPT_FILES = ("model.weights.h5", "train_state.npz", "state.json")


def _config(data_dir: Path) -> dict:
    """1 layer, dropout on (its RNG state must resume too), no XLA (the process starts 4 s sooner)."""
    cfg = tiny_config(max_steps=MAX_STEPS, lr_decay_steps=MAX_STEPS, checkpoint_interval=CKPT_EVERY,
                      eval_interval=30, eval_iters=2, log_interval=1, jit_compile=False, peak_tflops=1.0)
    cfg["model"]["dropout"] = 0.1
    cfg["model"]["vocab_size"] = json.loads((data_dir / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    cfg["data"] = {"tokenizer": "char"}
    return cfg


@dataclass
class Trainer:
    """Starts ``tfgpt train`` processes on one run dir; each start's pid, stdout and stderr are kept."""

    config: Path
    data_dir: Path
    run_dir: Path
    logs: Path
    pids: list[int] = field(default_factory=list)

    def start(self, resume: bool, pause: float | None = None) -> subprocess.Popen:
        args = ["--run-dir", str(self.run_dir), "--resume"] if resume else [
            "--config", str(self.config), "--data", str(self.data_dir), "--run-dir", str(self.run_dir)]
        env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
        env.pop(PAUSE_ENV, None)
        if pause is not None:
            env[PAUSE_ENV] = str(pause)
        n = len(self.pids)
        with open(self.logs / f"{n}.out", "wb") as out, open(self.logs / f"{n}.err", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "tfgpt", "train", *args, "--quiet"], cwd=self.logs,
                                    env=env, stdout=out, stderr=err)
        proc.t0 = time.time()
        self.pids.append(proc.pid)
        return proc

    def stderr(self) -> str:
        """What the last start wrote to stderr."""
        return (self.logs / f"{len(self.pids) - 1}.err").read_text(errors="replace")

    def stdout(self) -> str:
        return (self.logs / f"{len(self.pids) - 1}.out").read_text(errors="replace")

    @property
    def ckpts(self) -> Path:
        return self.run_dir / "checkpoints"

    def latest_step(self) -> int:
        path = self.ckpts / "latest.json"
        return json.loads(path.read_text())["step"] if path.is_file() else 0

    def temp_dirs(self) -> set[str]:
        return {p.name for p in self.ckpts.glob(".step-*.tmp-*")} if self.ckpts.is_dir() else set()


def _wait_for(proc: subprocess.Popen, ready, what: str):
    """Poll ``ready()`` every 5 ms until it is truthy; fail if the process ends first or after WAIT_S."""
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        value = ready()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the training process ended (exit {proc.returncode}) before {what}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"no {what} within {WAIT_S} s")


def _new_step(run_dir: Path, t0: float) -> int:
    """The last step this process logged (its records are timed after it started), or 0."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [0]
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line being appended
            continue
        if rec.get("kind") == "train" and rec["time"] >= t0:
            steps.append(rec["step"])
    return max(steps)


def _finish(proc: subprocess.Popen, trainer: Trainer) -> None:
    try:
        rc = proc.wait(WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert rc == 0, trainer.stderr()


class Restorer:
    """The run's GPT and optimizer, built once in this process, to load checkpoints the way --resume does."""

    def __init__(self, cfg: dict) -> None:
        from tfgpt.model.gpt import GPT
        from tfgpt.train.config import resolve_config
        from tfgpt.train.optim import make_optimizer

        model_cfg, tcfg, _ = resolve_config(cfg)
        self.gpt = GPT(model_cfg, name="gpt")
        self.gpt.build((None, model_cfg.block_size))
        self.opt = make_optimizer(tcfg, self.gpt)
        self.opt.build(self.gpt.trainable_variables)

    def load(self, ckpt: Path) -> dict:
        """Restore ``ckpt``; its state.json. RunDirError if a file is missing."""
        from tfgpt.train.checkpoint import restore_checkpoint

        state = restore_checkpoint(ckpt, self.gpt, self.opt)
        assert int(self.opt.iterations.numpy()) == state["step"], ckpt
        return state

    def arrays(self, ckpt: Path) -> list[np.ndarray]:
        """Weights, optimizer variables and dropout RNG state of ``ckpt``, in a fixed order."""
        from tfgpt.train.checkpoint import rng_variables

        self.load(ckpt)
        return [np.array(v.numpy()) for v in (*self.gpt.weights, *self.opt.variables, *rng_variables(self.gpt))]


def check_checkpoints(ckpts: Path, restorer: Restorer) -> int:
    """latest.json / best.json name complete checkpoints that restore to their step; any other visible
    step dir restores or is refused as incomplete (a prune cut short). Returns how many were loaded."""
    from tfgpt.errors import RunDirError

    named: set[str] = set()
    for pointer in ("latest", "best"):
        path = ckpts / f"{pointer}.json"
        if not path.is_file():
            continue
        ptr = json.loads(path.read_text())  # whole JSON: pointers are written atomically
        target = ckpts / ptr["dir"]
        missing = [f for f in CKPT_FILES if not (target / f).is_file()]
        assert not missing, f"{pointer}.json names {target}, which lacks {missing}"
        state = restorer.load(target)
        assert state["step"] == ptr["step"], (pointer, ptr, state["step"])
        if pointer == "best":
            assert state["val_loss"] == ptr["val_loss"]
        named.add(ptr["dir"])
    loaded = len(named)
    for d in sorted(p for p in ckpts.glob("step-*") if p.is_dir() and p.name not in named):
        if all((d / f).is_file() for f in CKPT_FILES):
            restorer.load(d)
            loaded += 1
        else:
            with pytest.raises(RunDirError, match="is incomplete"):
                restorer.load(d)
    return loaded


# -- the interruptions ------------------------------------------------------------------------------


def kill_at_step(proc: subprocess.Popen, run: Trainer, rng: random.Random, start: int) -> None:
    """SIGKILL a random 0-30 ms after the run logged a random step 1-15 past where it started."""
    target = rng.randint(start + 1, start + 15)
    _wait_for(proc, lambda: _new_step(run.run_dir, proc.t0) >= target, f"step {target}")
    time.sleep(rng.uniform(0, 0.03))  # somewhere in the next step: a train call, a log line or a checkpoint
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(WAIT_S) == -signal.SIGKILL


def kill_in_write(proc: subprocess.Popen, run: Trainer, rng: random.Random) -> None:
    """SIGKILL while the run's first checkpoint write holds only its weights (the write paused after it)."""

    def writing() -> Path | None:
        return next((p for p in run.ckpts.glob(f".step-*.tmp-{proc.pid}") if (p / CKPT_FILES[0]).is_file()), None)

    tmp = _wait_for(proc, writing, "a checkpoint write")
    time.sleep(rng.uniform(0, PAUSE_S / 4))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(WAIT_S) == -signal.SIGKILL
    assert tmp.is_dir() and not (tmp / "state.json").exists(), "the kill missed the checkpoint write"


def stop_with_ctrl_c(proc: subprocess.Popen, run: Trainer, rng: random.Random, start: int) -> None:
    """SIGINT (Ctrl-C) after a random step: exit 130, a checkpoint of the step it stopped at, the resume hint."""
    target = rng.randint(start + 1, start + 10)
    _wait_for(proc, lambda: _new_step(run.run_dir, proc.t0) >= target, f"step {target}")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(WAIT_S) == 128 + signal.SIGINT, run.stderr()
    step, err = run.latest_step(), run.stderr()
    assert target <= step < MAX_STEPS
    assert f"SIGINT at step {step} of {MAX_STEPS}: checkpoint {run.ckpts / f'step-{step:06d}'} written" in err
    assert f"resume with: tfgpt train --run-dir {run.run_dir} --resume" in err and "Traceback" not in err
    assert not (run.run_dir / "model.keras").exists()


# -- the test ---------------------------------------------------------------------------------------


def interrupt(kind: str, run: Trainer, rng: random.Random, tally: dict) -> None:
    """Start the run (``--resume`` once it has a checkpoint, else afresh) and interrupt it as ``kind`` says;
    check that a run which saved cleaned the dead runs' temp dirs."""
    start = run.latest_step()
    proc = run.start(resume=start > 0, pause=PAUSE_S if kind == "write" else None)
    tally["resumes" if start > 0 else "fresh starts"] += 1
    if kind == "write":
        kill_in_write(proc, run, rng)
    elif kind == "step":
        kill_at_step(proc, run, rng, start)
    else:
        stop_with_ctrl_c(proc, run, rng, start)
    if start > 0:
        assert f"resuming {run.run_dir} from step {start}" in run.stderr()
    left = run.temp_dirs()
    if run.latest_step() > start:  # this run saved: the temp dirs of the runs killed before are gone
        assert {n for n in left if not n.endswith(f".tmp-{proc.pid}")} == set(), left
    tally["kills" if kind != "ctrl-c" else "clean stops"] += 1
    tally["during a checkpoint write"] += any(n.endswith(f".tmp-{proc.pid}") for n in left)
    tally["temp dirs seen"] |= left


def _final_model(run: Trainer) -> list[np.ndarray]:
    import tfgpt

    return tfgpt.load(run.run_dir, checkpoint=str(run.run_dir / "model.keras"))[0].get_weights()


def visible(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if not p.name.startswith("."))


def compare_runs(ref: Trainer, run: Trainer, restorer: Restorer) -> tuple[float, float]:
    """The same losses at every step, each logged once, the same checkpoints kept and named (latest, best), the
    same final weights and optimizer state; returns the max abs differences of the losses and of the arrays."""
    records = [[json.loads(x) for x in (t.run_dir / "metrics.jsonl").read_text().splitlines()] for t in (ref, run)]
    order = [[(r["kind"], r["step"]) for r in recs] for recs in records]
    assert order[0] == order[1]  # the same records in the same order: none logged twice, none lost
    assert sorted(train_records(ref.run_dir)) == list(range(1, MAX_STEPS + 1))
    loss_diff = max(abs(x.get(k) - y.get(k)) for x, y in zip(*records, strict=True)
                    for k in ("loss", "val_loss") if x.get(k) is not None)
    assert loss_diff <= 1e-5, loss_diff
    for pointer in ("latest.json", "best.json"):  # the same best checkpoint too, and the same ones kept
        assert json.loads((run.ckpts / pointer).read_text()) == json.loads((ref.ckpts / pointer).read_text())
    assert visible(run.ckpts) == visible(ref.ckpts)
    final = f"step-{MAX_STEPS:06d}"
    want, got = restorer.arrays(ref.ckpts / final), restorer.arrays(run.ckpts / final)
    weight_diff = max(float(np.max(np.abs(x.astype(np.float64) - y), initial=0.0))
                      for x, y in zip(want, got, strict=True))
    for x, y in zip(want, got, strict=True):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-5)
    return loss_diff, weight_diff


def kill_after_last_checkpoint(proc: subprocess.Popen, run: Trainer) -> bool:
    """SIGKILL while model.keras is being written (its temp file exists), after the last checkpoint (a ~50 ms
    window); True if the kill landed there. Then --resume must write model.keras from that checkpoint."""
    model = run.run_dir / "model.keras"

    def writing() -> bool:
        return model.exists() or any(run.run_dir.glob(".model.keras.*.tmp*"))

    _wait_for(proc, writing, "the model.keras write")
    if model.exists():
        _finish(proc, run)
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(WAIT_S)
    assert run.latest_step() == MAX_STEPS
    return not model.exists()


def kill_until_done(run: Trainer, restorer: Restorer) -> tuple[dict, list[str]]:
    """The seeded plan of interruptions, each followed by the checkpoint checks, then the last resume,
    killed once more between its last checkpoint and model.keras, then the resume that finishes."""
    rng = random.Random(SEED)
    plan = ["write", "step", "write", "step", "step"]
    rng.shuffle(plan)
    plan.insert(rng.randint(1, len(plan) - 1), "ctrl-c")
    tally = dict.fromkeys(["kills", "during a checkpoint write", "after the last checkpoint", "clean stops",
                           "resumes", "fresh starts", "checkpoints checked"], 0)
    tally["temp dirs seen"] = set()
    for kind in plan:
        interrupt(kind, run, rng, tally)
        tally["checkpoints checked"] += check_checkpoints(run.ckpts, restorer)
    last = run.latest_step()
    assert last > 0, "no interrupted run got as far as a checkpoint"
    tally["resumes"] += 1
    if kill_after_last_checkpoint(run.start(resume=True), run):
        tally["kills"] += 1
        tally["after the last checkpoint"] += 1
        assert f"resuming {run.run_dir} from step {last}" in run.stderr()
        tally["checkpoints checked"] += check_checkpoints(run.ckpts, restorer)
        tally["resumes"] += 1
        _finish(run.start(resume=True), run)
        assert f"is at step {MAX_STEPS} of {MAX_STEPS}: nothing left to train; writing model.keras" in run.stderr()
    assert (run.run_dir / "model.keras").is_file()
    assert not list(run.run_dir.glob(".*")), "a killed start's temp file is left in the run dir"
    assert not run.temp_dirs(), "the last run left temp dirs"
    tally["temp dirs cleaned"] = len(tally.pop("temp dirs seen"))
    tally["pointer temp files left"] = len(list(run.ckpts.glob(".*.json.*")))  # see the figures' note
    tally["checkpoints checked"] += check_checkpoints(run.ckpts, restorer)
    return tally, plan


def test_sigkills_at_random_moments_resume_to_the_uninterrupted_weights(tmp_path, data_dir, figures):
    cfg = _config(data_dir)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    for name in ("ref-logs", "run-logs"):
        (tmp_path / name).mkdir()
    ref = Trainer(tmp_path / "c.yaml", data_dir, tmp_path / "ref", tmp_path / "ref-logs")
    run = Trainer(tmp_path / "c.yaml", data_dir, tmp_path / "killed", tmp_path / "run-logs")
    reference = ref.start(resume=False)  # beside the interrupted runs: it only reads the data dir
    try:
        tally, plan = kill_until_done(run, Restorer(cfg))
        _finish(reference, ref)
    finally:
        reference.kill()
    loss_diff, weight_diff = compare_runs(ref, run, Restorer(cfg))
    same_model = [w.tobytes() for w in _final_model(ref)] == [w.tobytes() for w in _final_model(run)]
    assert same_model, "model.keras differs"
    assert tally["kills"] >= 5 and tally["during a checkpoint write"] >= 1, tally
    figures("20-kills-train", title="Kills survived: tfgpt train",
            columns=[*tally, "final weights max abs diff", "losses max abs diff", "same model.keras weights"],
            rows=[[*tally.values(), f"{weight_diff:.1e}", f"{loss_diff:.1e}", same_model]],
            test="tests/train/test_kills.py::test_sigkills_at_random_moments_resume_to_the_uninterrupted_weights",
            note=f"A {MAX_STEPS}-step char run (checkpoint every {CKPT_EVERY} steps, dropout 0.1), SIGKILLed at "
                 f"seeded random steps and inside checkpoint writes, stopped once by Ctrl-C, resumed each time; "
                 f"compared with the same run uninterrupted (plan: {', '.join(plan)}; then the last resume is killed "
                 f"between its last checkpoint and model.keras when the ~50 ms window is caught). The kills during "
                 f"a write count every kill that left the run's hidden temp dir behind, planned or not. Pointer "
                 f"temp files left: hidden temps of latest.json/best.json writes a kill cut off, still there at the "
                 f"end (a resume removes them).")
