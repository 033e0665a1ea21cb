"""In-graph tokenizers agree exactly with the Python ones (eager, tf.function, SavedModel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tokenizers.helpers import ADVERSARIAL, TRICKY_TEXT, UNICODE_TEXT
from tfgpt.errors import TokenizerError
from tfgpt.tokenizers import BPETokenizer, CharTokenizer

BATCH = st.lists(st.one_of(UNICODE_TEXT, TRICKY_TEXT), min_size=1, max_size=30)
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _graph_ids(graph, texts: list[str]) -> list[list[int]]:
    return graph.tokenize(tf.constant(texts, dtype=tf.string)).to_list()


def _fn(graph):
    return tf.function(graph.tokenize, input_signature=[tf.TensorSpec([None], tf.string)])


@pytest.fixture(scope="module")
def gpt2_fn(gpt2_graph):
    """One traced tf.function for the module (tracing the merge loop takes seconds)."""
    return _fn(gpt2_graph)


# ----------------------------------------------------------------------------- GPT-2
def test_gpt2_verdict_paragraphs_and_whole(gpt2: BPETokenizer, gpt2_graph, gpt2_fn, verdict: str) -> None:
    paragraphs = [p + "\n\n" for p in verdict.split("\n\n")]
    texts = [verdict, *paragraphs]
    expected = [gpt2.encode(t) for t in texts]
    assert _graph_ids(gpt2_graph, texts) == expected
    assert gpt2_fn(tf.constant(texts)).to_list() == expected


def test_gpt2_adversarial(gpt2: BPETokenizer, gpt2_graph, gpt2_fn) -> None:
    expected = [gpt2.encode(t) for t in ADVERSARIAL]
    assert _graph_ids(gpt2_graph, ADVERSARIAL) == expected
    assert gpt2_fn(tf.constant(ADVERSARIAL)).to_list() == expected


@pytest.mark.reliability
@SETTINGS
@given(BATCH)
def test_gpt2_property(gpt2: BPETokenizer, gpt2_fn, property_examples, texts: list[str]) -> None:
    property_examples["GPT-2 BPE: in-graph ids == Python ids (tf.function)"] += len(texts)
    assert gpt2_fn(tf.constant(texts, dtype=tf.string)).to_list() == [gpt2.encode(t) for t in texts]


def test_gpt2_output_type(gpt2_graph) -> None:
    out = gpt2_graph.tokenize(tf.constant(["Hello world", ""]))
    assert isinstance(out, tf.RaggedTensor) and out.dtype == tf.int32
    assert out.to_list() == [[15496, 995], []]


def test_gpt2_detokenize_matches_python(gpt2: BPETokenizer, gpt2_graph, verdict: str) -> None:
    texts = [verdict[:2000], *ADVERSARIAL]
    ids = tf.ragged.constant([gpt2.encode(t) for t in texts], dtype=tf.int32)
    out = [s.decode("utf-8") for s in gpt2_graph.detokenize(ids).numpy()]
    assert out == texts
    dense = gpt2_graph.detokenize(tf.constant([[15496, 995], [50256, 995]], dtype=tf.int64)).numpy()
    assert dense.tolist() == [b"Hello world", b"<|endoftext|> world"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 50256), max_size=12))
def test_gpt2_detokenize_replaces_invalid_utf8_like_python(gpt2: BPETokenizer, gpt2_graph, ids) -> None:
    got = gpt2_graph.detokenize(tf.constant([ids], dtype=tf.int32, shape=[1, len(ids)])).numpy()[0]
    assert got.decode("utf-8") == gpt2.decode(ids)


def test_gpt2_detokenize_cut_character_and_out_of_range(gpt2: BPETokenizer, gpt2_graph) -> None:
    ids = gpt2.encode("é😀")[:-1]
    got = gpt2_graph.detokenize(tf.ragged.constant([ids, [15496, 60000, -3]])).numpy()
    assert got[0].decode("utf-8") == gpt2.decode(ids) and got[0].decode("utf-8").endswith("\ufffd")
    assert got[1].decode("utf-8") == "Hello\ufffd\ufffd"


def test_keras_hub_disagreement_is_real(gpt2: BPETokenizer) -> None:
    """Documents why graph.py does its own pre-tokenization (see its module docstring).

    If keras-hub starts matching GPT-2 here, the workaround may be dropped.
    """
    import keras_hub

    kh = keras_hub.tokenizers.BytePairTokenizer(
        vocabulary=gpt2.encoder,
        merges=[f"{a} {b}" for a, b in gpt2.merges],
        unsplittable_tokens=["<|endoftext|>"],
        _allow_python_workflow=False,
    )
    text = '.)\n\n"The'
    assert gpt2.encode(text) == [2014, 198, 198, 1, 464]
    kh_graph = tf.function(kh.tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
    assert kh_graph(tf.constant([text, "६ ६६"])).to_list() == [[2014, 628, 1, 464], [220]]


# ----------------------------------------------------------------------------- trained BPE
def test_trained_bpe_graph(trained_bpe: BPETokenizer, verdict: str) -> None:
    graph = trained_bpe.graph_tokenizer()
    texts = [verdict[:5000], *ADVERSARIAL]
    expected = [trained_bpe.encode(t) for t in texts]
    assert _fn(graph)(tf.constant(texts)).to_list() == expected
    out = graph.detokenize(tf.ragged.constant(expected)).numpy()
    assert [s.decode("utf-8") for s in out] == texts


@pytest.fixture(scope="module")
def trained_fn(trained_bpe: BPETokenizer):
    return _fn(trained_bpe.graph_tokenizer())


@pytest.mark.reliability
@SETTINGS
@given(BATCH)
def test_trained_bpe_graph_property(trained_bpe: BPETokenizer, trained_fn, property_examples, texts: list[str]) -> None:
    property_examples["trained byte-level BPE: in-graph ids == Python ids (tf.function)"] += len(texts)
    assert trained_fn(tf.constant(texts, dtype=tf.string)).to_list() == [trained_bpe.encode(t) for t in texts]


# ----------------------------------------------------------------------------- char
def test_char_graph_matches_python(shakespeare_char: CharTokenizer, shakespeare: str) -> None:
    graph = shakespeare_char.graph_tokenizer()
    texts = [
        shakespeare[:3000],
        "",
        "<|endoftext|>",
        "To be<|endoftext|><|endoftext|>or not",
        "<|endoftext"[:2],
    ]
    texts = [t for t in texts if all(c in shakespeare_char.chars for c in t.replace("<|endoftext|>", ""))]
    expected = [shakespeare_char.encode(t) for t in texts]
    assert graph.tokenize(tf.constant(texts)).to_list() == expected
    assert _fn(graph)(tf.constant(texts)).to_list() == expected
    back = graph.detokenize(tf.ragged.constant(expected, dtype=tf.int64)).numpy()
    assert [b.decode() for b in back] == texts


@pytest.mark.reliability
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(UNICODE_TEXT, min_size=1, max_size=10))
def test_char_graph_property_with_unk(property_examples, texts: list[str]) -> None:
    property_examples["char with an unk token: in-graph ids == Python ids"] += len(texts) + 1
    tok = CharTokenizer.train(["abc xyz é😀"], special_tokens=["<|endoftext|>"], unk_token="<unk>")
    graph = tok.graph_tokenizer()
    texts = [*texts, "a<|endoftext|>😀?"]
    assert graph.tokenize(tf.constant(texts)).to_list() == [tok.encode(t) for t in texts]


def test_char_graph_unknown_character_fails(shakespeare_char: CharTokenizer) -> None:
    graph = shakespeare_char.graph_tokenizer()
    with pytest.raises(tf.errors.InvalidArgumentError, match="not in the char vocabulary"):
        graph.tokenize(tf.constant(["Hello wörld"]))


def test_char_detokenize_out_of_range(shakespeare_char: CharTokenizer) -> None:
    graph = shakespeare_char.graph_tokenizer()
    out = graph.detokenize(tf.constant([[20, 60, -1]])).numpy()[0].decode()  # 60 = vocab_size
    assert out == shakespeare_char.decode([20]) + "\ufffd\ufffd"


# ----------------------------------------------------------------------------- SavedModel
@pytest.mark.parametrize("which", ["char", "bpe"])
def test_saved_model_roundtrip(
    which: str, tmp_path: Path, shakespeare_char: CharTokenizer, trained_bpe: BPETokenizer
) -> None:
    tok = shakespeare_char if which == "char" else trained_bpe
    module = tf.Module()
    module.tok = tok.graph_tokenizer()
    module.tokenize = tf.function(
        lambda s: module.tok.tokenize(s).to_tensor(default_value=-1),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    module.detokenize = tf.function(module.tok.detokenize, input_signature=[tf.TensorSpec([None, None], tf.int32)])
    tf.saved_model.save(module, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    text = "First Citizen:\nBefore we proceed any further, hear me speak.<|endoftext|>"
    ids = loaded.tokenize(tf.constant([text])).numpy()[0]
    assert ids.tolist() == tok.encode(text)
    back = loaded.detokenize(tf.constant(ids[np.newaxis], dtype=tf.int32)).numpy()[0]
    assert back.decode() == text


def test_nul_bytes_survive(gpt2: BPETokenizer, gpt2_graph) -> None:
    texts = ["a\x00b", "\x00", "x \x00\x00 y<|endoftext|>\x00"]
    assert gpt2_graph.tokenize(tf.constant(texts)).to_list() == [gpt2.encode(t) for t in texts]


def test_rank_must_be_one(gpt2_graph) -> None:
    from tfgpt.errors import TokenizerError

    with pytest.raises(TokenizerError, match="1-D batch"):
        gpt2_graph.tokenize(tf.constant("scalar"))


def test_several_special_tokens(shakespeare: str) -> None:
    tok = BPETokenizer.train([shakespeare[:20_000]], vocab_size=300, special_tokens=["<|endoftext|>", "<pad>"])
    texts = ["a<pad><pad> b<|endoftext|>", "<pad", "x <pad> y\n\n<|endoftext|><pad>"]
    graph = tok.graph_tokenizer()
    expected = [tok.encode(t) for t in texts]
    assert graph.tokenize(tf.constant(texts)).to_list() == expected
    assert [s.decode() for s in graph.detokenize(tf.ragged.constant(expected)).numpy()] == texts


def test_overlapping_special_tokens_longest_first(shakespeare: str) -> None:
    specials = ["<|a|>", "<|a|>b", "<|a|>bc", "<|endoftext|>"]
    tok = BPETokenizer.train([shakespeare[:20_000]], vocab_size=300, special_tokens=specials)
    ids = tok.special_tokens
    assert tok.encode("<|a|>b") == [ids["<|a|>b"]]
    assert tok.encode("<|a|>bc<|a|>") == [ids["<|a|>bc"], ids["<|a|>"]]
    texts = ["<|a|>b", "x<|a|>bc y<|a|>b", "<|a|><|a|>bcd <|endoftext|><|a|>", "<|a|", "no specials here", ""]
    expected = [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts) == expected
    assert tok.graph_tokenizer().tokenize(tf.constant(texts)).to_list() == expected
    assert [tok.decode(e) for e in expected] == texts
    char = CharTokenizer.train([shakespeare[:2000]], special_tokens=specials)
    assert char.encode("<|a|>b") == [char.special_tokens["<|a|>b"]]


# ----------------------------------------------------------------------------- bounded merge loop
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"


def _reference_bpe(piece: bytes, ids: dict[bytes, int]) -> list[int]:
    """tiktoken's rule, one merge at a time: merge the leftmost adjacent pair whose join has the lowest id."""
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        ranks = [ids.get(a + b, len(ids)) for a, b in zip(parts, parts[1:], strict=False)]
        best = min(ranks)
        if best == len(ids):
            break
        i = ranks.index(best)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return [ids[p] for p in parts]


