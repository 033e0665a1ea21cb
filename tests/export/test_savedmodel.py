"""tfgpt.export.savedmodel: the signatures through the TF1 session loader, bad requests, sampling.

One session per export serves the signature tests (``sm_session``: loading and a first run take seconds);
the ``logits`` test goes through :func:`session_run`, a fresh session per call."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from export_tiny_run import graph_ops, sm_dir

import tfgpt
from tfgpt.config import GPTConfig
from tfgpt.export.graph_decode import fast_step_supported
from tfgpt.export.savedmodel import ServingModule
from tfgpt.export.verify import saved_model_cli_ids, session_run
from tfgpt.model import GPT
from tfgpt.tokenizers import CharTokenizer


def test_graph_has_no_xla_or_python_ops(exported):
    ops = graph_ops(sm_dir(exported))
    assert not [o for o in ops if o.startswith("Xla") or "PyFunc" in o], ops
    assert "TensorScatterUpdate" in ops  # the non-XLA KV-cache write
    assert "BatchMatMulV3" in ops  # decode_step's products (left alone by the oneDNN rewrite)


def test_logits_signature_matches_keras(exported, loaded):
    model, _ = loaded
    ids = np.array([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]], np.int32)
    got = session_run(sm_dir(exported), "logits", {"ids": ids})["logits"]
    assert got.shape == (2, 5, model.config.vocab_size)
    assert np.max(np.abs(got - np.asarray(model(ids)))) <= 1e-5


def test_serving_default_batch_of_different_lengths_equals_per_prompt(sm_session, loaded):
    model, tok = loaded
    prompts = ["ROMEO:", "The quick brown", "w", "hello world"]
    got = sm_session.run("serving_default", {"prompts": np.array(prompts, object), "max_new_tokens": 10})
    expected = [tfgpt.generate(model, tok, p, max_new_tokens=10, temperature=0) for p in prompts]
    assert [c.decode() for c in got["completions"]] == expected
    assert got["ids"].shape == (4, 10) and list(got["num_tokens"]) == [10] * 4
    for row, text in zip(got["ids"], expected, strict=True):
        assert tok.decode([int(t) for t in row if t >= 0]) == text


def test_serving_default_equal_lengths_batch_and_defaults(sm_session, loaded):
    model, tok = loaded
    prompts = ["hello", "world"]  # equal token lengths: one batched decode
    got = sm_session.run("serving_default", {"prompts": np.array(prompts, object)})  # defaults
    # default max_new_tokens 32 is clipped to block_size - 1 = 31; the prompt keeps its last token
    assert got["ids"].shape == (2, 31)
    expected = [tfgpt.generate(model, tok, p[-1:], max_new_tokens=31, temperature=0) for p in prompts]
    assert [c.decode() for c in got["completions"]] == expected


def test_sampling_is_reproducible_for_a_seed_and_respects_top_k(sm_session, loaded):
    model, tok = loaded
    feeds = {"prompts": np.array(["ROMEO:"], object), "max_new_tokens": 12, "temperature": 0.9, "top_k": 1, "seed": 7}
    top1 = sm_session.run("serving_default", feeds)["completions"][0].decode()
    assert top1 == tfgpt.generate(model, tok, "ROMEO:", max_new_tokens=12, temperature=0)  # top_k=1 is greedy
    feeds["top_k"] = 0
    feeds["temperature"] = 5.0
    a = sm_session.run("serving_default", feeds)["completions"][0].decode()
    assert a == sm_session.run("serving_default", feeds)["completions"][0].decode()
    feeds["seed"] = 8
    assert a != sm_session.run("serving_default", feeds)["completions"][0].decode()


def _complete(session, prompts, max_new, temperature, top_k, seed) -> dict:
    feeds = {"prompts": np.array(prompts, object), "max_new_tokens": np.array(max_new, np.int32),
             "temperature": np.array(temperature, np.float32), "top_k": np.array(top_k, np.int32),
             "seed": np.array(seed, np.int32)}
    return session.run("complete", feeds)


def test_complete_gives_each_row_what_it_gets_alone(sm_session):
    rows = [("ROMEO:", 12, 1.5, 0, 11), ("The quick brown", 5, 0.0, 0, 0), ("w", 20, 1.0, 4, 3),
            ("hello world", 0, 1.0, 0, 5), ("JULIET: what light", 9, 2.0, 0, 11)]
    together = _complete(sm_session, *map(list, zip(*rows, strict=True)))
    assert together["ids"].shape == (5, 20)
    sampled = 0
    for i, row in enumerate(rows):
        alone = _complete(sm_session, *([v] for v in row))
        n = row[1]
        assert alone["ids"].shape == (1, n)
        assert together["ids"][i, :n].tolist() == alone["ids"][0].tolist()
        assert (together["ids"][i, n:] == -1).all() and together["num_tokens"][i] == alone["num_tokens"][0]
        assert together["completions"][i] == alone["completions"][0]
        sampled += len(set(alone["ids"][0].tolist())) > 1 and row[2] > 0
    assert sampled >= 2  # the sampled rows are not a repeated character: the comparison can fail


def test_serving_default_rows_are_complete_rows_seeded_seed_plus_row(sm_session):
    prompts = ["ROMEO:", "w", "hello"]
    feeds = {"prompts": np.array(prompts, object), "max_new_tokens": 10, "temperature": 1.5, "top_k": 0, "seed": 40}
    got = sm_session.run("serving_default", feeds)
    rows = _complete(sm_session, prompts, [10] * 3, [1.5] * 3, [0] * 3, [40, 41, 42])
    assert got["ids"].tolist() == rows["ids"].tolist()
    assert len({tuple(r) for r in got["ids"].tolist()}) == 3


def test_complete_needs_one_setting_per_prompt(sm_session):
    with pytest.raises(tf.errors.InvalidArgumentError, match="one max_new_tokens, temperature, top_k and seed"):
        _complete(sm_session, ["a", "b"], [4], [0.0, 0.0], [0, 0], [0, 0])


def test_generate_ids_signature_and_saved_model_cli(exported, sm_session, loaded):
    model, tok = loaded
    ids = tok.encode("JULIET: ")
    got = sm_session.run("generate_ids", {"ids": np.array([ids], np.int32), "max_new_tokens": 8})
    expected = tfgpt.generate_ids(model, [ids], max_new_tokens=8, temperature=0)[0].tolist()
    assert got["ids"][0].tolist() == expected
    assert saved_model_cli_ids(sm_dir(exported), ids, 8) == expected


def test_padded_vocabulary_ids_are_never_produced(padded_exported, padded_session):
    out, _ = padded_exported
    model, tok = tfgpt.load(out.parent / "run")
    prompts = ["ROMEO:", "hello"]
    for p in prompts:  # unmasked, the padded ids would win: this test can fail
        assert int(np.argmax(model(np.array([tok.encode(p)], np.int32))[0, -1])) >= tok.vocab_size
    expected = [tfgpt.generate(model, tok, p, max_new_tokens=8, temperature=0) for p in prompts]
    feeds = {"prompts": np.array(prompts, object), "max_new_tokens": 8}
    got = padded_session.run("serving_default", feeds)["completions"]
    assert [c.decode() for c in got] == expected
    for seed in range(3):
        sampled = {**feeds, "temperature": 1.0, "seed": seed}
        ids = padded_session.run("serving_default", sampled)["ids"]
        assert ids.max() < tok.vocab_size and (ids >= 0).sum() > 0
        ids = padded_session.run("generate_ids", {"ids": np.array([tok.encode("hello")], np.int32),
                                                  "max_new_tokens": 8, "temperature": 1.0,
                                                  "top_k": tok.vocab_size + 10, "seed": seed})["ids"]
        assert ids.max() < tok.vocab_size


def test_long_prompt_is_cropped_to_fit_the_cache(sm_session, loaded):
    model, tok = loaded
    long = "the quick brown fox " * 5  # 100 chars > block_size 32
    got = sm_session.run("serving_default", {"prompts": np.array([long], object), "max_new_tokens": 6})
    # cropped to the last block_size - 6 tokens, then 6 new ones
    expected = tfgpt.generate(model, tok, long[-(32 - 6):], max_new_tokens=6, temperature=0)
    assert got["completions"][0].decode() == expected
    feeds = {"prompts": np.array(["ab"], object), "max_new_tokens": 999}
    huge = sm_session.run("serving_default", feeds)
    assert huge["ids"].shape == (1, 31)  # clipped to block_size - 1


@pytest.mark.parametrize(
    ("prompt", "message"),
    [(b"\xff\xfeROMEO", "not valid UTF-8"), (b"", "encodes to no tokens"), ("ROMEO: \u2603".encode(), "vocabulary")],
)
def test_bad_prompts_fail_clearly(sm_session, prompt, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        sm_session.run("serving_default", {"prompts": np.array([prompt], object)})


def test_out_of_vocab_ids_fail_clearly(sm_session):
    with pytest.raises(tf.errors.InvalidArgumentError, match="ids must be in"):
        sm_session.run("generate_ids", {"ids": np.array([[999]], np.int32)})


def test_variables_are_saved_once(exported, loaded):
    model, _ = loaded  # the module tracks the model's variables once (not again under model/...)
    keys = [k for k, _ in tf.train.list_variables(str(sm_dir(exported) / "variables" / "variables"))]
    keys = [k for k in keys if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert len(keys) == len(model.variables), keys


@pytest.mark.filterwarnings("ignore:Layer .* does not have a `quantize` method")
def test_quantized_model_decodes_through_the_models_own_call():
    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16))
    model.build((None, None))
    tok = CharTokenizer.train(["".join(chr(48 + i) for i in range(40))])
    ids = np.array([[1, 2, 3]], np.int32)

    def decode(module: ServingModule) -> list[int]:  # in process, all inputs given
        greedy = (tf.constant(6), tf.constant(0.0), tf.constant(0), tf.constant(0))
        return module.generate_ids(tf.constant(ids), *greedy)["ids"].numpy()[0].tolist()

    float_ids = decode(ServingModule(model, tok))
    assert float_ids == tfgpt.generate_ids(model, ids, max_new_tokens=6, temperature=0)[0].tolist()
    model.quantize("int8")
    assert not fast_step_supported(model)  # int8 kernels: decode_step does not read them
    expected = tfgpt.generate_ids(model, ids, max_new_tokens=6, temperature=0, jit_compile=False)
    module = ServingModule(model, tok)
    assert decode(module) == expected[0].tolist()
    rows = (tf.constant(["123", "45678"]), tf.constant([6, 3]), tf.constant([0.0, 1.0]), tf.constant([0, 0]),
            tf.constant([0, 5]))  # rows of different lengths: decoded one by one through the model's call
    together = module.complete(*rows)["ids"].numpy()
    assert together[0].tolist() == expected[0].tolist()
    alone = module.complete(*(t[1:] for t in rows))["ids"].numpy()
    assert together[1].tolist() == alone[0].tolist() + [-1] * 3


class _EotTokenizer:
    """``tok`` with ``eot_id`` set: what ServingModule reads from a tokenizer."""

    def __init__(self, tok, eot_id: int) -> None:
        self.vocab_size, self.eot_id, self._tok = tok.vocab_size, eot_id, tok

    def graph_tokenizer(self):
        return self._tok.graph_tokenizer()


def test_end_of_text_inside_a_later_chunk_stops_each_row_where_it_first_appears(loaded):
    model, tok = loaded
    ids = tf.constant([tok.encode("ROMEO:"), tok.encode("JULIET")], tf.int32)
    sampled = (tf.constant(40), tf.constant(1.0), tf.constant(0), tf.constant(3))  # seeded: reproducible
    plain = ServingModule(model, tok)  # held: a tf.function method keeps only a weak reference to its module
    free = plain.generate_ids(ids, *sampled)["ids"].numpy()
    first = {}
    for i, t in enumerate(free[0].tolist()):
        first.setdefault(t, i)
    eot = max(first, key=first.get)  # the id row 0 makes last for the first time
    assert first[eot] > 16  # past the first chunk of DECODE_CHUNK = 16 steps
    stopping = ServingModule(model, _EotTokenizer(tok, eot))
    got = stopping.generate_ids(ids, *sampled)
    for row, want, count in zip(got["ids"].numpy(), free, got["num_tokens"].numpy(), strict=True):
        stop = want.tolist().index(eot) if eot in want else len(want)
        assert row[:stop].tolist() == want[:stop].tolist() and count == stop
        assert (row[stop:] == -1).all()
