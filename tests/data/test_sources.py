"""Reading inputs: files, directories, globs, jsonl, .gz/.xz, tars of .xz tars, bad bytes."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest

from tfgpt.data.sources import _find_cut, expand_inputs, iter_pieces, source_infos
from tfgpt.errors import DataError


def _docs(files, **kw) -> list[str]:
    docs, cur = [], []
    for _, text, first, last in iter_pieces(files, **kw):
        if first:
            cur = []
        cur.append(text)
        if last:
            docs.append("".join(cur))
    return docs


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_expand_files_dirs_globs(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("a")
    (tmp_path / "d" / "sub" / "b.jsonl").write_text('{"text": "b"}\n')
    (tmp_path / "d" / "notes.csv").write_text("skip me")
    files = expand_inputs([str(tmp_path / "d"), str(tmp_path / "d" / "*.txt")])
    assert [f.name for f in files] == ["a.txt", "b.jsonl"]
    with pytest.raises(DataError, match="input not found"):
        expand_inputs([str(tmp_path / "missing.txt")])
    with pytest.raises(DataError, match="matches no files"):
        expand_inputs([str(tmp_path / "*.nothing")])
    with pytest.raises(DataError, match="no input"):
        expand_inputs([])


def test_jsonl_gz_xz_and_field(tmp_path: Path) -> None:
    lines = [json.dumps({"body": f"doc {i} ü"}) for i in range(5)]
    data = ("\n".join(lines) + "\n").encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "b.jsonl.xz").write_bytes(lzma.compress(data))
    files = expand_inputs([str(tmp_path)])
    infos = source_infos(files)
    docs = _docs(files, infos=infos, text_field="body")
    assert docs == [f"doc {i} ü" for i in range(5)] * 2
    assert [i.documents for i in infos] == [5, 5]
    assert all(len(i.sha256) == 64 for i in infos)
    with pytest.raises(DataError, match=r"a\.jsonl\.gz:1: no 'text' field"):
        _docs(files)


def test_bad_jsonl_names_line(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(DataError, match=r"x\.jsonl:2: not valid JSON \(Expecting property name .* column 2\)"):
        _docs([tmp_path / "x.jsonl"])


def test_openwebtext_layout_tar_of_xz_tars(tmp_path: Path) -> None:
    """OpenWebText: a .tar whose members are .xz-compressed tars of .txt documents."""
    inner1 = lzma.compress(_tar_bytes({"0001.txt": b"first doc", "0002.txt": b"second doc"}))
    inner2 = lzma.compress(_tar_bytes({"0003.txt": b"third doc"}))
    outer = _tar_bytes({"openwebtext/urlsf_subset00-1_data.xz": inner1,
                        "openwebtext/urlsf_subset00-2_data.xz": inner2})
    (tmp_path / "openwebtext.tar").write_bytes(outer)
    (tmp_path / "owt.tar.xz").write_bytes(lzma.compress(outer))
    for name in ("openwebtext.tar", "owt.tar.xz"):
        infos = source_infos([tmp_path / name])
        assert _docs([tmp_path / name], infos=infos) == ["first doc", "second doc", "third doc"]
        assert infos[0].documents == 3
    # a plain .xz text file (not a tar) is one document
    (tmp_path / "plain.xz").write_bytes(lzma.compress(b"just text"))
    assert _docs([tmp_path / "plain.xz"]) == ["just text"]


def test_invalid_utf8_replaced_and_counted_bom_kept_out(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"\xef\xbb\xbfok \xff\xfe end")
    infos = source_infos([tmp_path / "bad.txt"])
    assert _docs([tmp_path / "bad.txt"], infos=infos) == ["ok \ufffd\ufffd end"]
    assert infos[0].invalid_utf8_bytes == 2


def test_corrupt_compressed_file_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "x.txt.gz").write_bytes(gzip.compress(b"hello world" * 100)[:30])
    with pytest.raises(DataError, match=r"x\.txt\.gz"):
        _docs([tmp_path / "x.txt.gz"])


def test_long_document_pieces_rejoin_and_tokenize_identically(shakespeare_file: Path, gpt2_dir: str) -> None:
    from tfgpt.tokenizers import BPETokenizer

    src = shakespeare_file  # 64 KiB in pieces of about 2,500 characters
    pieces = [t for _, t, _, _ in iter_pieces([src], segment_chars=2_500)]
    assert len(pieces) > 20
    whole = src.read_text()
    assert "".join(pieces) == whole
    tok = BPETokenizer.gpt2(gpt2_dir)
    ids = [i for p in pieces for i in tok.encode_ordinary(p)]
    assert ids == tok.encode_ordinary(whole)


def test_find_cut_prefers_newline_between_words() -> None:
    text = "word " * 30 + "end\nNext line here and more"
    cut = _find_cut(text, len(text) - 5)
    assert text[:cut].endswith("end\n")


def test_jsonl_bom_skipped_and_lone_surrogates_named(tmp_path: Path) -> None:
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "first"}\r\n{"text": "second \\ud83d\\ude00"}\r\n')
    assert _docs([tmp_path / "bom.jsonl"]) == ["first", "second \U0001f600"]
    long = "word " * 40
    for i, doc in enumerate((long, "short")):  # the long one is read in pieces (segment_chars=50)
        path = tmp_path / f"bad{i}.jsonl"
        path.write_text('{"text": "fine"}\n' + json.dumps({"text": doc + "\ud83d" + doc}) + "\n")
        with pytest.raises(DataError, match=rf"bad{i}\.jsonl:2: field 'text' holds a lone surrogate '\\ud83d'"):
            _docs([path], segment_chars=50)


def test_utf8_decoder_matches_replace_and_counts_bytes() -> None:
    """Same text as errors="replace" whatever the chunking; the count is the bytes replaced."""
    import codecs
    import random

    from tfgpt.data.sources import Utf8Decoder

    data = b"ok \xe2\x82\xac \xe2\x82 x \xf0\x9f\x98 y \xed\xa0\x80 z \xef\xbf\xbd \xff\xfe \xc0\xaf end\xe2\x82"
    want = data.decode("utf-8", errors="replace")
    assert want.count("\ufffd") - 1 == 10  # one genuine U+FFFD in the input, 10 invalid sequences
    rng = random.Random(0)
    for _ in range(200):
        cuts = sorted(rng.sample(range(len(data) + 1), 4))
        d = Utf8Decoder()
        got = "".join(d.decode(data[a:b]) for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True))
        assert got + d.decode(b"", final=True) == want
        assert d.invalid_bytes == 2 + 3 + 3 + 2 + 2 + 2  # the bytes of the six bad runs, in order
    assert codecs.decode(b"\xed\xa0\x80", "utf-8", "replace") == "\ufffd" * 3  # encoded surrogates: 3 sequences


def test_invalid_bytes_counted_per_source(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"a\xffb")
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "\xe2\x82"}\n{"text": "ok"}\n')
    (tmp_path / "c.txt").write_bytes(b"clean")
    files = sorted(tmp_path.iterdir())
    infos = source_infos(files)
    assert _docs(files, infos=infos) == ["a\ufffdb", "\ufffd", "ok", "clean"]
    assert [i.invalid_utf8_bytes for i in infos] == [1, 2, 0]
    _docs(files, infos=infos)  # a second pass counts afresh
    assert [i.invalid_utf8_bytes for i in infos] == [1, 2, 0]
