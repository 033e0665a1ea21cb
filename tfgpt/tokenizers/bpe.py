"""Byte-level BPE in GPT-2 format: the real GPT-2 vocabulary, or one trained on your corpus.

One class, :class:`BPETokenizer`, over the two GPT-2 files: ``encoder.json`` (token string in
GPT-2's byte-to-unicode alphabet → id) and ``vocab.bpe`` (``#version`` line, then one merge per
line, highest priority first).

* Encoding runs on ``tiktoken`` with an ``Encoding`` built from the local files (no download,
  no cache directory): ranks are derived from the merges the way OpenAI's ``data_gym`` loader
  does it and checked against ``encoder.json``; ids equal GPT-2's (tested against the Hugging
  Face ``tokenizers`` library loading the same files). Special tokens in the text (e.g.
  ``"<|endoftext|>"`` → 50256) always map to their ids; where one special token is a prefix of
  another, the longest match wins (as in the in-graph and char tokenizers).
* Training uses the Hugging Face ``tokenizers`` library (ByteLevel pre-tokenizer with the
  GPT-2 regex, all 256 bytes in the initial alphabet). The result is renumbered to GPT-2's
  layout — ids 0..255 the single bytes in data-gym order, then one id per merge in merge order,
  then the special tokens — so that the saved files load anywhere GPT-2 files load and
  tiktoken's rank == id.

``encode``/``encode_batch`` are fast enough to prepare corpora (tiktoken releases the GIL); the
in-graph tokenizer (:mod:`tfgpt.tokenizers.graph`) is far slower and meant for serving prompts.
Measured throughputs are in ``docs/design/tokenizers.md``.

``encode`` accepts ``str`` only; ``bytes`` raise :class:`~tfgpt.errors.TokenizerError` (decode
them first, e.g. ``data.decode("utf-8", errors="replace")``). ``decode`` replaces invalid UTF-8.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from tfgpt.assets_path import gpt2_vocab_dir
from tfgpt.atomic import write_text_atomic
from tfgpt.errors import TokenizerError
from tfgpt.tokenizers.base import (
    END_OF_TEXT,
    FINGERPRINT_KEY,
    TOKENIZER_JSON,
    Tokenizer,
    require_str,
    write_tokenizer_json,
)

ENCODER_JSON = "encoder.json"
VOCAB_BPE = "vocab.bpe"
#: GPT-2's pre-tokenization regex as tiktoken writes it (r50k_base), equivalent to OpenAI's
#: ``'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+``.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
#: Environment variable naming a directory with GPT-2's encoder.json and vocab.bpe.
GPT2_DIR_ENV = "TFGPT_GPT2_BPE_DIR"


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-character map (byte order = data-gym rank order)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_str_to_bytes(token: str) -> bytes:
    """Bytes of a GPT-2-alphabet token string (``"Ġthe"`` → ``b" the"``)."""
    u2b = unicode_to_bytes()
    return bytes(u2b[c] for c in token)


def token_bytes_to_str(data: bytes) -> str:
    b2u = bytes_to_unicode()
    return "".join(b2u[b] for b in data)


def _merge_ranks(merges: Sequence[tuple[str, str]]) -> dict[bytes, int]:
    """data-gym ranks: 256 single bytes in bytes_to_unicode order, then one rank per merge."""
    ranks = {bytes([b]): i for i, b in enumerate(bytes_to_unicode())}
    u2b = unicode_to_bytes()
    for a, b in merges:
        try:
            merged = bytes(u2b[c] for c in a + b)
        except KeyError as e:
            raise TokenizerError(f"merge {a!r} {b!r} has character {e} outside GPT-2's byte alphabet") from None
        if merged in ranks:
            raise TokenizerError(f"merge {a!r} {b!r} produces a token already in the vocabulary")
        ranks[merged] = len(ranks)
    return ranks


def _check_encoder(encoder: dict[str, int], ranks: dict[bytes, int], special_tokens: dict[str, int],
                   source: str) -> None:
    """Raise :class:`TokenizerError` unless encoder.json agrees with the merge ranks and the special tokens.

    Every non-special token must be a GPT-2-alphabet string whose id is its merge rank, and the
    special tokens must have their own ids, above every BPE token's.
    """
    u2b = unicode_to_bytes()
    enc_bytes: dict[bytes, int] = {}
    for k, v in encoder.items():
        if k in special_tokens:
            if int(v) != int(special_tokens[k]):
                raise TokenizerError(
                    f"{source}: special token {k!r} has id {v} in encoder.json, "
                    f"{special_tokens[k]} in tokenizer.json"
                )
            continue
        if any(c not in u2b for c in k):
            raise TokenizerError(f"{source}: encoder token {k!r} has characters outside GPT-2's byte alphabet")
        enc_bytes[token_str_to_bytes(k)] = int(v)
    for data, rank in ranks.items():
        got = enc_bytes.get(data)
        if got != rank:
            have = "missing" if got is None else f"id {got}"
            raise TokenizerError(
                f"{source}: encoder.json and vocab.bpe disagree: token {token_bytes_to_str(data)!r} "
                f"is {have} in encoder.json but merge order gives id {rank}"
            )
    if len(enc_bytes) != len(ranks):
        extra = sorted(token_bytes_to_str(b) for b in set(enc_bytes) - set(ranks))[:3]
        raise TokenizerError(f"{source}: encoder.json has tokens no merge produces: {extra!r}")
    for tok, i in special_tokens.items():
        if int(i) < len(ranks):
            raise TokenizerError(f"{source}: special token {tok!r} has id {i}, which a BPE token uses")
    if len(set(special_tokens.values())) != len(special_tokens):
        raise TokenizerError(f"{source}: special tokens share ids: {special_tokens!r}")


def check_special_token(token: object, source: str = "<memory>") -> None:
    """Raise :class:`TokenizerError` unless ``token`` is a non-empty string without whitespace.

    The in-graph tokenizer (used inside SavedModels) joins a word's BPE tokens with spaces and
    cannot represent a special token that contains whitespace.
    """
    if not isinstance(token, str) or not token:
        raise TokenizerError(f"{source}: BPE special tokens must be non-empty strings, got {token!r}")
    if any(c.isspace() for c in token):
        raise TokenizerError(
            f"{source}: BPE special token {token!r} contains whitespace, which the in-graph "
            "tokenizer cannot represent; use e.g. '<|end_of_text|>'"
        )


class BPETokenizer(Tokenizer):
    """Byte-level BPE over GPT-2-format files; encoding by tiktoken, training by HF ``tokenizers``.

    Example:
        >>> import tempfile
        >>> from tfgpt.tokenizers import load_tokenizer
        >>> tok = BPETokenizer.train(["low lower lowest " * 20], vocab_size=260)
        >>> tok.merges                                          # ids 256, 257, 258
        [('l', 'o'), ('lo', 'w'), ('Ġ', 'low')]
        >>> tok.eot_id                                          # 256 bytes + 3 merges, then the special
        259
        >>> tok.encode("lower<|endoftext|>")                    # "low", "e", "r", "<|endoftext|>"
        [257, 68, 81, 259]
        >>> d = tok.save(tempfile.mkdtemp())                    # tokenizer.json + GPT-2 files
        >>> load_tokenizer(d).encode("lowest") == tok.encode("lowest")
        True

    GPT-2's own vocabulary (the copy shipped in the package, or a directory with encoder.json + vocab.bpe):

        >>> gpt2 = BPETokenizer.gpt2()
        >>> gpt2.encode("Hello world<|endoftext|>")
        [15496, 995, 50256]
    """

    def __init__(
        self,
        encoder: dict[str, int],
        merges: Sequence[tuple[str, str]],
        special_tokens: dict[str, int] | None = None,
        kind: str = "bpe",
        source: str = "<memory>",
    ) -> None:
        """``encoder``: token string → id (GPT-2 alphabet; special tokens included).

        ``special_tokens`` defaults to the encoder entries that no merge produces
        (for GPT-2: ``{"<|endoftext|>": 50256}``). ``source`` names the files in error messages.
        """
        if kind not in ("bpe", "gpt2"):
            raise TokenizerError(f"BPETokenizer kind must be 'bpe' or 'gpt2', got {kind!r}")
        self.kind = kind
        self._merges = [(str(a), str(b)) for a, b in merges]
        ranks = _merge_ranks(self._merges)
        u2b = unicode_to_bytes()
        if special_tokens is None:
            # Entries outside GPT-2's byte alphabet, or that no merge produces, are special.
            special_tokens = {
                k: v for k, v in encoder.items() if any(c not in u2b for c in k) or token_str_to_bytes(k) not in ranks
            }
        for tok in special_tokens:
            check_special_token(tok, source)
        _check_encoder(encoder, ranks, special_tokens, source)
        encoder = {**encoder, **special_tokens}
        self._encoder = {k: int(v) for k, v in encoder.items()}
        self._specials = {k: int(v) for k, v in special_tokens.items()}
        self._ranks = ranks
        self._source = source
        self._vocab_size = max([len(ranks) - 1, *self._specials.values()]) + 1
        self._enc = None
        # tiktoken matches special tokens in hash order; when one is a prefix of another, split on a
        # longest-first regex ourselves so that the result matches the in-graph and char tokenizers.
        names = sorted(self._specials, key=len, reverse=True)
        overlapping = any(a != b and a.startswith(b) for a in names for b in names)
        self._special_re = re.compile("|".join(map(re.escape, names))) if overlapping else None
        self._num_threads = max(1, min(8, os.cpu_count() or 1))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_files(
        cls,
        directory: str | os.PathLike,
        kind: str = "bpe",
        special_tokens: dict[str, int] | None = None,
    ) -> BPETokenizer:
        """Load ``encoder.json`` + ``vocab.bpe`` from ``directory``."""
        encoder, merges = _read_files(Path(directory))
        return cls(encoder, merges, special_tokens=special_tokens, kind=kind, source=str(directory))

    @classmethod
    def gpt2(cls, directory: str | os.PathLike | None = None) -> BPETokenizer:
        """GPT-2's tokenizer from a directory with its encoder.json + vocab.bpe.

        ``directory`` defaults to ``$TFGPT_GPT2_BPE_DIR``, else the copy shipped in the package
        (:func:`tfgpt.assets_path.gpt2_vocab_dir`), so it works on a fresh machine.

        Example:
            >>> BPETokenizer.gpt2().encode("Hello, world!")
            [15496, 11, 995, 0]
        """
        if directory is None:
            directory = os.environ.get(GPT2_DIR_ENV) or gpt2_vocab_dir()
        tok = cls.from_files(directory, kind="gpt2")
        if tok.vocab_size != 50257 or tok.eot_id != 50256:
            raise TokenizerError(
                f"{directory}: not GPT-2's vocabulary (vocab_size {tok.vocab_size}, eot id {tok.eot_id})"
            )
        return tok

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = (END_OF_TEXT,),
        min_frequency: int = 2,
    ) -> BPETokenizer:
        """Train a byte-level BPE vocabulary of ``vocab_size`` ids (256 bytes + merges + specials)."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import models, pre_tokenizers, trainers

        specials = list(dict.fromkeys(special_tokens))
        for t in specials:
            check_special_token(t, "BPETokenizer.train")
        if vocab_size < 256 + len(specials):
            raise TokenizerError(
                f"vocab_size {vocab_size} is too small: byte-level BPE needs 256 byte tokens + "
                f"{len(specials)} special token(s)"
            )
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        checked = (require_str(t, "training text") for t in texts)
        hf.train_from_iterator(checked, trainer)
        model = json.loads(hf.to_str())["model"]
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        # Renumber into GPT-2's layout: bytes, merges, then special tokens.
        b2u = bytes_to_unicode()
        encoder = {b2u[b]: i for i, b in enumerate(b2u)}
        for a, b in merges:
            encoder[a + b] = len(encoder)
        special_ids = {}
        for t in specials:
            special_ids[t] = encoder[t] = len(encoder)
        return cls(encoder, merges, special_tokens=special_ids, kind="bpe", source="<trained>")

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: str | os.PathLike) -> BPETokenizer:
        """Rebuild from tokenizer.json's content and the GPT-2 files beside it.

        The files' sha256 digests recorded in tokenizer.json (when present) must match.
        """
        directory = Path(directory)
        where = directory / TOKENIZER_JSON
        kind = config.get("type", "bpe")
        if kind not in ("bpe", "gpt2"):
            raise TokenizerError(f"{where}: 'type' must be 'bpe' or 'gpt2', got {kind!r}")
        specials = config.get("special_tokens")
        if specials is not None and not (
            isinstance(specials, dict)
            and all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in specials.items())
        ):
            raise TokenizerError(
                f"{where}: 'special_tokens' must be an object of token string → integer id, got {specials!r}"
            )
        checks = (("encoder_sha256", ENCODER_JSON), ("merges_sha256", VOCAB_BPE))
        for key, _ in checks:
            if config.get(key) is not None and not isinstance(config[key], str):
                raise TokenizerError(f"{where}: {key!r} must be a hex string, got {config[key]!r}")
        encoder, merges = _read_files(directory)
        # Before the two files are checked against each other, so that the message names the damaged one.
        for (key, name), actual in zip(checks, _file_digests(encoder, merges), strict=True):
            expected = config.get(key)
            if expected is not None and expected != actual:
                raise TokenizerError(
                    f"{directory / name}: content does not match {key} in {where} "
                    "(the file was edited, truncated or damaged, or comes from another tokenizer)"
                )
        return cls(encoder, merges, special_tokens=specials, kind=kind, source=str(directory))

    # ------------------------------------------------------------------ interface
    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._specials)

    @property
    def encoder(self) -> dict[str, int]:
        """Token string (GPT-2 byte alphabet) → id, special tokens included."""
        return dict(self._encoder)

    @property
    def merges(self) -> list[tuple[str, str]]:
        return list(self._merges)

    @property
    def encoding(self) -> Any:
        """The ``tiktoken.Encoding`` doing the work (built on first use)."""
        if self._enc is None:
            import tiktoken

            self._enc = tiktoken.Encoding(
                name=f"tfgpt-{self.kind}-{self.fingerprint()[:12]}",
                pat_str=GPT2_PATTERN,
                mergeable_ranks=self._ranks,
                special_tokens=self._specials,
            )
        return self._enc

    def encode(self, text: str) -> list[int]:
        text = require_str(text)
        if self._special_re is not None:
            return self._encode_longest_first(text)
        return self.encoding.encode(text, allowed_special="all")

    def _encode_longest_first(self, text: str) -> list[int]:
        """Encode, matching special tokens leftmost-longest (only used when specials overlap)."""
        enc = self.encoding
        ids: list[int] = []
        pos = 0
        for m in self._special_re.finditer(text):
            ids += enc.encode_ordinary(text[pos : m.start()])
            ids.append(self._specials[m.group()])
            pos = m.end()
        ids += enc.encode_ordinary(text[pos:])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode without recognising special tokens (``"<|endoftext|>"`` becomes plain BPE tokens)."""
        return self.encoding.encode_ordinary(require_str(text))

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """Encode many texts on ``num_threads`` threads (tiktoken releases the GIL).

        Throughput drops on tiny texts: concatenate small documents into ~10-100 KB batches.
        """
        texts = [require_str(t, f"texts[{i}]") for i, t in enumerate(texts)]
        if self._special_re is not None:
            return [self._encode_longest_first(t) for t in texts]
        return self.encoding.encode_batch(texts, num_threads=num_threads or self._num_threads, allowed_special="all")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = [int(i) for i in ids]
        n = self._vocab_size
        for i in ids:
            if not 0 <= i < n:
                raise TokenizerError(f"token id {i} is outside the BPE vocabulary (size {n})")
        try:
            return self.encoding.decode_bytes(ids)
        except KeyError as e:  # an id inside [0, n) that no token has
            raise TokenizerError(f"token id {e} has no token in this vocabulary") from None

    def token_bytes(self) -> list[bytes]:
        """Bytes of every id (``b""`` for ids without a token), used by the in-graph tokenizer."""
        out = [b""] * self._vocab_size
        for data, rank in self._ranks.items():
            out[rank] = data
        for t, i in self._specials.items():
            out[i] = t.encode("utf-8")
        return out

    def _digests(self) -> tuple[str, str]:
        return _file_digests(self._encoder, self._merges)

    def to_config(self) -> dict[str, Any]:
        enc_digest, merges_digest = self._digests()
        return {
            "type": self.kind,
            "vocab_size": self._vocab_size,
            "special_tokens": dict(sorted(self._specials.items(), key=lambda kv: kv[1])),
            "encoder_file": ENCODER_JSON,
            "merges_file": VOCAB_BPE,
            "encoder_sha256": enc_digest,
            "merges_sha256": merges_digest,
            "pattern": GPT2_PATTERN,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ordered = dict(sorted(self._encoder.items(), key=lambda kv: kv[1]))
        write_text_atomic(directory / ENCODER_JSON, json.dumps(ordered, ensure_ascii=False))
        lines = ["#version: 0.2", *(f"{a} {b}" for a, b in self._merges)]
        write_text_atomic(directory / VOCAB_BPE, "\n".join(lines) + "\n")
        # tokenizer.json last: its presence means the directory is complete.
        return write_tokenizer_json(directory, {**self.to_config(), FINGERPRINT_KEY: self.fingerprint()})

    def graph_tokenizer(self) -> Any:
        from tfgpt.tokenizers.graph import GraphBPETokenizer

        return GraphBPETokenizer(self)


def _read_files(directory: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The token -> id map of ``encoder.json`` and the merges of ``vocab.bpe`` in ``directory``, unchecked."""
    enc_path, bpe_path = directory / ENCODER_JSON, directory / VOCAB_BPE
    for p in (enc_path, bpe_path):
        if not p.is_file():
            raise TokenizerError(f"BPE vocabulary file {p} is missing")
    try:
        encoder = json.loads(enc_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{enc_path}: not valid JSON ({e})") from None
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise TokenizerError(f"{enc_path}: expected a JSON object of token string → integer id")
    return encoder, read_merges(bpe_path)


def _file_digests(encoder: dict[str, int], merges: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """The sha256s tokenizer.json records of an encoder (special tokens included) and of a merges list."""
    enc = json.dumps(sorted(encoder.items(), key=lambda kv: kv[1]), ensure_ascii=False)
    mer = "\n".join(f"{a} {b}" for a, b in merges)
    return hashlib.sha256(enc.encode("utf-8")).hexdigest(), hashlib.sha256(mer.encode("utf-8")).hexdigest()


def read_merges(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Parse a GPT-2 ``vocab.bpe``: optional ``#version`` line, then ``a b`` per line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: not UTF-8 ({e})") from None
    merges: list[tuple[str, str]] = []
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise TokenizerError(f"{path}:{n}: expected 'a b' (one merge), got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges
