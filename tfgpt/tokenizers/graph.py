"""In-graph tokenizers (TensorFlow ops + TF-Text only: no ``py_function``), for export/serving.

Both classes are ``tf.Module``\\ s with the same two methods:

* ``tokenize(strings)``: ``tf.string [batch]`` → ``tf.RaggedTensor`` int32 ``[batch, (tokens)]``.
* ``detokenize(ids)``: int ids ``[batch, n]`` (dense or ragged) → ``tf.string [batch]``;
  invalid UTF-8 in the output (ids that end mid-character) is replaced with U+FFFD, and ids
  outside the vocabulary decode to U+FFFD instead of failing.

They produce exactly the ids of the Python tokenizers (tested on the-verdict.txt, adversarial
strings and hypothesis samples, eagerly and inside ``tf.function``).

GPT-2's pre-tokenization is done here (RE2 has no look-ahead, so each string is first cut before
every whitespace character that is followed by a non-space, then split with the look-ahead-free
pattern); only keras-hub's BPE *merge* machinery is used, because keras-hub's own splitter does not
reproduce GPT-2's ids. The measurements behind this are in ``docs/design/tokenizers.md``.

This module imports no other tokenizer module: the classes read the vocabulary from any object
with the attributes of :class:`CharVocab` / :class:`BPEVocab`, and ``Tokenizer.graph_tokenizer()``
(in char.py / bpe.py) imports this module, never the other way round.

Example:
    >>> import tensorflow as tf
    >>> from tfgpt.tokenizers import CharTokenizer
    >>> g = CharTokenizer.train(["hello"]).graph_tokenizer()
    >>> g.tokenize(tf.constant(["hell", "lo"])).to_list()
    [[1, 0, 2, 2], [2, 3]]
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import tensorflow as tf
import tensorflow_text as tf_text

from tfgpt.errors import TokenizerError


class CharVocab(Protocol):
    """What :class:`GraphCharTokenizer` reads (a :class:`~tfgpt.tokenizers.char.CharTokenizer` has it)."""

    chars: list[str]
    special_tokens: dict[str, int]
    vocab_size: int
    unk_id: int | None


class BPEVocab(Protocol):
    """What :class:`GraphBPETokenizer` reads (a :class:`~tfgpt.tokenizers.bpe.BPETokenizer` has it)."""

    encoder: dict[str, int]
    merges: list[tuple[str, str]]
    special_tokens: dict[str, int]
    vocab_size: int

    def token_bytes(self) -> list[bytes]: ...


#: Unicode White_Space (what ``\s`` means to tiktoken/regex/Oniguruma), for RE2.
WS = r"\t\n\x{0B}\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
#: Points where GPT-2's regex never matches across: before a space followed by a non-space.
CUT_PATTERN = rf"[{WS}][^{WS}]"
#: GPT-2's pattern without the look-ahead alternative (valid inside one cut piece).
PIECE_PATTERN = rf"'s|'t|'re|'ve|'m|'ll|'d| ?\p{{L}}+| ?\p{{N}}+| ?[^{WS}\p{{L}}\p{{N}}]+|[{WS}]+"
_REPLACEMENT = "\ufffd"


def _special_pattern(tokens: list[str]) -> str:
    # RE2 syntax is close enough to Python's for re.escape of literal strings.
    return "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))


def _as_ragged_ids(ids: Any) -> tf.RaggedTensor:
    if isinstance(ids, tf.RaggedTensor):
        rt = ids
    else:
        t = tf.convert_to_tensor(ids)
        if t.shape.rank == 1:
            t = t[tf.newaxis, :]
        rt = tf.RaggedTensor.from_tensor(t)
    return tf.cast(rt, tf.int64)


def _detokenize_bytes(table: tf.Tensor, ids: Any) -> tf.Tensor:
    """Gather each id's bytes from ``table`` (last entry: U+FFFD for out-of-range ids), join, fix UTF-8."""
    rt = _as_ragged_ids(ids)
    n = tf.cast(tf.shape(table)[0] - 1, tf.int64)
    flat = rt.flat_values
    safe = tf.where((flat >= 0) & (flat < n), flat, n)
    pieces = rt.with_flat_values(tf.gather(table, safe))
    joined = tf.strings.reduce_join(pieces, axis=-1)
    return tf.strings.unicode_transcode(
        joined, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD, replace_control_characters=False
    )


def regex_split(strings: tf.Tensor, pattern: str) -> tf.RaggedTensor:
    """``tf_text.regex_split(strings, pattern, pattern)`` (matches and the text between them kept)
    that also works on strings with NUL bytes.

    tf_text's regex ops stop reading a string at its first ``\\x00`` (``"a\\x00b"`` splits to
    ``["a"]``). We run the regex on a copy where NUL is replaced by ``\\x01`` (same length, same
    class in every pattern here) and cut the original strings at the offsets it returns.
    """
    safe = tf.strings.regex_replace(strings, "\\x00", "\x01")
    _, begin, end = tf_text.regex_split_with_offsets(safe, pattern, pattern)
    src = tf.gather(strings, begin.value_rowids())
    return begin.with_flat_values(tf.strings.substr(src, begin.flat_values, end.flat_values - begin.flat_values))


