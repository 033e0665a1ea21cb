"""Corruption, systematically (issue 17 item 3): every file a user's data lives in, damaged four ways.

For each file type (train and val shards, ``manifest.json`` and the data tokenizer; a checkpoint's four
files; a run's ``model.keras`` and ``config.yaml``; each char and BPE tokenizer file; a SavedModel's
graph and variables, ``export.json``, a ``.tflite`` and the export's tokenizer; an imported safetensors
file and its tokenizer files) the table below copies a built artifact, applies each corruption — three
bytes flipped around the middle, one bit flipped (text stays ASCII: a digit or a letter changes),
truncation to half, truncation to zero bytes — and runs the real consumer: the CLI (``tfgpt.cli.main``
in-process) or the loader ``tfgpt serve`` runs. Each outcome must be *detected* (a
:class:`tfgpt.errors.TfgptError`, one line naming the file; the CLI exits 2) or be listed in
:data:`HARMLESS` with the reason, checked where it can be (the output equals the undamaged file's).
Anything else (a traceback, garbage accepted, a message that does not name the file) is *missed* and
fails the test. Two real subprocesses show the CLI prints one line, no traceback. Figures: ``30-corruption``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.reliability]

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "ROMEO:"
GEN = ["--prompt", PROMPT, "--max-new-tokens", "4", "--temperature", "0", "--completion-only"]
FLIP_OFFSETS = (-3, 0, 3)  # three bytes around the middle, apart: each lands in a different byte of a float32


def flip(path: Path) -> None:
    """XOR 0xFF three bytes around the middle of ``path``."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for off in FLIP_OFFSETS:
        data[min(max(mid + off, 0), len(data) - 1)] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_bit(path: Path) -> None:
    """XOR 0x01 the middle byte of ``path``: one bit, as bit rot does (text stays ASCII: '4' becomes '5')."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def halve(path: Path) -> None:
    """Truncate ``path`` to half its size."""
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def empty(path: Path) -> None:
    """Truncate ``path`` to zero bytes."""
    path.write_bytes(b"")


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "flip": flip, "bit": flip_bit, "half": halve, "empty": empty,
}


# -- consumers: each returns an Outcome ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a consumer did: ``rc`` (0 accepted, 2 refused), its one-line message, its output, or a raw error."""

    rc: int
    message: str = ""
    output: Any = None
    raw: str = ""  # an exception that escaped: a traceback for the user


def cli(argv: list[str]) -> Outcome:
    """``tfgpt ARGV`` in-process (tfgpt.cli.main): its exit status, the error line on stderr, stdout."""
    from tfgpt.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except BaseException as e:  # noqa: BLE001 - anything escaping main is a traceback for the user
        return Outcome(rc=-1, raw=f"{type(e).__name__}: {str(e)[:300]}")
    lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("tfgpt ") and "error:" in ln]
    return Outcome(rc=rc, message=lines[-1] if lines else err.getvalue().strip()[-300:], output=out.getvalue())


def api(fn: Callable[[], Any]) -> Outcome:
    """A public API call: a TfgptError is a refusal (rc 2) with its message, any other exception is raw."""
    from tfgpt.errors import TfgptError

    try:
        return Outcome(rc=0, output=fn())
    except TfgptError as e:
        return Outcome(rc=2, message=str(e))
    except Exception as e:  # noqa: BLE001 - a raw library error reaching the user
        return Outcome(rc=-1, raw=f"{type(e).__name__}: {str(e)[:300]}")


def train_on(data: Path, config: Path, run: Path) -> Outcome:
    """``tfgpt train`` on the data dir; its output is the trained weights' sha256 (deterministic on CPU)."""
    out = cli(["train", "--config", str(config), "--data", str(data), "--run-dir", str(run), "--quiet"])
    out.output = json.loads(out.output)["weights_sha256"] if out.rc == 0 else None
    return out


def resume(run: Path) -> Outcome:
    out = cli(["train", "--run-dir", str(run), "--resume", "--quiet", "--set", "train.max_steps=6"])
    out.output = None if out.rc else "resumed"  # a resumed run's figures differ by design; that it ran is the point
    return out


def generate(run: Path) -> Outcome:
    return cli(["generate", "--run", str(run), *GEN])


def export(run: Path, out: Path) -> Outcome:
    """``tfgpt export``; its output is what export.json says was exported (the model and tokenizer)."""
    res = cli(["export", "--run", str(run), "--out", str(out), "--format", "savedmodel"])
    res.output = exported_source(out) if res.rc == 0 else None
    return res


def exported_source(export_dir: Path) -> dict[str, Any]:
    source = json.loads((export_dir / "export.json").read_text(encoding="utf-8"))["source"]
    return {"model": source["model"], "tokenizer": source["tokenizer"]}


def serve_loader(export_dir: Path) -> Outcome:
    """What ``tfgpt serve`` does before it binds: load the export (digests checked), then one greedy request."""
    from tfgpt.serve.model import ExportedModel

    def run() -> list[str]:
        model = ExportedModel(export_dir)
        got = model.predict("serving_default", {"prompts": [PROMPT], "max_new_tokens": 4})
        return [bytes(c).decode() if isinstance(c, bytes) else str(c) for c in got["completions"].tolist()]

    return api(run)


def tflite_generate(export_dir: Path) -> Outcome:
    return cli(["generate", "--tflite", str(export_dir / "tflite" / "model.tflite"),
                "--tokenizer", str(export_dir / "tokenizer"), *GEN])


def import_gpt2(hf: Path, out: Path) -> Outcome:
    """``tfgpt import-gpt2``, then the imported weights (what generate would run)."""
    res = cli(["import-gpt2", "--from", str(hf), "--out", str(out)])
    if res.rc == 0:
        import tfgpt

        def imported() -> tuple[list[bytes], list[int]]:
            model, tok = tfgpt.load(out)
            return [np.asarray(v).tobytes() for v in model.weights], tok.encode("the quick brown fox was not in it")

        res.output = api(imported).output
    return res


# -- the artifacts, built once: a data dir, a trained run with checkpoints, its export, an HF GPT-2 dir -----------


@dataclass
class Built:
    """Clean artifacts (copied before each corruption) and what their consumers give when undamaged."""

    roots: dict[str, Path]  # "data", "run", "ckpt_run" (no model.keras: generate reads the checkpoint), ...
    config: Path  # the train config that made "run"
    baseline: dict[tuple[str, str], Any]  # (consumer, artifact) -> the consumer's output on the undamaged copy


