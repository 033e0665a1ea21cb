"""prepare(): round trips, manifest, determinism, workers, cleaning stats, bad inputs, kill safety."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from tfgpt.data.manifest import load_manifest
from tfgpt.data.pipeline import load_data_tokenizer, read_split_tokens
from tfgpt.data.prepare import prepare
from tfgpt.data.shards import ShardWriter, read_shard_tokens, token_dtype
from tfgpt.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def _shard_hashes(d: Path) -> list[tuple[str, str]]:
    m = load_manifest(d)
    return [(s["file"], s["sha256"]) for sp in ("train", "val") for s in m["splits"][sp]["shards"]]


def test_char_tinyshakespeare_round_trip(char_dir: Path, shakespeare_file: Path) -> None:
    m = load_manifest(char_dir)
    assert m["tokenizer"]["vocab_size"] == 59 and m["tokenizer"]["eot_id"] is None  # the 64 KiB slice
    assert m["dtype"] == "uint16" and m["split"]["method"] == "tail"
    text = shakespeare_file.read_text()
    tok = load_data_tokenizer(char_dir)
    train, val = read_split_tokens(char_dir, "train"), read_split_tokens(char_dir, "val")
    assert tok.decode(np.concatenate([train, val]).tolist()) == text
    assert val.size == round(0.1 * len(text))
    assert val.size == 6_554 and [s["tokens"] for s in m["splits"]["train"]["shards"]] == [16_000] * 3 + [10_982]
    assert m["splits"]["train"]["shards"][0]["file"] == "train-00000-of-00004.tfrecord"
    src = m["sources"][0]
    assert src["bytes"] == 65_536 and src["sha256"] == hashlib.sha256(shakespeare_file.read_bytes()).hexdigest()
    assert m["command"] == "test" and m["config"]["tokenizer"] == "char"


def test_gpt2_documents_split_and_eot(gpt2_dir_prepared: Path, gpt2_docs, gpt2_dir: str) -> None:
    _, texts = gpt2_docs
    m = load_manifest(gpt2_dir_prepared)
    assert m["split"]["method"] == "hash" and m["tokenizer"]["type"] == "gpt2"
    assert m["splits"]["train"]["documents"] + m["splits"]["val"]["documents"] == len(texts)
    assert 0 < m["splits"]["val"]["documents"] < 0.25 * len(texts)
    tok = load_data_tokenizer(gpt2_dir_prepared)
    docs = []
    for split in ("train", "val"):
        ids = read_split_tokens(gpt2_dir_prepared, split).tolist()
        assert ids[-1] == 50256
        docs += tok.decode(ids).split("<|endoftext|>")[:-1]
    assert sorted(docs) == sorted(texts)  # every document exactly once, in one split


def test_rerun_is_noop_and_changed_settings_refused(char_dir: Path, shakespeare_file: Path) -> None:
    before = (char_dir / "manifest.json").read_text()
    m = prepare([str(shakespeare_file)], str(char_dir), "char", val_fraction=0.1, workers=1,
                shard_tokens=16_000, record_tokens=4096, progress=False, command=["test"])
    assert (char_dir / "manifest.json").read_text() == before and m["splits"]
    with pytest.raises(DataError, match="different shard_tokens"):
        prepare([str(shakespeare_file)], str(char_dir), "char", val_fraction=0.1,
                workers=1, shard_tokens=8_000, record_tokens=4096, progress=False)


def test_workers_do_not_change_output(tmp_path: Path, gpt2_docs, gpt2_dir: str, gpt2_dir_prepared: Path) -> None:
    out = tmp_path / "w2"
    prepare([str(gpt2_docs[0])], str(out), "gpt2", gpt2_dir=gpt2_dir, val_fraction=0.1, workers=2,
            shard_tokens=20_000, record_tokens=4096, progress=False)
    assert _shard_hashes(out) == _shard_hashes(gpt2_dir_prepared)


def test_cleaning_dedupe_and_stats(tmp_path: Path) -> None:
    base = " ".join(f"word{i}" for i in range(200))
    docs = [base, base, base.replace("word100", "other"), "tiny", "", "caf\u0065\u0301 \x07bell\r\nline " * 5]
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    m = prepare([str(src)], str(tmp_path / "o"), "char", val_fraction=0.0, dedupe=True, near_dedupe=True,
                min_chars=10, workers=1, progress=False)
    c = m["cleaning"]
    assert c["documents_read"] == 6 and c["documents_kept"] == 2
    assert c["dropped"] == {"empty": 1, "too_short": 1, "exact_duplicate": 1, "near_duplicate": 1}
    assert c["control_chars_removed"] == 5
    tok = load_data_tokenizer(tmp_path / "o")
    text = tok.decode(read_split_tokens(tmp_path / "o", "train").tolist())
    assert "caf\u00e9 bell\nline" in text and "\r" not in text and "\x07" not in text
    assert text.count("<|endoftext|>") == 2  # char vocab gets end-of-text: more than one document


def test_bpe_trains_on_sample(tmp_path: Path, gpt2_docs) -> None:
    m = prepare([str(gpt2_docs[0])], str(tmp_path / "b"), "bpe", vocab_size=400, val_fraction=0.05,
                sample_chars=50_000, workers=1, progress=False)
    assert m["tokenizer"]["vocab_size"] == 400 and m["tokenizer"]["eot_id"] == 399
    tok = load_data_tokenizer(tmp_path / "b")
    text = tok.decode(read_split_tokens(tmp_path / "b", "train").tolist())
    assert text.count("<|endoftext|>") == m["splits"]["train"]["documents"]


def test_non_utf8_counted(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello \xff\xfe world, enough text here")
    m = prepare([str(tmp_path / "a.txt")], str(tmp_path / "o"), "char", val_fraction=0, workers=1, progress=False)
    assert m["counts"]["invalid_utf8_bytes_replaced"] == 2
    assert m["cleaning"]["files_with_invalid_utf8"] == [str((tmp_path / "a.txt").resolve())]


def test_empty_inputs(tmp_path: Path, gpt2_dir: str) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("  \n\n ")
    for kind in ("char", "gpt2", "bpe"):
        with pytest.raises(DataError, match=r"empty corpus.*2 read, 2 empty"):
            prepare([str(tmp_path / "*.txt")], str(tmp_path / f"o-{kind}"), kind, gpt2_dir=gpt2_dir,
                    workers=1, progress=False)
        assert not (tmp_path / f"o-{kind}").exists()  # a failed run leaves no half-made --out behind
    (tmp_path / "kept").mkdir()
    with pytest.raises(DataError, match="empty corpus"):
        prepare([str(tmp_path / "*.txt")], str(tmp_path / "kept"), "char", workers=1, progress=False)
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())  # the user's dir stays
    # an empty file beside real text is just counted
    (tmp_path / "real.txt").write_text("real text " * 20)
    m = prepare([str(tmp_path / "*.txt")], str(tmp_path / "o2"), "char", val_fraction=0, workers=1,
                progress=False)
    assert m["cleaning"]["dropped"]["empty"] == 2 and m["cleaning"]["documents_kept"] == 1


def test_bad_arguments_and_out_dirs(tmp_path: Path, verdict_file: Path) -> None:
    src = str(verdict_file)
    with pytest.raises(DataError, match="unknown tokenizer"):
        prepare([src], str(tmp_path / "o"), "word")
    with pytest.raises(DataError, match="vocab-size applies to the bpe"):
        prepare([src], str(tmp_path / "o"), "char", vocab_size=100)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    with pytest.raises(DataError, match="not empty and is not a tfgpt data directory"):
        prepare([src], str(tmp_path / "busy"), "char", progress=False)


def test_uint32_shards_round_trip(tmp_path: Path) -> None:
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32
    w = ShardWriter(tmp_path, "train", token_dtype(100_000), shard_tokens=1000, record_tokens=300)
    data = np.arange(2500, dtype=np.uint32) * 40
    w.write(data[:1234])
    w.write(data[1234:])
    shards = w.close()
    assert [s["tokens"] for s in shards] == [1000, 1000, 500] and [s["records"] for s in shards] == [4, 4, 2]
    back = np.concatenate([read_shard_tokens(tmp_path / s["file"], "uint32") for s in shards])
    assert np.array_equal(back, data)


KILL_SCRIPT = """
import sys
from tfgpt.data.prepare import prepare
prepare(sys.argv[1:-1], sys.argv[-1], "char", val_fraction=0.05, workers=1, shard_tokens=200_000,
        record_tokens=50_000, progress=False, command=["kill-test"])
