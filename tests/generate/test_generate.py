"""generate / generate_ids: cache equivalence with naive loops (shift and slide past the block), streaming, stops,
bad input."""

import keras
import numpy as np
import pytest

from tfgpt.config import GPTConfig
from tfgpt.errors import GenerationError
from tfgpt.generate import generate, generate_ids
from tfgpt.model import GPT
from tfgpt.tokenizers import CharTokenizer

TEXT = "hello world, how are you?\nfine thanks.\n"


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.train([TEXT], special_tokens=("<|endoftext|>",))


@pytest.fixture(scope="module")
def model(tokenizer):
    keras.utils.set_random_seed(0)
    m = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=24, n_layer=2, n_head=2, n_embd=32))
    m.build((None, None))
    return m


def naive_greedy(model, ids, n):
    ids = np.asarray(ids, np.int32)
    for _ in range(n):
        logits = np.asarray(model(ids[:, -model.config.block_size :]))[:, -1]
        ids = np.concatenate([ids, logits.argmax(-1)[:, None].astype(np.int32)], 1)
    return ids[:, -n:]


def naive_shift_greedy(model, ids, n):
    """The shift semantics, uncached: a window that restarts from the last half block plus the overflowing token."""
    block = model.config.block_size
    text, start = [int(t) for t in ids[0]], 0
    for _ in range(n):
        token = int(np.asarray(model(np.array([text[start:]], np.int32)))[0, -1].argmax())
        text.append(token)
        if len(text) - start > block:
            start = len(text) - block // 2 - 1
    return np.array([text[-n:]], np.int32)


@pytest.mark.parametrize("n", [1, 5, 19, 40])
def test_greedy_slide_equals_naive_crop_including_past_block_size(model, n):
    prompt = np.array([[3, 1, 4, 1, 5]], np.int32)
    np.testing.assert_array_equal(generate_ids(model, prompt, n, temperature=0, context="slide"),
                                  naive_greedy(model, prompt, n))


@pytest.mark.parametrize("n", [20, 70])  # the first shift, and two
def test_greedy_shift_equals_its_naive_definition_past_block_size(model, n):
    prompt = np.array([[3, 1, 4, 1, 5]], np.int32)
    np.testing.assert_array_equal(generate_ids(model, prompt, n, temperature=0), naive_shift_greedy(model, prompt, n))


def test_shift_and_slide_agree_while_the_text_fits_and_differ_after(model):
    prompt = np.array([[3, 1, 4, 1, 5], [2, 7, 1, 8, 2]], np.int32)  # 5 + 19 = block_size 24
    kw = dict(temperature=0.8, top_k=6, seed=4)
    fits = [generate_ids(model, prompt, 19, context=c, **kw) for c in ("shift", "slide")]
    np.testing.assert_array_equal(fits[0], fits[1])
    past = [generate_ids(model, prompt, 60, context=c, **kw) for c in ("shift", "slide")]
    np.testing.assert_array_equal(past[0][:, :20], past[1][:, :20])  # token 20 is still chosen from the whole block
    assert (past[0] != past[1]).any()


@pytest.mark.parametrize("context", ["shift", "slide"])
def test_streaming_past_the_block_equals_one_call_in_few_calls(model, context):
    prompt = np.array([[1, 2, 3]], np.int32)
    kw = dict(temperature=0.9, top_p=0.9, seed=5, context=context)
    blocks = []
    out = generate_ids(model, prompt, 200, on_tokens=blocks.append, stream_chunk=16, **kw)
    np.testing.assert_array_equal(out, generate_ids(model, prompt, 200, **kw))
    assert [b.shape[1] for b in blocks[:5]] == [1, 2, 4, 8, 6]  # the cache phase: 21 tokens after the prompt
    assert len(blocks) <= 30 and sum(b.shape[1] for b in blocks) == 200  # a compiled call per chunk, not per token


def test_bad_context_and_stream_chunk_are_refused(model):
    with pytest.raises(GenerationError, match="context must be one of shift, slide, got 'crop'"):
        generate_ids(model, [[1]], 3, context="crop")
    with pytest.raises(GenerationError, match="stream_chunk must be a positive integer, got 0"):
        generate_ids(model, [[1]], 3, stream_chunk=0)


