"""Every docstring example in the package runs, as keras-hub's docstring test does.

Each tfgpt module's ``>>>`` examples run with doctest, in the module's own namespace plus
``keras``, ``np``, ``tf`` and ``tfgpt``. An example that needs files a user would have made
(a run dir, an export) says so with ``# doctest: +SKIP``; the rest must print what they show.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil

import pytest

import tfgpt

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(tfgpt.__path__, prefix="tfgpt.") if info.name != "tfgpt.__main__"
)


def _examples(module_name: str) -> list[doctest.DocTest]:
    """The doctests of objects defined in the module (DocTestFinder skips imported ones)."""
    module = importlib.import_module(module_name)
    return [t for t in doctest.DocTestFinder(exclude_empty=True).find(module) if t.examples]


def test_every_module_is_collected() -> None:
    # The walk must reach the sub-packages, or the examples below would pass by never running.
    for name in ("tfgpt.model.attention", "tfgpt.train.fit", "tfgpt.tokenizers.bpe", "tfgpt.export.savedmodel"):
        assert name in MODULES


@pytest.mark.parametrize("module_name", ["tfgpt", *MODULES])
def test_docstring_examples_run(module_name: str, tmp_path: os.PathLike, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _examples(module_name):
        test.globs = {**test.globs, "keras": keras, "np": np, "tf": tf, "tfgpt": tfgpt}
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{module_name}: {result.failed} of {result.attempted} docstring examples failed"