"""


def test_sigkill_during_prepare_leaves_nothing_half_done(tmp_path: Path, shakespeare_file: Path) -> None:
    srcs = []
    text = shakespeare_file.read_text() * 17  # ~1.1 MB per part: prepare runs long enough to be killed
    for i in range(6):
        p = tmp_path / f"part{i}.txt"
        p.write_text(f"PART {i}\n" + text)
        srcs.append(str(p))
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, *srcs, str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    staged = out / ".prepare-tmp" / "train-00001"
    while not staged.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "prepare finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    assert not list(out.glob("*.tfrecord"))  # nothing that looks finished
    with pytest.raises(DataError, match="not a tfgpt data directory"):
        load_manifest(out)
    kw = dict(val_fraction=0.05, workers=1, shard_tokens=200_000, record_tokens=50_000, progress=False)
    prepare(srcs, str(out), "char", **kw)  # restarts cleanly
    prepare(srcs, str(tmp_path / "clean"), "char", **kw)
    assert _shard_hashes(out) == _shard_hashes(tmp_path / "clean")
    assert not (out / ".prepare-tmp").exists()


def test_gpt2_defaults_to_the_packaged_vocabulary(tmp_path: Path, verdict_file: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TFGPT_GPT2_BPE_DIR", raising=False)
    m = prepare([str(verdict_file)], str(tmp_path / "g"), "gpt2", val_fraction=0, workers=0, progress=False)
    assert (m["tokenizer"]["type"], m["tokenizer"]["vocab_size"], m["tokenizer"]["eot_id"]) == ("gpt2", 50257, 50256)
    ids = read_split_tokens(tmp_path / "g", "train").tolist()
    assert len(ids) == 5145 + 1 and ids[:4] == [40, 367, 2885, 1464] and ids[-1] == 50256  # "I", " H", "AD", " always"


def test_prepare_config_defaults_and_manifest_config(tmp_path: Path) -> None:
    from tfgpt.data.prepare import PrepareConfig

    bpe = PrepareConfig("bpe", gpt2_dir=str(tmp_path / "." / "g"), workers=3)
    assert bpe.vocab_size == 8192 and bpe.n_workers == 3 and PrepareConfig("char", workers=0).n_workers == 0
    assert bpe.to_json() == {
        "tokenizer": "bpe", "vocab_size": 8192, "val_fraction": 0.0005, "dedupe": False, "near_dedupe": False,
        "shard_tokens": 1 << 25, "record_tokens": 1 << 20, "text_field": "text", "min_chars": 1, "seed": 1337,
        "sample_chars": 50_000_000, "gpt2_dir": str(tmp_path / "g"),
    }
    char = PrepareConfig("char").to_json()
    assert char["vocab_size"] is None and char["sample_chars"] is None and "workers" not in char
    with pytest.raises(DataError, match="unknown tokenizer 'wordpiece'; choose one of char, bpe, gpt2"):
        PrepareConfig("wordpiece")
    with pytest.raises(DataError, match="min_chars must be in"):
        PrepareConfig("char", min_chars=-1)


def test_unk_token_maps_characters_the_corpus_lacks(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("hello world\n")
    out = tmp_path / "d"
    m = prepare([str(src)], str(out), "char", unk_token="<unk>", progress=False, workers=0)
    assert m["config"]["unk_token"] == "<unk>"
    tok = load_data_tokenizer(out)
    assert tok.vocab_size == 10 and tok.special_tokens == {"<unk>": 9}  # 9 characters + the unk id
    assert tok.encode("hello?") == tok.encode("hello") + [9]
    assert "unk_token" not in prepare([str(src)], str(tmp_path / "plain"), "char", progress=False)["config"]
    with pytest.raises(DataError, match="--unk-token applies to the char tokenizer only"):
        prepare([str(src)], str(tmp_path / "b"), "gpt2", unk_token="<unk>")
    with pytest.raises(DataError, match="--unk-token 'l' is a character of the corpus"):
        prepare([str(src)], str(tmp_path / "c"), "char", unk_token="l", progress=False, workers=0)
    with pytest.raises(DataError, match="different unk_token"):
        prepare([str(src)], str(out), "char", unk_token="?", progress=False)


def test_a_val_split_too_small_to_evaluate_warns(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("All work and no play makes Jack a dull boy.\n" * 300)  # 13,200 tokens
    with pytest.warns(UserWarning, match=r"the val split holds only 7 tokens \(--val-fraction 0.0005\)"):
        prepare([str(src)], str(tmp_path / "d"), "char", workers=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        prepare([str(src)], str(tmp_path / "e"), "char", val_fraction=0.5, workers=0, progress=False)