def _chunked(piece: bytes, ids: dict[bytes, int], size: int) -> list[int]:
    """The documented rule for long pre-tokens: merge each ``size``-byte chunk on its own."""
    return [t for i in range(0, len(piece), size) for t in _reference_bpe(piece[i : i + size], ids)]


@pytest.fixture(scope="module")
def gpt2_ids(gpt2: BPETokenizer) -> dict[bytes, int]:
    return {b: i for i, b in enumerate(gpt2.token_bytes()) if i < 50256}


@pytest.mark.parametrize(
    ("name", "start", "size"),
    [("tinyshakespeare-64k.txt", 30_000, 6000), ("wizard_of_oz-20k.txt", 0, 20_000), ("the-verdict.txt", 0, 6000)],
)
def test_gpt2_fixture_corpora(gpt2: BPETokenizer, gpt2_fn, name: str, start: int, size: int) -> None:
    """Ordinary text (wizard_of_oz has 60-byte whitespace runs, its longest pre-tokens) is tiktoken-exact."""
    text = (CORPUS / name).read_text(encoding="utf-8")[start : start + size]
    lines = text.splitlines(keepends=True)
    texts = [text, *lines[:200]]
    assert gpt2_fn(tf.constant(texts)).to_list() == [gpt2.encode(t) for t in texts]


