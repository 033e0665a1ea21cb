"""Reading corpora: expand input paths and stream documents out of them.

Supported inputs (files, directories searched recursively, and glob patterns):

* ``.txt`` (and ``.text``, or any explicitly named file of unknown type): one document per file;
* ``.jsonl``: one document per line, taken from a string field (``text`` by default; a leading
  UTF-8 BOM is skipped, a lone surrogate escape is a :class:`DataError` naming the line);
* ``.gz`` / ``.xz`` / ``.bz2`` compressed versions of the above;
* ``.tar`` archives (``.tar.gz``/``.tgz``/``.tar.xz``/``.txz``/``.tar.bz2``) whose members are any of
  the above, nested: OpenWebText's ``.tar`` of ``.xz``-compressed tars of ``.txt`` documents works.
  A compressed member of unknown inner type is sniffed for a tar header.

Everything streams: files are read in 1 MiB chunks, and a document longer than
``segment_chars`` characters is yielded as several *pieces* cut at ``"x\\nY"`` points (a newline
between two non-space characters), where cleaning and GPT-2-style pre-tokenisation give the same
result as on the whole text. Invalid UTF-8 is replaced with U+FFFD and counted per source.

Example:
    >>> files = expand_inputs(["corpus/", "extra/*.jsonl.gz"])  # doctest: +SKIP
    >>> for source, text, first, last in iter_pieces(files):  # doctest: +SKIP
    ...     ...
"""

from __future__ import annotations

import bz2
import codecs
import dataclasses
import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, NamedTuple

from tfgpt.errors import DataError

READ_CHUNK = 1 << 20
SEGMENT_CHARS = 1 << 20
_COMPRESSED = {".gz": gzip.GzipFile, ".xz": lzma.LZMAFile, ".bz2": bz2.BZ2File}
_TAR_SUFFIXES = {".tgz": ".gz", ".txz": ".xz", ".tbz2": ".bz2"}
_TEXT_SUFFIXES = {".txt", ".text"}
_KNOWN = _TEXT_SUFFIXES | {".jsonl", ".tar"} | set(_COMPRESSED) | set(_TAR_SUFFIXES)
# A safe place to cut a long document: after a newline preceded by a non-space character and
# followed by a printable ASCII character (pre-tokenisation and cleaning are local there).
_CUT_RE = re.compile(r"\S\r?\n(?=[!-~])")

# UTF-16 surrogates: a JSON string can hold one alone ("\ud83d" unpaired), which UTF-8 text cannot.
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")



class Piece(NamedTuple):
    """One piece of a document as read: ``first``..``last`` pieces make a document (raw, not cleaned)."""

    source: int  #: index of the input file
    text: str
    first: bool
    last: bool


class Utf8Decoder:
    r"""Incremental UTF-8 decoding that replaces invalid bytes with U+FFFD and counts them.

    The text is what ``errors="replace"`` gives (one U+FFFD per invalid sequence); the count lives on
    the decoder, so each source keeps its own (no process-wide error handler or counter).

    Example:
        >>> d = Utf8Decoder()
        >>> d.decode(b"caf\xc3"), d.decode(b"\xa9 \xff\xfe!", final=True), d.invalid_bytes
        ('caf', '\xe9 \ufffd\ufffd!', 2)
    """

    def __init__(self) -> None:
        self.invalid_bytes = 0
        self._pending = b""

    def decode(self, data: bytes, final: bool = False) -> str:
        buf = memoryview(self._pending + data)
        out = []
        while True:
            try:
                text, used = codecs.utf_8_decode(buf, "strict", final)
            except UnicodeDecodeError as e:
                out.append(str(buf[: e.start], "utf-8"))
                out.append("\ufffd")
                self.invalid_bytes += e.end - e.start
                buf = buf[e.end :]
                continue
            out.append(text)
            self._pending = bytes(buf[used:])
            return "".join(out)