def test_batch_rows_are_independent(model):
    prompts = np.array([[3, 1, 4], [2, 7, 1]], np.int32)
    both = generate_ids(model, prompts, 12, temperature=0)
    np.testing.assert_array_equal(both[1:], generate_ids(model, prompts[1:], 12, temperature=0))


def test_streaming_chunks_equal_one_call(model):
    prompt = np.array([[1, 2, 3]], np.int32)
    blocks = []
    out = generate_ids(model, prompt, 30, temperature=0.9, top_k=5, seed=3,
                       on_tokens=blocks.append, stream_chunk=1)
    assert all(b.shape == (1, 1) for b in blocks) and len(blocks) == 30
    np.testing.assert_array_equal(out, generate_ids(model, prompt, 30, temperature=0.9, top_k=5, seed=3))


def test_a_callback_returning_true_stops_generation(model):
    prompt = np.array([[1, 2, 3]], np.int32)
    blocks = []
    out = generate_ids(model, prompt, 30, temperature=0, on_tokens=lambda b: blocks.append(b) or len(blocks) == 3,
                       stream_chunk=2)
    assert [b.shape for b in blocks] == [(1, 1), (1, 2), (1, 2)]  # the first token alone, then stream_chunk
    np.testing.assert_array_equal(out, naive_greedy(model, prompt, 5))


def test_zero_new_tokens_gives_an_empty_block(model):
    assert generate_ids(model, [[1, 2], [3, 4]], 0).shape == (2, 0)


def test_seed_reproducibility_and_variation(model):
    prompt = np.array([[1, 2, 3]], np.int32)
    a = generate_ids(model, prompt, 20, temperature=1.0, top_p=0.9, seed=1)
    b = generate_ids(model, prompt, 20, temperature=1.0, top_p=0.9, seed=1)
    c = generate_ids(model, prompt, 20, temperature=1.0, top_p=0.9, seed=2)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_seeds_beyond_int32_wrap_instead_of_overflowing(model):
    prompt = np.array([[1, 2, 3]], np.int32)
    big = generate_ids(model, prompt, 12, temperature=1.0, seed=2**31 + 5)  # e.g. `seed + turn` in a chat
    np.testing.assert_array_equal(big, generate_ids(model, prompt, 12, temperature=1.0, seed=-(2**31) + 5))
    np.testing.assert_array_equal(
        generate_ids(model, prompt, 12, temperature=1.0, seed=2**32 + 7),
        generate_ids(model, prompt, 12, temperature=1.0, seed=7),
    )
    with pytest.raises(GenerationError, match="seed"):
        generate_ids(model, prompt, 3, temperature=1.0, seed=1.5)


def test_vanishing_temperature_samples_greedily(model):
    prompt = np.array([[1, 2, 3]], np.int32)
    greedy = generate_ids(model, prompt, 10, temperature=0)
    # 1e-50 is 0 in float32: logits / T would be inf/NaN and argmax would return token 0
    np.testing.assert_array_equal(generate_ids(model, prompt, 10, temperature=1e-50, seed=3), greedy)
    with pytest.raises(GenerationError, match="temperature"):
        generate_ids(model, prompt, 3, temperature=float("nan"))


def test_no_retrace_per_token_or_per_call(model):
    from tfgpt.generate.decode import Decoder

    prompt = np.array([[1, 2, 3]], np.int32)
    generate_ids(model, prompt, 10, temperature=0)
    decoder = Decoder.for_model(model)
    fns = dict(decoder._fns)
    traces = {k: f.experimental_get_tracing_count() for k, f in fns.items()}
    generate_ids(model, np.array([[4, 5, 6]], np.int32), 9, temperature=0)
    generate_ids(model, prompt, 12, temperature=0)
    assert {k: f.experimental_get_tracing_count() for k, f in fns.items()} == traces