def _as_batch(strings: Any) -> tf.Tensor:
    strings = tf.convert_to_tensor(strings, dtype=tf.string)
    if strings.shape.rank is not None and strings.shape.rank != 1:
        raise TokenizerError(f"tokenize expects a 1-D batch of strings, got shape {strings.shape}")
    return strings


def _split_specials(strings: tf.Tensor, pattern: str | None) -> tuple[tf.RaggedTensor, tf.Tensor]:
    """Split each string into pieces around special tokens; return ragged pieces and is_special."""
    if pattern is None:
        pieces = tf.RaggedTensor.from_row_lengths(strings, tf.ones_like(strings, dtype=tf.int64))
        return pieces, tf.zeros_like(strings, dtype=tf.bool)
    pieces = regex_split(strings, pattern)
    safe = tf.strings.regex_replace(pieces.flat_values, "\\x00", "\x01")
    return pieces, tf.strings.regex_full_match(safe, pattern)


class GraphCharTokenizer(tf.Module):
    """In-graph :class:`~tfgpt.tokenizers.char.CharTokenizer`.

    Example:
        >>> import tensorflow as tf
        >>> from tfgpt.tokenizers import CharTokenizer
        >>> g = GraphCharTokenizer(CharTokenizer.train(["hello"]))  # or tok.graph_tokenizer()
        >>> g.tokenize(tf.constant(["hell", "lo"])).to_list()
        [[1, 0, 2, 2], [2, 3]]
        >>> g.detokenize(tf.ragged.constant([[1, 0]])).numpy()
        array([b'he'], dtype=object)

    Unknown characters map to the unk id when the tokenizer has one; otherwise ``tokenize`` fails
    with an ``InvalidArgumentError`` (a ``tf.debugging`` assertion), as the Python encode raises.
    """

    def __init__(self, tokenizer: CharVocab, name: str | None = None) -> None:
        super().__init__(name=name)
        chars = tokenizer.chars
        specials = tokenizer.special_tokens
        self.vocab_size = tokenizer.vocab_size
        self._unk_id = tokenizer.unk_id
        keys = [ord(c) for c in chars] + [-(i + 1) for i in range(len(specials))]
        values = list(range(len(chars))) + list(specials.values())
        self._char_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.int64), tf.constant(values, tf.int64)),
            default_value=-1 if self._unk_id is None else self._unk_id,
        )
        self._special_list = list(specials)
        self._special_pattern = _special_pattern(self._special_list) if specials else None
        if specials:
            self._special_keys = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(self._special_list),
                    tf.constant([-(i + 1) for i in range(len(specials))], tf.int64),
                ),
                default_value=0,
            )
        itos = [c.encode("utf-8") for c in chars] + [t.encode("utf-8") for t in specials] + [b"\xef\xbf\xbd"]
        self._itos = tf.constant(itos, dtype=tf.string)

    def tokenize(self, strings: Any) -> tf.RaggedTensor:
        strings = _as_batch(strings)
        pieces, is_special = _split_specials(strings, self._special_pattern)
        flat = pieces.flat_values
        text = tf.where(is_special, "", flat)
        cps = tf.strings.unicode_decode(text, "UTF-8", errors="replace", replacement_char=0xFFFD)
        keys = tf.cast(cps, tf.int64)
        if self._special_pattern is not None:
            special_keys = self._special_keys.lookup(tf.boolean_mask(flat, is_special))
            special_rows = tf.RaggedTensor.from_row_lengths(special_keys, tf.cast(is_special, tf.int64))
            keys = tf.concat([keys, special_rows], axis=1)  # each row is empty in one of the two
        ids = self._char_table.lookup(keys.flat_values)
        if self._unk_id is None:
            check = tf.debugging.assert_non_negative(
                ids, message="text holds characters that are not in the char vocabulary"
            )
            with tf.control_dependencies([check]):
                ids = tf.identity(ids)
        per_piece = keys.with_flat_values(tf.cast(ids, tf.int32))
        return tf.RaggedTensor.from_row_splits(per_piece, pieces.row_splits).merge_dims(1, 2)

    def detokenize(self, ids: Any) -> tf.Tensor:
        return _detokenize_bytes(self._itos, ids)