def _data_and_run(tmp: Path, shakespeare_file: Path) -> tuple[Path, Path, dict[str, Any]]:
    from tests.train.helpers import tiny_config
    from tfgpt.data.prepare import prepare
    from tfgpt.train.fit import train

    src = tmp / "src.txt"
    src.write_text(shakespeare_file.read_text(encoding="utf-8")[:20000], encoding="utf-8")
    data = tmp / "data"
    prepare([str(src)], str(data), tokenizer="char", val_fraction=0.1, workers=0, progress=False,
            command=["tfgpt", "prepare", "src.txt"])  # not pytest's argv: the manifest's middle stays put
    cfg = tiny_config(max_steps=4, checkpoint_interval=4, eval_interval=4, eval_iters=1, log_interval=4)
    cfg["model"]["vocab_size"] = json.loads((data / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    cfg["data"] = {"tokenizer": "char"}
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return data, config, train(str(config), data_dir=str(data), run_dir=str(tmp / "run"), progress=False)


def _hf_dir(tmp: Path, verdict_file: Path) -> Path:
    import keras

    from tfgpt.config import GPTConfig
    from tfgpt.convert import write_hf
    from tfgpt.model import GPT
    from tfgpt.tokenizers import BPETokenizer

    tok = BPETokenizer.train([verdict_file.read_text(encoding="utf-8")[:6000]], vocab_size=300)
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    model.build((None, None))
    write_hf(model, tok, tmp / "hf")
    return tmp / "hf"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shakespeare_file: Path, verdict_file: Path) -> Built:
    from tfgpt.convert import import_gpt2 as do_import
    from tfgpt.export import export_run

    tmp = tmp_path_factory.mktemp("corruption")
    data, config, summary = _data_and_run(tmp, shakespeare_file)
    run = Path(summary["run_dir"])
    ckpt_run = tmp / "ckpt_run"
    shutil.copytree(run, ckpt_run)
    (ckpt_run / "model.keras").unlink()
    export_run(run, tmp / "export", formats="savedmodel,tflite", name="tiny")
    hf = _hf_dir(tmp, verdict_file)
    do_import(hf, tmp / "bpe_run")
    roots = {"data": data, "run": run, "ckpt_run": ckpt_run, "export": tmp / "export", "hf": hf,
             "bpe_run": tmp / "bpe_run"}
    b = Built(roots=roots, config=config, baseline={("train", "data"): summary["weights_sha256"],
                                                    ("export", "run"): exported_source(roots["export"])})
    for consumer, root in (("generate", "run"), ("generate", "bpe_run"), ("generate", "ckpt_run"),
                           ("serve", "export"), ("tflite", "export"), ("import", "hf")):
        out = CONSUMERS[consumer](b, roots[root], tmp / f"clean-{consumer}-{root}")
        assert out.rc == 0, f"{consumer} on the undamaged {root}: {out.message or out.raw}"
        b.baseline[(consumer, root)] = out.output
    return b


#: consumer name -> fn(built, damaged root copy, a fresh scratch dir) -> Outcome
CONSUMERS: dict[str, Callable[[Built, Path, Path], Outcome]] = {
    "train": lambda b, root, scratch: train_on(root, b.config, scratch / "run"),
    "resume": lambda b, root, scratch: resume(root),
    "generate": lambda b, root, scratch: generate(root),
    "export": lambda b, root, scratch: export(root, scratch / "export"),
    "serve": lambda b, root, scratch: serve_loader(root),
    "tflite": lambda b, root, scratch: tflite_generate(root),
    "import": lambda b, root, scratch: import_gpt2(root, scratch / "run"),
}


# -- the table ------------------------------------------------------------------------------------------------

SM = "savedmodel/tiny/1"
CKPT = "checkpoints/step-000004"
#: (file type, artifact, path inside it, consumers)
TABLE: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("TFRecord train shard", "data", "train-00000-of-00001.tfrecord", ("train",)),
    ("TFRecord val shard", "data", "val-00000-of-00001.tfrecord", ("train",)),
    ("data manifest.json", "data", "manifest.json", ("train",)),
    ("data tokenizer.json (char)", "data", "tokenizer/tokenizer.json", ("train",)),
    ("checkpoint model.weights.h5", "ckpt_run", f"{CKPT}/model.weights.h5", ("resume", "generate")),
    ("checkpoint train_state.npz", "ckpt_run", f"{CKPT}/train_state.npz", ("resume", "generate")),
    ("checkpoint state.json", "ckpt_run", f"{CKPT}/state.json", ("resume", "generate")),
    ("checkpoints/latest.json", "ckpt_run", "checkpoints/latest.json", ("resume", "generate")),
    ("run model.keras", "run", "model.keras", ("generate", "export")),
    ("run config.yaml", "run", "config.yaml", ("generate", "export")),
    ("run tokenizer.json (char)", "run", "tokenizer/tokenizer.json", ("generate",)),
    ("run tokenizer.json (BPE)", "bpe_run", "tokenizer/tokenizer.json", ("generate",)),
    ("run encoder.json (BPE)", "bpe_run", "tokenizer/encoder.json", ("generate",)),
    ("run vocab.bpe (BPE)", "bpe_run", "tokenizer/vocab.bpe", ("generate",)),
    ("SavedModel saved_model.pb", "export", f"{SM}/saved_model.pb", ("serve",)),
    ("SavedModel variables.data", "export", f"{SM}/variables/variables.data-00000-of-00001", ("serve",)),
    ("SavedModel variables.index", "export", f"{SM}/variables/variables.index", ("serve",)),
    ("export.json", "export", "export.json", ("serve", "tflite")),
    ("model.tflite", "export", "tflite/model.tflite", ("tflite",)),
    ("export tokenizer.json (char)", "export", "tokenizer/tokenizer.json", ("tflite",)),
    ("imported model.safetensors", "hf", "model.safetensors", ("import",)),
    ("imported vocab.json", "hf", "vocab.json", ("import",)),
    ("imported merges.txt", "hf", "merges.txt", ("import",)),
]