def test_reference_bpe_is_tiktoken(gpt2: BPETokenizer, gpt2_ids: dict[bytes, int]) -> None:
    """The test's own reference merges like tiktoken (so the chunk tests below check the documented rule)."""
    for word in ["Hello", " prestidigitation", " " * 40, "=" * 100, "aaaaaaaaaaaaa", "日本語のテキスト", "12345"]:
        assert _reference_bpe(word.encode(), gpt2_ids) == gpt2.encode(word)


def test_long_words_merge_in_512_byte_chunks(gpt2: BPETokenizer, gpt2_ids, gpt2_graph, gpt2_fn) -> None:
    """Pre-tokens over MAX_PIECE_BYTES are merged as independent 512-byte chunks (documented in graph.py)."""
    from tfgpt.tokenizers.graph import MAX_PIECE_BYTES

    assert MAX_PIECE_BYTES == 512
    rng = np.random.default_rng(0)
    letters = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 10_000))
    exact = letters[:512]  # exactly 512 bytes: still one piece, as tiktoken merges it
    cjk = "".join(chr(c) for c in rng.integers(0x4E00, 0x9FFF, 400))  # 1,200 bytes: chunks cut characters
    texts = [letters, exact, letters[:513], "x " + letters[:1500] + " y", "7" * 2000, cjk]
    got = gpt2_fn(tf.constant(texts)).to_list()
    assert got[1] == gpt2.encode(exact)
    assert got[0] == _chunked(letters.encode(), gpt2_ids, 512)
    assert got[2] == gpt2.encode(letters[:512]) + [gpt2.encode(letters[512])[0]]
    assert got[3] == gpt2.encode("x") + _chunked((" " + letters[:1500]).encode(), gpt2_ids, 512) + gpt2.encode(" y")
    assert got[4] == _chunked(b"7" * 2000, gpt2_ids, 512)
    assert got[5] == _chunked(cjk.encode(), gpt2_ids, 512)
    assert got[0] != gpt2.encode(letters)  # the documented difference from the Python tokenizer
    assert gpt2_graph.tokenize(tf.constant(texts[:1])).to_list() == got[:1]  # eager agrees
    assert gpt2_graph.detokenize(tf.ragged.constant(got)).numpy()[5].decode() == cjk  # bytes are all kept


