"""Safe by default: no unsafe loader anywhere in the package, and crafted files are refused unopened.

Not a module's mirror: these tests scan the whole package (``tfgpt/``) and load crafted run dirs
through :func:`tfgpt.runs.load`, the path every command takes.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import keras
import pytest

import tfgpt
from tfgpt.config import GPTConfig
from tfgpt.errors import RunDirError
from tfgpt.model import GPT
from tfgpt.runs import load, save_run
from tfgpt.tokenizers import CharTokenizer

PACKAGE = Path(tfgpt.__file__).resolve().parent

#: What may never appear in the package's code (comments and docstrings that name them are allowed).
UNSAFE = {
    "a pickle import": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b"),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "yaml.load without a safe loader": re.compile(r"yaml\.(load|load_all)\((?![^)]*SafeLoader)|yaml\.unsafe_load"),
    "yaml.full_load": re.compile(r"yaml\.full_load"),
    "safe_mode=False": re.compile(r"safe_mode\s*=\s*False"),
    "eval( or exec(": re.compile(r"(?<![\w.])(eval|exec)\("),
    "torch.load": re.compile(r"torch\.load\("),
}


def _code_lines(path: Path):
    """(number, line) of ``path``'s lines that are code: comments stripped, docstring lines skipped."""
    in_doc = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        quotes = line.count('"""') + line.count("'''")
        if in_doc or quotes:
            in_doc = in_doc != (quotes % 2 == 1)
            continue
        yield n, line.split("#", 1)[0]


def test_the_package_has_no_unsafe_loader():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the scan sees the whole package
    found = [f"{p.relative_to(PACKAGE)}:{n}: {what}" for p in files for n, line in _code_lines(p)
             for what, pattern in UNSAFE.items() if pattern.search(line)]
    assert found == []


def test_the_scan_would_see_each_pattern(tmp_path):
    """Each pattern matches the code it is meant to catch (so an empty scan means something)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nnp.load(f, allow_pickle=True)\nyaml.load(s)\nyaml.full_load(s)\n"
                   "keras.saving.load_model(p, safe_mode=False)\neval(s)\nexec(s)\ntorch.load(p)\n"
                   "yaml.load(s, Loader=yaml.SafeLoader)  # fine\nmodel.evaluate(x)\n")
    hits = [what for _, line in _code_lines(bad) for what, pattern in UNSAFE.items() if pattern.search(line)]
    assert sorted(hits) == sorted(["a pickle import", "allow_pickle=True", "yaml.load without a safe loader",
                                   "yaml.full_load", "safe_mode=False", "eval( or exec(", "eval( or exec(",
                                   "torch.load"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tok = CharTokenizer.train(["abcd"])
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    return save_run(tmp_path_factory.mktemp("safety") / "run", model, tok)


def _with_model_file(run: Path, tmp_path: Path, model: keras.Model) -> Path:
    crafted = tmp_path / "run"
    shutil.copytree(run, crafted)
    model.save(crafted / "model.keras")
    return crafted


def test_a_keras_file_with_a_lambda_is_refused_and_its_code_never_runs(run, tmp_path):
    marker = tmp_path / "ran"
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda x, p=str(marker): (open(p, "w").close(), x)[1])(inp)
    crafted = _with_model_file(run, tmp_path, keras.Model(inp, out))
    marker.unlink()  # building the model ran the lambda once; loading must not
    with pytest.raises(RunDirError) as e:
        load(crafted)
    assert str(e.value).startswith(f"{crafted / 'model.keras'} was refused: it holds Python code")
    assert "\n" not in str(e.value) and not marker.exists()


def test_a_keras_file_holding_another_model_is_refused(run, tmp_path):
    inp = keras.Input((4,))
    crafted = _with_model_file(run, tmp_path, keras.Model(inp, keras.layers.Dense(2)(inp)))
    with pytest.raises(RunDirError, match="holds a Functional, not a tfgpt GPT model"):
        load(crafted)