class GraphBPETokenizer(tf.Module):
    """In-graph GPT-2-exact byte-level BPE (GPT-2 pre-tokenization + keras-hub's BPE merges).

    Example:
        >>> import tensorflow as tf
        >>> from tfgpt.tokenizers import BPETokenizer
        >>> tok = BPETokenizer.train(["low lower lowest " * 20], vocab_size=260)
        >>> g = GraphBPETokenizer(tok)  # or tok.graph_tokenizer()
        >>> text = "lower lowest<|endoftext|>"
        >>> g.tokenize(tf.constant([text])).to_list() == [tok.encode(text)]
        True
        >>> g.detokenize(g.tokenize(tf.constant([text]))).numpy()
        array([b'lower lowest<|endoftext|>'], dtype=object)

    Over GPT-2's vocabulary (shipped in the package) the ids are GPT-2's:

        >>> BPETokenizer.gpt2().graph_tokenizer().tokenize(tf.constant(["Hello world<|endoftext|>"])).to_list()
        [[15496, 995, 50256]]
    """

    def __init__(self, tokenizer: BPEVocab, name: str | None = None) -> None:
        super().__init__(name=name)
        import keras_hub

        specials = tokenizer.special_tokens
        self.vocab_size = tokenizer.vocab_size
        self._special_list = list(specials)
        self._special_pattern = _special_pattern(self._special_list) if specials else None
        merges = [f"{a} {b}" for a, b in tokenizer.merges]
        # The TF path only: we call its merge machinery, never its (non-GPT-2) splitter.
        self._bpe = keras_hub.tokenizers.BytePairTokenizer(
            vocabulary=tokenizer.encoder,
            merges=merges,
            unsplittable_tokens=self._special_list,
            _allow_python_workflow=False,
        )
        # Track the TF resources explicitly so SavedModel export captures them.
        self._tables = [
            self._bpe.byte2unicode,
            self._bpe.token_to_id_map,
            self._bpe.merge_ranks,
            self._bpe.cache,
        ]
        table = tokenizer.token_bytes() + ["\ufffd".encode()]
        self._id_bytes = tf.constant(table, dtype=tf.string)

    def pretokenize(self, strings: Any) -> tf.RaggedTensor:
        """GPT-2 pre-tokens ``[batch, (words)]`` (special tokens are their own words)."""
        strings = _as_batch(strings)
        pieces, is_special = _split_specials(strings, self._special_pattern)
        flat = tf.where(is_special, "", pieces.flat_values)  # specials are added back below
        # Cut points: before each whitespace char that is followed by a non-whitespace char.
        safe = tf.strings.regex_replace(flat, "\\x00", "\x01")  # see regex_split
        parts, starts, _ = tf_text.regex_split_with_offsets(safe, CUT_PATTERN, CUT_PATTERN)
        is_cut = parts.with_flat_values(tf.strings.regex_full_match(parts.flat_values, CUT_PATTERN))
        cut_starts = tf.ragged.boolean_mask(starts, is_cut)
        zero = tf.zeros([tf.shape(flat, out_type=tf.int64)[0], 1], tf.int64)
        length = tf.cast(tf.strings.length(flat), tf.int64)[:, tf.newaxis]
        bounds = tf.concat([zero, cut_starts, length], axis=1)
        begin, end = bounds[:, :-1], bounds[:, 1:]
        keep = begin.with_flat_values(end.flat_values > begin.flat_values)  # no empty chunks
        begin, end = tf.ragged.boolean_mask(begin, keep), tf.ragged.boolean_mask(end, keep)
        src = tf.gather(flat, begin.value_rowids())
        chunks = tf.strings.substr(src, begin.flat_values, end.flat_values - begin.flat_values)
        words = regex_split(chunks, PIECE_PATTERN)  # [chunks, (words)]
        words = begin.with_flat_values(words).merge_dims(1, 2)  # [pieces, (words)]
        if self._special_pattern is not None:
            special_rows = tf.RaggedTensor.from_row_lengths(
                tf.boolean_mask(pieces.flat_values, is_special), tf.cast(is_special, tf.int64)
            )
            words = tf.concat([words, special_rows], axis=1)  # each row is empty in one of the two
        return tf.RaggedTensor.from_row_splits(words, pieces.row_splits).merge_dims(1, 2)

    def tokenize(self, strings: Any) -> tf.RaggedTensor:
        words = self.pretokenize(strings)
        flat_words = words.flat_values
        bpe = self._bpe
        cache_lookup = bpe.cache.lookup(flat_words)
        unseen = tf.math.equal(cache_lookup, "")

        def process_unseen() -> tf.Tensor:
            bpe._bpe_merge_and_update_cache_tf(tf.boolean_mask(flat_words, unseen))
            return bpe.cache.lookup(flat_words)

        merged = tf.cond(tf.reduce_any(unseen), process_unseen, lambda: cache_lookup)
        tokens = tf.strings.split(merged, sep=" ")  # [words, tokens]
        ids = bpe.token_to_id_map.lookup(tokens.flat_values)
        per_word = tokens.with_flat_values(tf.cast(ids, tf.int32))
        return tf.RaggedTensor.from_row_splits(per_word, words.row_splits).merge_dims(1, 2)

    def detokenize(self, ids: Any) -> tf.Tensor:
        return _detokenize_bytes(self._id_bytes, ids)