def test_max_piece_bytes_applies_to_every_pre_token(gpt2: BPETokenizer, gpt2_ids, verdict: str) -> None:
    import regex

    from tfgpt.tokenizers.bpe import GPT2_PATTERN
    from tfgpt.tokenizers.graph import GraphBPETokenizer

    text = verdict[:3000] + " " + "=" * 30 + "  \n\n  aaaaaaaaaaaa 日本語のテキスト"
    expected = [t for m in regex.finditer(GPT2_PATTERN, text) for t in _chunked(m.group().encode(), gpt2_ids, 3)]
    got = GraphBPETokenizer(gpt2, max_piece_bytes=3).tokenize(tf.constant([text])).to_list()[0]
    assert got == expected
    with pytest.raises(TokenizerError, match="max_piece_bytes"):
        GraphBPETokenizer(gpt2, max_piece_bytes=0)


class _TinyVocab:
    """A vocabulary where "aba" (id 2) ranks before its part "ab" (id 3): one merge at a time is needed."""

    special_tokens: dict[str, int] = {}
    vocab_size = 4

    def token_bytes(self) -> list[bytes]:
        return [b"a", b"b", b"aba", b"ab"]


def test_all_at_once_only_where_tiktoken_agrees() -> None:
    from tfgpt.tokenizers.graph import GraphBPETokenizer, pair_merges

    keys, merged, all_at_once = pair_merges(_TinyVocab().token_bytes(), set())
    assert sorted(zip(keys, merged, strict=True)) == [(0 * 4 + 1, 3), (3 * 4 + 0, 2)]  # a+b → ab, ab+a → aba
    assert all_at_once == [True, True, True, False, True]
    ids = {b: i for i, b in enumerate(_TinyVocab().token_bytes())}
    texts = ["abab", "ababab", "abababab", "aab", "ba"]
    expected = [_reference_bpe(t.encode(), ids) for t in texts]
    assert expected[:2] == [[2, 1], [2, 1, 3]]  # merging every "ab" at once would give [3, 3], [3, 3, 3]
    assert GraphBPETokenizer(_TinyVocab()).tokenize(tf.constant(texts)).to_list() == expected


def test_runs_of_one_pair_merge_leftmost_first(gpt2: BPETokenizer, gpt2_fn) -> None:
    """Runs where every other pair merges in one step ("aaaa", "====") still give tiktoken's ids."""
    texts = ["a" * n for n in range(1, 40)] + ["=" * n for n in (7, 64, 129, 511)] + [" " * 300, "\n" * 99]
    assert gpt2_fn(tf.constant(texts)).to_list() == [gpt2.encode(t) for t in texts]