#: (file type, corruption, consumer) -> why it is harmless. "unread:" reasons are checked: the output must
#: equal the undamaged file's. "undetectable:" reasons say why no check can exist, and what does exist.
_NPZ_UNREAD = ("unread: generate loads only model.weights.h5 (its sha256 checked against state.json); "
               "train_state.npz is optimizer and RNG state, which --resume checks and refuses by name")
HARMLESS: dict[tuple[str, str, str], str] = {
    **dict.fromkeys((("checkpoint train_state.npz", c, "generate") for c in CORRUPTIONS), _NPZ_UNREAD),
    **dict.fromkeys((("imported model.safetensors", c, "import") for c in ("flip", "bit")), (
        "undetectable: a Hugging Face safetensors file carries no checksum and the flipped bytes are tensor "
        "data (the header, dtypes, shapes and offsets are checked); the run's source.json records the sha256 "
        "that was read, to compare with the publisher's (the Hub's LFS sha256)")),
}


#: What each consumer's output is, when it proves an accepted change harmless by equalling the undamaged file's.
PROOF = {"train": "the trained weights (sha256)", "generate": "the text generated", "export": "the model and "
         "tokenizer exported", "serve": "the completion served", "tflite": "the text generated",
         "import": "the imported weights and token ids"}


def harmless_reason(key: tuple[str, str, str], rel: str) -> str | None:
    """Why an accepted corruption is harmless: :data:`HARMLESS`'s entry, or, for one bit flipped in a JSON/YAML
    file that still parses, the one field it changed, which the consumer does not read (checked: the output
    equals the undamaged file's, bit for bit)."""
    label, corruption, consumer = key
    if key in HARMLESS:
        return HARMLESS[key]
    if corruption == "bit" and rel.endswith((".json", ".yaml")) and consumer in PROOF:
        return (f"unread: the flipped bit leaves valid {rel.rsplit('.', 1)[1].upper()} and changes one field "
                f"({{field}}), which {consumer} does not read; checked: {PROOF[consumer]} unchanged")
    return None


def changed_field(before: bytes, after: bytes) -> str:
    """Where two JSON/YAML texts differ, as a dotted path ("?" if either does not parse)."""
    try:
        a, b = (yaml.safe_load(t.decode("utf-8")) for t in (before, after))  # YAML reads JSON too
    except (UnicodeDecodeError, yaml.YAMLError):
        return "?"
    if a == b:  # e.g. a float's 17th digit: another text of the same number
        return "none: the text still parses to the same values"
    return _first_difference(a, b) or "?"


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            gone, new = (",".join(sorted(map(str, x))) for x in (a.keys() - b.keys(), b.keys() - a.keys()))
            return f"{where}{gone} renamed {new}"
        k = next((k for k in a if a[k] != b[k]), None)
        return where.rstrip(".") if k is None else _first_difference(a[k], b[k], f"{where}{k}.")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        i = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)
        return where.rstrip(".") if i is None else _first_difference(a[i], b[i], f"{where}[{i}].")
    return where.rstrip(".")


def verdict(out: Outcome, rel: str, key: tuple[str, str, str], baseline: Any, field: str) -> tuple[str, str]:
    """("detected" | "harmless" | "missed", why) for one consumer's outcome on the damaged file ``rel``."""
    name = Path(rel).name
    if out.raw:
        return "missed", f"traceback: {out.raw}"
    if out.rc != 0:
        named = name in out.message and "\n" not in out.message.strip()
        return ("detected", out.message) if named else ("missed", f"message does not name {name}: {out.message}")
    reason = harmless_reason(key, rel)
    if reason is None:
        same = "output unchanged" if out.output == baseline else "output CHANGED"
        return "missed", f"accepted ({same}), and not listed as harmless"
    if reason.startswith("unread:") and out.output != baseline:
        return "missed", f"listed as unread but the output changed: {reason}"
    return "harmless", reason.format(field=field)


