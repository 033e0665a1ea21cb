"""Character-level tokenizer: one id per Unicode code point seen in training.

Ids ``0..n_chars-1`` are the sorted characters of the training text (tinyshakespeare gives the
familiar 65-symbol vocabulary); special tokens such as ``"<|endoftext|>"`` get the next ids and
are recognised as whole strings by :meth:`CharTokenizer.encode`. A character outside the
vocabulary raises :class:`~tfgpt.errors.TokenizerError` naming it and its position, unless the
tokenizer has an ``unk_token`` (then it maps to that id).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tfgpt.errors import TokenizerError
from tfgpt.tokenizers.base import FINGERPRINT_KEY, Tokenizer, require_str, write_tokenizer_json

_MAX_REPORTED = 5


class CharTokenizer(Tokenizer):
    """Maps each character to an id; special tokens come after the characters.

    Example:
        >>> tok = CharTokenizer.train(["hello world"], special_tokens=["<|endoftext|>"])
        >>> tok.vocab_size, tok.eot_id
        (9, 8)
        >>> tok.encode("hello<|endoftext|>")
        [3, 2, 4, 4, 5, 8]
        >>> tok.decode(tok.encode("low"))
        'low'
    """

    kind = "char"

    def __init__(
        self,
        chars: Sequence[str],
        special_tokens: Sequence[str] = (),
        unk_token: str | None = None,
    ) -> None:
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise TokenizerError(f"char vocabulary entries must be single characters, got {c!r}")
            if 0xD800 <= ord(c) <= 0xDFFF:
                raise TokenizerError(f"char vocabulary cannot hold a lone surrogate ({c!r})")
        if len(set(chars)) != len(chars):
            raise TokenizerError("char vocabulary has duplicate characters")
        specials: list[str] = []
        for t in special_tokens:
            if not isinstance(t, str) or not t:
                raise TokenizerError(f"special tokens must be non-empty strings, got {t!r}")
            if t not in specials:
                specials.append(t)
        if unk_token is not None and (not isinstance(unk_token, str) or not unk_token):
            raise TokenizerError(f"unk_token must be a non-empty string, got {unk_token!r}")
        if unk_token is not None and unk_token not in chars and unk_token not in specials:
            specials.append(unk_token)
        self._chars = chars
        self._specials = specials
        self._unk_token = unk_token
        self._stoi = {c: i for i, c in enumerate(chars)}
        self._special_ids = {t: len(chars) + i for i, t in enumerate(specials)}
        self._itos = chars + specials
        self._unk_id = None if unk_token is None else {**self._stoi, **self._special_ids}[unk_token]
        # Longest first so that overlapping special tokens match greedily.
        self._special_re = (
            re.compile("|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True))) if specials else None
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        special_tokens: Sequence[str] = (),
        unk_token: str | None = None,
    ) -> CharTokenizer:
        """Build the vocabulary from the sorted set of characters in ``texts``.

        Special-token strings occurring in the texts are not split into characters.
        """
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        pattern = (
            re.compile("|".join(re.escape(t) for t in sorted(special_tokens, key=len, reverse=True)))
            if special_tokens
            else None
        )
        seen: set[str] = set()
        for i, text in enumerate(texts):
            text = require_str(text, f"texts[{i}]")
            if pattern is not None:
                text = pattern.sub("", text)
            seen.update(text)
        surrogates = [c for c in seen if 0xD800 <= ord(c) <= 0xDFFF]
        if surrogates:
            raise TokenizerError(f"training text holds lone surrogates {surrogates[:_MAX_REPORTED]!r}")
        if not seen:
            raise TokenizerError("cannot train a char tokenizer on empty text")
        return cls(sorted(seen), special_tokens=special_tokens, unk_token=unk_token)

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "tokenizer.json") -> CharTokenizer:
        """Rebuild from the dict :meth:`to_config` returned (the content of tokenizer.json)."""
        try:
            chars = config["vocab"]
            specials = config.get("special_tokens", [])
            unk = config.get("unk_token")
        except (KeyError, TypeError, AttributeError) as e:
            raise TokenizerError(f"{where}: char tokenizer config lacks {e}") from None
        for key, value in (("vocab", chars), ("special_tokens", specials)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TokenizerError(f"{where}: {key!r} must be a list of strings, got {value!r}")
        if unk is not None and not isinstance(unk, str):
            raise TokenizerError(f"{where}: 'unk_token' must be a string or null, got {unk!r}")
        try:
            return cls(chars, special_tokens=specials, unk_token=unk)
        except TokenizerError as e:
            raise TokenizerError(f"{where}: {e}") from None

    # ------------------------------------------------------------------ interface
    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_ids)

    @property
    def chars(self) -> list[str]:
        """The character vocabulary (ids ``0..len(chars)-1``)."""
        return list(self._chars)

    @property
    def unk_token(self) -> str | None:
        return self._unk_token

    @property
    def unk_id(self) -> int | None:
        return self._unk_id

    def _encode_plain(self, text: str, offset: int) -> list[int]:
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pass
        if self._unk_id is not None:
            unk = self._unk_id
            return [stoi.get(c, unk) for c in text]
        bad = [(offset + i, c) for i, c in enumerate(text) if c not in stoi]
        shown = ", ".join(f"{c!r} (U+{ord(c):04X}) at position {i}" for i, c in bad[:_MAX_REPORTED])
        more = f" and {len(bad) - _MAX_REPORTED} more" if len(bad) > _MAX_REPORTED else ""
        raise TokenizerError(
            f"{len(bad)} character(s) not in the char vocabulary ({len(self._chars)} characters): "
            f"{shown}{more}; prepare on text that includes them, or with --unk-token TOKEN to map unknown "
            f"characters to one id"
        )

    def encode(self, text: str) -> list[int]:
        text = require_str(text)
        if self._special_re is None:
            return self._encode_plain(text, 0)
        ids: list[int] = []
        pos = 0
        for m in self._special_re.finditer(text):
            ids.extend(self._encode_plain(text[pos : m.start()], pos))
            ids.append(self._special_ids[m.group()])
            pos = m.end()
        ids.extend(self._encode_plain(text[pos:], pos))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        itos = self._itos
        n = len(itos)
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise TokenizerError(f"token id {i} is outside the char vocabulary (size {n})")
            out.append(itos[i])
        return "".join(out).encode("utf-8")

    def to_config(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "vocab": list(self._chars),
            "special_tokens": list(self._specials),
            "unk_token": self._unk_token,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        return write_tokenizer_json(directory, {**self.to_config(), FINGERPRINT_KEY: self.fingerprint()})

    def graph_tokenizer(self) -> Any:
        from tfgpt.tokenizers.graph import GraphCharTokenizer

        return GraphCharTokenizer(self)