@dataclasses.dataclass
class SourceInfo:
    """One input file as recorded in the manifest."""

    path: str
    bytes: int
    mtime_ns: int
    sha256: str = ""
    documents: int = 0
    invalid_utf8_bytes: int = 0
    skipped_members: int = 0

    def identity(self) -> list:
        """What decides whether a finished data dir is still up to date."""
        return [self.path, self.bytes, self.mtime_ns]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _kind(name: str) -> tuple[str | None, str]:
    """(compression suffix or None, inner kind: 'text' | 'jsonl' | 'tar' | 'sniff' | 'unknown')."""
    lower = name.lower()
    suffix = Path(lower).suffix
    if suffix in _TAR_SUFFIXES:
        return _TAR_SUFFIXES[suffix], "tar"
    comp = None
    if suffix in _COMPRESSED:
        comp = suffix
        lower = lower[: -len(suffix)]
        suffix = Path(lower).suffix
    if suffix in _TEXT_SUFFIXES:
        return comp, "text"
    if suffix == ".jsonl":
        return comp, "jsonl"
    if suffix == ".tar":
        return comp, "tar"
    return comp, "sniff" if comp else "unknown"


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Resolve files, directories (recursive; known extensions only) and globs to a sorted,
    de-duplicated list of files. Raises :class:`DataError` for a path that matches nothing.

    Example:
        >>> from tfgpt.assets_path import asset_path
        >>> [p.name for p in expand_inputs([str(asset_path("corpus") / "*.txt")])]  # the bundled demo corpus
        ['tinyshakespeare.txt']
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [str(inputs)]
    if not inputs:
        raise DataError("no input given: pass at least one file, directory or glob")
    files: list[Path] = []
    for spec in inputs:
        spec = str(spec)
        p = Path(spec)
        if p.is_file():
            files.append(p.resolve())
        elif p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and _known(f.name) and not f.name.startswith(".")
            )
            if not found:
                raise DataError(f"input directory {spec} holds no .txt, .jsonl, .gz, .xz or .tar files")
            files.extend(f.resolve() for f in found)
        elif glob.has_magic(spec):
            found = sorted(Path(f) for f in glob.glob(spec, recursive=True) if Path(f).is_file())
            if not found:
                raise DataError(f"input pattern {spec} matches no files")
            files.extend(f.resolve() for f in found)
        else:
            raise DataError(f"input not found: {spec}")
    seen: set[Path] = set()
    unique = []
    for f in files:
        if f not in seen:
            seen.add(f)
            unique.append(f)
    return unique


def _known(name: str) -> bool:
    lower = name.lower()
    return any(lower.endswith(s) for s in _KNOWN)


class _CountingReader(io.RawIOBase):
    """Wraps a binary file: hashes and counts the bytes read, reports progress."""

    def __init__(self, f: IO[bytes], on_bytes: Callable[[int], None] | None) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.count = 0
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        n = self._f.readinto(b)
        if n:
            view = memoryview(b)[:n]
            self.sha256.update(view)
            self.count += n
            if self._on_bytes:
                self._on_bytes(n)
        return n or 0


class _Prefixed(io.RawIOBase):
    """``head`` bytes followed by the rest of ``f`` (used after sniffing a tar header)."""

    def __init__(self, head: bytes, f: IO[bytes]) -> None:
        self._head = head
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._f.read(len(b))
        n = len(data)
        b[:n] = data
        return n


def _read_exact(f: IO[bytes], n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = f.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _text_pieces(f: IO[bytes], segment_chars: int, info: SourceInfo) -> Iterator[tuple[str, bool, bool]]:
    """One document from a binary stream, as (text, first, last) pieces."""
    decoder = Utf8Decoder()
    buf = ""
    first = True
    while True:
        chunk = f.read(READ_CHUNK)
        final = not chunk
        buf += decoder.decode(chunk, final=final)
        if first and buf.startswith("\ufeff"):
            buf = buf[1:]
        while len(buf) > segment_chars:
            cut = _find_cut(buf, segment_chars)
            yield buf[:cut], first, False
            first = False
            buf = buf[cut:]
        if final:
            info.invalid_utf8_bytes += decoder.invalid_bytes
            yield buf, first, True
            return


def _find_cut(buf: str, limit: int) -> int:
    lo = limit * 3 // 4
    best = -1
    for m in _CUT_RE.finditer(buf, lo, limit + 1):
        best = m.end()
    if best > 0:
        return best
    cut = limit
    if buf[cut - 1] == "\r":  # never separate \r from \n
        cut -= 1
    return cut


def _jsonl_docs(f: IO[bytes], where: str, text_field: str, info: SourceInfo) -> Iterator[str]:
    for lineno, line in enumerate(f, 1):
        if lineno == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8):]
        if not line.strip():
            continue
        decoder = Utf8Decoder()
        text = decoder.decode(line, final=True)
        info.invalid_utf8_bytes += decoder.invalid_bytes
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}:{lineno}: not valid JSON ({e.msg} column {e.colno})") from None
        if not isinstance(obj, dict) or text_field not in obj:
            raise DataError(f"{where}:{lineno}: no {text_field!r} field (set the text field name)")
        value = obj[text_field]
        if not isinstance(value, str):
            raise DataError(f"{where}:{lineno}: field {text_field!r} is {type(value).__name__}, not a string")
        if "\\u" in text and (bad := _SURROGATE_RE.search(value)):
            raise DataError(f"{where}:{lineno}: field {text_field!r} holds a lone surrogate {bad.group()!r} "
                            "(an unpaired \\uXXXX escape, not text); fix or drop the line")
        yield value


def _stream_pieces(
    f: IO[bytes],
    name: str,
    where: str,
    info: SourceInfo,
    idx: int,
    text_field: str,
    segment_chars: int,
    explicit: bool = False,
) -> Iterator[Piece]:
    f, kind = _open_kind(f, name, explicit)
    try:
        if kind == "text":
            info.documents += 1
            for text, first, last in _text_pieces(f, segment_chars, info):
                yield Piece(idx, text, first, last)
        elif kind == "jsonl":
            for text in _jsonl_docs(f, where, text_field, info):
                info.documents += 1
                if len(text) > segment_chars:
                    whole = io.BytesIO(text.encode())
                    yield from (Piece(idx, t, a, b) for t, a, b in _text_pieces(whole, segment_chars, info))
                else:
                    yield Piece(idx, text, True, True)
        else:
            yield from _tar_pieces(f, where, info, idx, text_field, segment_chars)
    except (EOFError, lzma.LZMAError, zlib.error, OSError) as e:
        raise DataError(f"{where}: cannot decompress or read ({type(e).__name__}: {e})") from None


def _open_kind(f: IO[bytes], name: str, explicit: bool) -> tuple[IO[bytes], str]:
    """``f`` decompressed as its name says, and its kind: 'text', 'jsonl' or 'tar' (sniffed when unknown)."""
    comp, kind = _kind(name)
    if comp:
        f = _COMPRESSED[comp](fileobj=f, mode="rb") if comp == ".gz" else _COMPRESSED[comp](f, mode="rb")
    if kind in ("sniff", "unknown") and (comp or not explicit):
        head = _read_exact(f, 512)
        is_tar = len(head) >= 262 and head[257:262] == b"ustar"
        f = io.BufferedReader(_Prefixed(head, f), READ_CHUNK)
        kind = "tar" if is_tar else "text"
    elif kind == "unknown":
        kind = "text"
    return f, kind


def _tar_pieces(f: IO[bytes], where: str, info: SourceInfo, idx: int, text_field: str, segment_chars: int
                ) -> Iterator[Piece]:
    """The pieces of every member of a (streamed) tar archive; hidden and unknown-type members skipped."""
    try:
        tar = tarfile.open(fileobj=f, mode="r|")
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            _, mkind = _kind(base)
            if base.startswith(".") or (mkind == "unknown" and "." in base):
                info.skipped_members += 1
                continue
            mf = tar.extractfile(member)
            if mf is None:
                continue
            yield from _stream_pieces(mf, base, f"{where}:{member.name}", info, idx, text_field, segment_chars)
    except tarfile.TarError as e:
        raise DataError(f"{where}: not a readable tar archive ({e})") from None


def iter_pieces(
    files: list[Path],
    infos: list[SourceInfo] | None = None,
    text_field: str = "text",
    segment_chars: int = SEGMENT_CHARS,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[Piece]:
    """Stream ``(source_index, text, first, last)`` pieces of every document in ``files``.

    ``infos`` (from :func:`source_infos`) get their sha256, document and invalid-UTF-8 counts filled
    in as the files are read. Pieces are raw (not cleaned); a document is ``first``..``last``.

    Example:
        >>> docs = ["".join(t for _, t, _, _ in ...)]  # doctest: +SKIP
    """
    if infos is None:
        infos = source_infos(files)
    for idx, path in enumerate(files):
        info = infos[idx]
        info.documents = info.skipped_members = info.invalid_utf8_bytes = 0
        try:
            raw = open(path, "rb")  # noqa: SIM115
        except OSError as e:
            raise DataError(f"cannot open input {path}: {e.strerror}") from None
        with raw:
            counting = _CountingReader(raw, on_bytes)
            reader = io.BufferedReader(counting, READ_CHUNK)
            yield from _stream_pieces(reader, path.name, str(path), info, idx, text_field, segment_chars,
                                      explicit=True)
            while reader.read(READ_CHUNK):
                pass
        info.sha256 = counting.sha256.hexdigest()


def source_infos(files: list[Path]) -> list[SourceInfo]:
    """Size and mtime of each input (hashes are filled in while reading)."""
    out = []
    for f in files:
        st = f.stat()
        out.append(SourceInfo(path=str(f), bytes=st.st_size, mtime_ns=st.st_mtime_ns))
    return out