def run_trial(b: Built, row: tuple[str, str, str, tuple[str, ...]], corruption: str,
              scratch: Path) -> list[tuple[str, str, str]]:
    """Damage a copy of the row's file once per consumer, run the consumer; its (consumer, verdict, why)s."""
    label, artifact, rel, consumers = row
    results = []
    for consumer in consumers:
        work = scratch / consumer
        root = work / artifact
        shutil.copytree(b.roots[artifact], root)
        before = (root / rel).read_bytes()
        CORRUPTIONS[corruption](root / rel)
        field = changed_field(before, (root / rel).read_bytes()) if rel.endswith((".json", ".yaml")) else "?"
        out = CONSUMERS[consumer](b, root, work)
        baseline = b.baseline.get((consumer, artifact), b.baseline.get((consumer, "run")))
        results.append((consumer, *verdict(out, rel, (label, corruption, consumer), baseline, field)))
    return results


@pytest.mark.slow
def test_every_corruption_is_detected_or_harmless(built: Built, tmp_path: Path, figures) -> None:
    rows, missed, log = [], [], []
    for n, row in enumerate(TABLE):
        counts = {"tried": 0, "detected": 0, "missed": 0}
        harmless: dict[str, list[str]] = {}  # reason -> the "corruption→consumer" it covers
        for corruption in CORRUPTIONS:
            for consumer, what, why in run_trial(built, row, corruption, tmp_path / f"{n}-{corruption}"):
                counts["tried"] += 1
                log.append(f"{row[0]} / {corruption} / {consumer}: {what}: {why}")
                if what == "harmless":
                    harmless.setdefault(why, []).append(f"{corruption}→{consumer}")
                else:
                    counts[what] += 1
                if what == "missed":
                    missed.append(log[-1])
        why = "; ".join(f"{', '.join(cases)}: {reason}" for reason, cases in harmless.items()) or "-"
        rows.append([row[0], counts["tried"], counts["detected"], why, counts["missed"]])
    print("\n".join(log))
    tried = sum(r[1] for r in rows)
    figures("30-corruption", title="Corruptions detected, per file type",
            columns=["file", "tried", "detected", "harmless (why)", "missed"], rows=rows,
            test="tests/test_corruption.py::test_every_corruption_is_detected_or_harmless",
            note=f"{tried} damaged copies, each run through its real consumer (in-process CLI or loader); "
                 f"{sum(r[2] for r in rows)} detected with one line naming the file. Corruptions: "
                 f"flip: 3 bytes XOR 0xFF around the middle (offsets {FLIP_OFFSETS}); bit: the middle byte XOR 0x01 "
                 "(text stays text); half: truncated to half; empty: truncated to 0 bytes.")
    assert not missed, "\n".join(missed)


# -- as a user runs it: a real subprocess prints one line and no traceback ---------------------------------------


def _tfgpt(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "tfgpt", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def _one_error_line(proc: subprocess.CompletedProcess, command: str, name: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"tfgpt {command}: error:")]
    assert len(errors) == 1 and name in errors[0], proc.stderr[-2000:]


@pytest.mark.slow
def test_cli_subprocess_resume_on_a_flipped_checkpoint_says_one_line(built: Built, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(built.roots["run"], run)
    flip(run / CKPT / "model.weights.h5")
    proc = _tfgpt("train", "--run-dir", str(run), "--resume", "--quiet", "--set", "train.max_steps=6")
    _one_error_line(proc, "train", "model.weights.h5")


@pytest.mark.slow
def test_cli_subprocess_serve_on_flipped_variables_says_one_line(built: Built, tmp_path: Path) -> None:
    export_dir = tmp_path / "export"
    shutil.copytree(built.roots["export"], export_dir)
    flip(export_dir / SM / "variables" / "variables.data-00000-of-00001")
    proc = _tfgpt("serve", "--export", str(export_dir), "--port", "0")
    _one_error_line(proc, "serve", "variables.data-00000-of-00001")
