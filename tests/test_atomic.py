"""Atomic writes: the rename replaces the target only on success, and files get the umask's mode."""

import os
import stat

import keras
import pytest

from tfgpt.atomic import make_temp_dir, replacing, write_bytes_atomic, write_text_atomic
from tfgpt.config import GPTConfig
from tfgpt.model import GPT
from tfgpt.runs import save_keras_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_umask_mode_not_owner_only(tmp_path, umask_022):
    write_text_atomic(tmp_path / "a" / "config.yaml", "x: 1\n")
    write_bytes_atomic(tmp_path / "model.tflite", b"\x00\x01")
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8))
    model.build((None, None))
    save_keras_atomic(model, tmp_path / "model.keras")
    for name in ("a/config.yaml", "model.tflite", "model.keras"):
        assert mode(tmp_path / name) == 0o644, name
    built = make_temp_dir(tmp_path, ".export.")
    assert built.is_dir() and built.name.startswith(".export.") and mode(built) == 0o755
    assert make_temp_dir(tmp_path, ".export.") != built
    assert (tmp_path / "a" / "config.yaml").read_text() == "x: 1\n"
    assert keras.saving.load_model(tmp_path / "model.keras", safe_mode=True).config == model.config


def test_a_failed_write_leaves_the_target_and_no_temp_file(tmp_path):
    target = tmp_path / "state.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_staged_dir_leaves_nothing_when_the_work_fails(tmp_path):
    from tfgpt.atomic import staged_dir

    (tmp_path / "out").mkdir()  # an empty --out is allowed and replaced
    with pytest.raises(RuntimeError, match="boom"), staged_dir(tmp_path / "out") as stage:
        (stage / "half.txt").write_text("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not any((tmp_path / "out").iterdir())
    with staged_dir(tmp_path / "out") as stage:
        (stage / "done.txt").write_text("done")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (tmp_path / "out/done.txt").read_text() == "done"


def test_swap_into_place_replaces_a_previous_export(tmp_path):
    from tfgpt.atomic import swap_into_place

    new = tmp_path / ".e.new"
    new.mkdir()
    (new / "export.json").write_text("new")
    swap_into_place(new, tmp_path / "e")
    assert (tmp_path / "e" / "export.json").read_text() == "new"
    again = tmp_path / ".e.again"
    again.mkdir()
    (again / "export.json").write_text("again")
    swap_into_place(again, tmp_path / "e")
    assert (tmp_path / "e" / "export.json").read_text() == "again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # the old export is gone, no temp dirs
