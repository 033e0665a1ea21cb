"""In-graph tokenizers (TensorFlow ops + TF-Text only: no ``py_function``), for export/serving.

Both classes are ``tf.Module``\\ s with the same two methods:

* ``tokenize(strings)``: ``tf.string [batch]`` → ``tf.RaggedTensor`` int32 ``[batch, (tokens)]``.
* ``detokenize(ids)``: int ids ``[batch, n]`` (dense or ragged) → ``tf.string [batch]``;
  invalid UTF-8 in the output (ids that end mid-character) is replaced with U+FFFD, and ids
  outside the vocabulary decode to U+FFFD instead of failing.

They produce exactly the ids of the Python tokenizers (tested on the fixture corpora, adversarial
strings and hypothesis samples, eagerly and inside ``tf.function``), except on BPE pre-tokens longer
than ``MAX_PIECE_BYTES`` (see :class:`GraphBPETokenizer`).

GPT-2's pre-tokenization is done here (RE2 has no look-ahead, so each string is first cut before
every whitespace character that is followed by a non-space, then split with the look-ahead-free
pattern; keras-hub's splitter does not reproduce GPT-2's ids). The merges are tiktoken's rule on
integer ids, vectorised over all pre-tokens of the batch, with pre-tokens longer than
``MAX_PIECE_BYTES`` merged in chunks so that the time is bounded on any input (see
:class:`GraphBPETokenizer`). The measurements behind this are in ``docs/design/tokenizers.md``.

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
    """What :class:`GraphBPETokenizer` reads (a :class:`~tfgpt.tokenizers.bpe.BPETokenizer` has it).

    Ids must be tiktoken ranks (GPT-2's layout: a merged token's id is its merge priority).
    """

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


#: Pre-tokens longer than this many bytes are merged in chunks of this many bytes (see GraphBPETokenizer).
MAX_PIECE_BYTES = 512


def pair_merges(token_bytes: list[bytes], special_ids: set[int]) -> tuple[list[int], list[int], list[bool]]:
    """tiktoken's merge rule as a table: ``(left id, right id)`` → merged id, for every split of every token.

    Ids are tiktoken ranks (GPT-2's layout), so the pair to merge first is the one with the lowest merged
    id. Returns ``(keys, merged, all_at_once)`` with ``key = left * len(token_bytes) + right``;
    ``all_at_once[m]`` is true when every token that has ``m`` as one side of a split ranks after
    ``m``: then merging all (non-overlapping, leftmost first) occurrences of a best pair of rank ``m``
    in one step gives what tiktoken's one-at-a-time loop gives.
    """
    n = len(token_bytes)
    ids = {b: i for i, b in enumerate(token_bytes) if b and i not in special_ids}
    keys: list[int] = []
    merged: list[int] = []
    all_at_once = [True] * (n + 1)  # index n: "no merge"
    for i, data in enumerate(token_bytes):
        if i in special_ids:
            continue
        for cut in range(1, len(data)):
            left, right = ids.get(data[:cut]), ids.get(data[cut:])
            if left is None or right is None:
                continue
            keys.append(left * n + right)
            merged.append(i)
            for side in (left, right):
                if side > i:
                    all_at_once[side] = False
    return keys, merged, all_at_once


def _byte_chunks(words: tf.Tensor, max_bytes: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Bytes of ``words`` [W] as flat byte values [M], each byte's chunk id [M] (chunks of ``max_bytes``
    bytes within a word, numbered 0.. over the batch, in order) and each chunk's word [C]."""
    split = tf.strings.bytes_split(words)  # [W, (bytes)]
    flat = tf.reshape(tf.io.decode_raw(split.flat_values, tf.uint8), [-1])  # [M]: 1-byte strings
    rows = split.value_rowids()  # [M]
    pos = tf.range(tf.shape(rows, out_type=tf.int64)[0]) - tf.gather(split.row_starts(), rows)
    n_chunks = (split.row_lengths() + max_bytes - 1) // max_bytes  # [W]
    first_chunk = tf.cumsum(n_chunks, exclusive=True)  # [W]
    chunk = tf.gather(first_chunk, rows) + pos // max_bytes  # [M]
    chunk_word = tf.repeat(tf.range(tf.shape(words, out_type=tf.int64)[0]), n_chunks)  # [C]
    return tf.cast(flat, tf.int64), chunk, chunk_word


def _pick(is_match: tf.Tensor, all_at_once: tf.Tensor, seg: tf.Tensor, n_seg: tf.Tensor) -> tf.Tensor:
    """Which matching pairs [P] to merge now: every other one of each run of consecutive matches
    (leftmost first) where the chunk's best merge allows it, else only the chunk's leftmost match."""
    idx = tf.range(tf.shape(is_match, out_type=tf.int64)[0])  # [P]
    other = tf.logical_not(is_match)
    run = tf.cumsum(tf.cast(other, tf.int64))  # [P]: how many non-matches up to here
    last_other = tf.gather(tf.concat([tf.constant([-1], tf.int64), tf.where(other)[:, 0]], axis=0), run)  # [P]
    every_other = tf.equal((idx - last_other - 1) % 2, 0)
    big = tf.cast(tf.size(idx), tf.int64)
    first = tf.math.unsorted_segment_min(tf.where(is_match, idx, big), seg, n_seg)  # [C]
    leftmost = tf.equal(idx, tf.gather(first, seg))
    return is_match & tf.where(all_at_once, every_other, leftmost)


class GraphBPETokenizer(tf.Module):
    """In-graph GPT-2-exact byte-level BPE (GPT-2 pre-tokenization + tiktoken's merge rule, vectorised).

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

    Pathological words: a pre-token longer than ``max_piece_bytes`` (default 512 bytes, e.g. 600
    letters with no space) is merged as independent ``max_piece_bytes``-byte chunks, so that the time
    stays bounded on any prompt; on such words the ids can differ from the Python tokenizer (tiktoken),
    which merges the whole word. Every pre-token of ordinary text is far shorter.
    """

    def __init__(self, tokenizer: BPEVocab, name: str | None = None, max_piece_bytes: int = MAX_PIECE_BYTES) -> None:
        super().__init__(name=name)
        if max_piece_bytes < 1:
            raise TokenizerError(f"max_piece_bytes must be >= 1, got {max_piece_bytes}")
        specials = tokenizer.special_tokens
        self.vocab_size = tokenizer.vocab_size
        self.max_piece_bytes = int(max_piece_bytes)
        self._special_list = list(specials)
        self._special_pattern = _special_pattern(self._special_list) if specials else None
        table = tokenizer.token_bytes()
        self._n = len(table)
        keys, merged, all_at_once = pair_merges(table, set(specials.values()))
        self._pairs = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.int64), tf.constant(merged, tf.int64)),
            default_value=self._n,
        )
        self._all_at_once = tf.constant(all_at_once)
        ids = {b: i for i, b in enumerate(table) if len(b) == 1 and i not in specials.values()}
        self._byte_ids = tf.constant([ids.get(bytes([b]), -1) for b in range(256)], tf.int64)
        self._specials = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self._special_list or [""]), tf.constant(list(specials.values()) or [-1], tf.int64)
            ),
            default_value=-1,
        )
        self._id_bytes = tf.constant(table + ["\ufffd".encode()], dtype=tf.string)
        # One graph for the loop, so that eager calls do not run it step by step in Python (~10x slower).
        self._merge = tf.function(self.merge, input_signature=[tf.TensorSpec([None], tf.string)])

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
        words = self.pretokenize(strings)  # [batch, (words)]
        flat = words.flat_values  # [W]
        special = self._specials.lookup(flat)  # [W]: the special token's id, else -1
        is_special = special >= 0
        ids, word_of = self._merge(tf.where(is_special, "", flat))  # [T], [T]
        n_words = tf.shape(flat, out_type=tf.int64)[0]
        per_word = tf.RaggedTensor.from_value_rowids(ids, word_of, nrows=n_words)
        special_rows = tf.RaggedTensor.from_row_lengths(
            tf.boolean_mask(special, is_special), tf.cast(is_special, tf.int64)
        )
        per_word = tf.concat([per_word, special_rows], axis=1)  # each row is empty in one of the two
        per_word = tf.cast(per_word, tf.int32)
        return tf.RaggedTensor.from_row_splits(per_word, words.row_splits).merge_dims(1, 2)

    def merge(self, words: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """BPE-merge ``words`` [W] (byte strings); return token ids [T] and each token's word [T].

        Each step merges, in every chunk, the pair with the lowest merged id (all its occurrences when
        :func:`pair_merges` allows it); the loop stops when no chunk has a pair left to merge.
        """
        byte_values, chunk, chunk_word = _byte_chunks(words, self.max_piece_bytes)
        tok = tf.gather(self._byte_ids, byte_values)  # [M]
        n_chunks = tf.shape(chunk_word, out_type=tf.int64)[0]

        def step(tok: tf.Tensor, chunk: tf.Tensor, _: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            same = tf.equal(chunk[:-1], chunk[1:])  # [P = M-1]: pairs inside one chunk
            rank = self._pairs.lookup(tf.where(same, tok[:-1] * self._n + tok[1:], -1))  # [P]
            seg = chunk[:-1]
            best = tf.gather(tf.math.unsorted_segment_min(rank, seg, n_chunks), seg)  # [P]
            is_match = tf.equal(rank, best) & (rank < self._n)
            pick = _pick(is_match, tf.gather(self._all_at_once, tf.minimum(best, self._n)), seg, n_chunks)
            no = tf.zeros([1], tf.bool)
            merged = tf.concat([rank, tf.zeros([1], tf.int64)], 0)  # [M]: pair p's merged id at p
            tok = tf.where(tf.concat([pick, no], 0), merged, tok)
            keep = tf.logical_not(tf.concat([no, pick], 0))  # [M]: the right side of a merge goes
            return tf.boolean_mask(tok, keep), tf.boolean_mask(chunk, keep), tf.reduce_any(pick)

        tok, chunk, _ = tf.while_loop(
            lambda t, c, more: more,
            step,
            (tok, chunk, tf.size(tok) > 1),
            shape_invariants=(tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([])),
        )
        return tok, tf.gather(chunk_word, chunk)

    def detokenize(self, ids: Any) -> tf.Tensor:
        return _detokenize_bytes(self._id_bytes, ids)