def test_stops_at_end_of_text(tokenizer):
    keras.utils.set_random_seed(0)
    m = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=24, n_layer=1, n_head=1, n_embd=8))
    m.build((None, None))
    # Final LayerNorm outputs wte[eot] at every position, so greedy always picks end-of-text.
    eot_row = np.asarray(m.wte.embeddings)[tokenizer.eot_id]
    m.ln_f.gamma.assign(np.zeros_like(eot_row))
    m.ln_f.beta.assign(10 * eot_row)
    ids = generate_ids(m, [[1, 2]], 10, temperature=0, eot_id=tokenizer.eot_id)
    assert ids.tolist() == [[tokenizer.eot_id]]
    assert generate(m, tokenizer, "hello", max_new_tokens=10, temperature=0) == ""


def test_generate_text_stream_and_stop(model, tokenizer):
    full = generate(model, tokenizer, "hello", max_new_tokens=30, temperature=0)
    assert isinstance(full, str) and len(full) <= 30
    pieces = []
    streamed = generate(model, tokenizer, "hello", max_new_tokens=30, temperature=0, stream=pieces.append)
    assert streamed == full and "".join(pieces) == full
    if len(full) > 3:
        stop = full[2:4]
        cut = generate(model, tokenizer, "hello", max_new_tokens=30, temperature=0, stop=[stop])
        assert cut == full[: full.find(stop)]
        pieces = []
        generate(model, tokenizer, "hello", max_new_tokens=30, temperature=0, stop=stop, stream=pieces.append)
        assert "".join(pieces) == cut


def test_bad_input_gives_clear_errors(model, tokenizer):
    with pytest.raises(GenerationError, match="empty"):
        generate(model, tokenizer, "")
    with pytest.raises(GenerationError, match="UTF-8"):
        generate(model, tokenizer, b"hel\xfflo")
    with pytest.raises(GenerationError, match="top_k"):
        generate(model, tokenizer, "hello", top_k=tokenizer.vocab_size + 1)
    with pytest.raises(GenerationError, match="top_p"):
        generate(model, tokenizer, "hello", top_p=0.0)
    with pytest.raises(GenerationError, match="ids"):
        generate_ids(model, [[999]], 3)
    # temperature <= 0 is greedy, not an error
    assert generate(model, tokenizer, "hello", max_new_tokens=5, temperature=-1) == generate(
        model, tokenizer, "hello", max_new_tokens=5, temperature=0
    )


def test_prompt_longer_than_block_size_is_cropped_with_a_warning(model, tokenizer):
    long_prompt = np.arange(40, dtype=np.int32)[None] % tokenizer.vocab_size
    with pytest.warns(UserWarning, match="keeping the last 24") as record:
        out = generate_ids(model, long_prompt, 4, temperature=0)
    assert record[0].filename == __file__  # the warning points at the caller
    np.testing.assert_array_equal(out, naive_greedy(model, long_prompt[:, -24:], 4))


def test_padded_model_vocabulary_never_yields_unknown_ids(tokenizer):
    keras.utils.set_random_seed(0)
    padded = tokenizer.vocab_size + 40  # like gpt2's 50257 padded to 50304
    m = GPT(GPTConfig(vocab_size=padded, block_size=24, n_layer=1, n_head=2, n_embd=16))
    m.build((None, None))
    # Make the padding ids the most likely ones: without the limit greedy would pick them.
    emb = np.asarray(m.wte.embeddings).copy()
    emb[tokenizer.vocab_size :] *= 50
    m.wte.embeddings.assign(emb)
    free = generate_ids(m, [[1, 2]], 20, temperature=1.0, seed=0)
    assert (free >= tokenizer.vocab_size).any()
    for kwargs in ({"temperature": 0}, {"temperature": 1.0, "top_k": 5}, {"temperature": 1.0, "top_p": 0.9}):
        ids = generate_ids(m, [[1, 2]], 20, vocab_limit=tokenizer.vocab_size, **kwargs)
        assert (ids < tokenizer.vocab_size).all()
    text = generate(m, tokenizer, "hello", max_new_tokens=20, temperature=1.0)
    assert isinstance(text, str)
