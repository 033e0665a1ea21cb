"""``generate``: text in, text out, with the KV-cached compiled decode loop.

``generate_ids`` works on token ids in three named steps: prefill (the prompt into a fresh
KV cache), decode in the cache while it has room, then slide a block_size window.

Example:
    >>> model, tokenizer = tfgpt.load("runs/shakespeare")  # doctest: +SKIP
    >>> print(tfgpt.generate(model, tokenizer, "ROMEO:", max_new_tokens=100, top_k=40))  # doctest: +SKIP
"""

from __future__ import annotations

import codecs
import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tfgpt.errors import GenerationError
from tfgpt.generate.decode import Decoder, SamplingMode
from tfgpt.generate.sampling import MIN_TEMPERATURE
from tfgpt.seeds import seed32
from tfgpt.stops import cut_at_stop

MIN_BUCKET = 16


def _bucket(n: int, cap: int) -> int:
    """Round ``n`` up to a power of two (at least MIN_BUCKET), capped at ``cap``: few compiled shapes."""
    size = MIN_BUCKET
    while size < n:
        size *= 2
    return min(size, cap)


def _check_sampling(
    vocab_size: int, temperature: float, top_k: int | None, top_p: float | None, vocab_limit: int | None = None
) -> SamplingMode:
    if temperature is not None and not math.isfinite(temperature):
        raise GenerationError(f"temperature must be a finite number, got {temperature!r}")
    greedy = temperature is None or temperature < MIN_TEMPERATURE
    if vocab_limit is not None:
        if not 0 < vocab_limit <= vocab_size:
            raise GenerationError(f"vocab_limit must be in [1, {vocab_size}], got {vocab_limit}")
        vocab_size, vocab_limit = vocab_limit, (None if vocab_limit == vocab_size else vocab_limit)
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise GenerationError(f"top_k must be a positive integer, got {top_k!r}")
        if top_k > vocab_size:
            raise GenerationError(f"top_k ({top_k}) is larger than the vocabulary ({vocab_size} tokens)")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise GenerationError(f"top_p must be in (0, 1], got {top_p!r}")
    if greedy:
        return SamplingMode(greedy=True, vocab_limit=vocab_limit)
    return SamplingMode(
        greedy=False,
        top_k=None if top_k is None or top_k == vocab_size else top_k,
        use_top_p=top_p is not None and top_p < 1.0,
        vocab_limit=vocab_limit,
    )


@dataclasses.dataclass
class _Decoding:
    """One ``generate_ids`` call: the compiled functions, the sampling inputs and the state they advance."""

    decoder: Decoder
    mode: SamplingMode
    temperature: np.float32
    top_p: np.float32
    seed: np.int32
    eot: np.int32
    on_tokens: Callable[[np.ndarray], bool | None] | None
    logits: Any = None
    cache: Any = None
    done: np.ndarray = None
    pieces: list[np.ndarray] = dataclasses.field(default_factory=list)
    produced: int = 0
    stopped: bool = False

    def running(self, limit: int) -> bool:
        """Whether to produce more: under ``limit`` tokens, no stop from the callback, a row still going."""
        return self.produced < limit and not self.stopped and not self.done.all()

    def emit(self, block_ids: np.ndarray) -> None:
        """Keep a new ``[batch, k]`` block and hand it to ``on_tokens`` (True from it stops generation)."""
        self.pieces.append(block_ids)
        self.produced += block_ids.shape[1]
        self.stopped = bool(self.on_tokens(block_ids)) if self.on_tokens is not None else False

    def new_ids(self) -> np.ndarray:
        """Everything produced, ``[batch, produced]`` int32."""
        return np.concatenate(self.pieces, axis=1) if self.pieces else np.zeros((len(self.done), 0), np.int32)


def generate_ids(
    model: Any,
    prompt_ids: Sequence[Sequence[int]] | np.ndarray,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    eot_id: int | None = None,
    on_tokens: Callable[[np.ndarray], bool | None] | None = None,
    stream_chunk: int = 1,
    jit_compile: bool = True,
    vocab_limit: int | None = None,
) -> np.ndarray:
    """Generate up to ``max_new_tokens`` ids after each row of ``prompt_ids`` (rows of equal length).

    Returns ``[batch, n]`` int32 new ids (rows that hit ``eot_id`` are padded with it). With
    ``on_tokens``, the loop runs ``stream_chunk`` tokens per compiled call and hands each new
    ``[batch, k]`` block to the callback; returning True from it stops generation.
    ``vocab_limit`` keeps ids below it (the tokenizer's size when the model's vocabulary is padded).

    Example:
        >>> from tfgpt.config import GPTConfig
        >>> from tfgpt.model import GPT
        >>> model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=16))
        >>> generate_ids(model, [[1, 2, 3]], max_new_tokens=5, temperature=0).shape
        (1, 5)
    """
    ids = _check_prompt_ids(model.config, prompt_ids, max_new_tokens)
    mode = _check_sampling(model.config.vocab_size, temperature, top_k, top_p, vocab_limit)
    if max_new_tokens == 0:
        return np.zeros((ids.shape[0], 0), np.int32)
    run = _Decoding(
        Decoder.for_model(model, jit_compile=jit_compile), mode,
        temperature=np.float32(1.0 if mode.greedy else temperature),
        top_p=np.float32(1.0 if top_p is None else top_p),
        seed=seed32(seed),
        eot=np.int32(-1 if eot_id is None else eot_id),
        on_tokens=on_tokens,
    )
    max_len = _prefill(run, model, ids, max_new_tokens)
    length = ids.shape[1]
    _decode_in_cache(run, length, min(max_new_tokens, max_len - length), stream_chunk)
    _decode_sliding(run, ids, max_new_tokens, model.config.block_size)
    return run.new_ids()


def _check_prompt_ids(config: Any, prompt_ids: Any, max_new_tokens: int) -> np.ndarray:
    """The prompt as int32 ``[batch, length]``, checked, and cropped (with a warning) to block_size."""
    ids = np.asarray(prompt_ids, dtype=np.int32)
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise GenerationError("the prompt is empty: give at least one token")
    if max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens must be ≥ 0, got {max_new_tokens}")
    if ids.min() < 0 or ids.max() >= config.vocab_size:
        raise GenerationError(f"prompt token ids must be in [0, {config.vocab_size}), got {ids.min()}..{ids.max()}")
    block = config.block_size
    if ids.shape[1] > block:
        warnings.warn(
            f"prompt has {ids.shape[1]} tokens, more than block_size {block}: keeping the last {block}",
            stacklevel=3,
        )
        ids = ids[:, -block:]
    return ids


def _prefill(run: _Decoding, model: Any, ids: np.ndarray, max_new_tokens: int) -> int:
    """Run the prompt into a fresh cache; sets ``run.logits``/``cache``/``done``, returns the cache length.

    The cache holds prompt + new tokens rounded up to a power of two (at most block_size) and the
    prompt is right-padded to a power of two: few compiled shapes, and a short request reads a
    short cache.
    """
    if not model.built:
        model.build((None, None))
    batch, length = ids.shape
    block = model.config.block_size
    max_len = _bucket(length + max_new_tokens, block)
    padded = np.zeros((batch, min(_bucket(length, block), max_len)), np.int32)  # [batch, padded length]
    padded[:, :length] = ids
    cache = model.init_cache(batch, max_len)
    run.logits, run.cache = run.decoder.prefill()(padded, cache, np.int32(length - 1))
    run.done = np.zeros((batch,), bool)
    return max_len


def _decode_in_cache(run: _Decoding, start: int, in_cache: int, stream_chunk: int) -> None:
    """Phase 1: the compiled cached loop, while the cache has room (``in_cache`` tokens from ``start``).

    Without a callback one call produces everything; with one, ``stream_chunk`` tokens per call.
    """
    streaming = run.on_tokens is not None
    chunk = _bucket(max(1, min(stream_chunk if streaming else in_cache, in_cache)), 1 << 30)
    step_cap = max(1, stream_chunk) if streaming else chunk
    loop = run.decoder.loop(run.mode, chunk)
    while run.running(in_cache):
        n = min(step_cap, in_cache - run.produced)
        out, steps, run.logits, run.cache, done = loop(
            run.logits, run.cache, np.int32(start + run.produced), np.int32(n), run.temperature, run.top_p,
            run.seed, np.int32(run.produced), run.eot, run.done,
        )
        run.done = np.asarray(done)
        run.emit(np.asarray(out)[:, : int(np.asarray(steps))])


def _decode_sliding(run: _Decoding, ids: np.ndarray, max_new_tokens: int, block: int) -> None:
    """Phase 2: the text outgrew block_size: slide a block_size window, one token at a time."""
    if not run.running(max_new_tokens):
        return
    ctx = np.concatenate([ids] + run.pieces, axis=1)[:, -block:]  # [batch, block_size]
    slide = run.decoder.slide(run.mode)
    pad = max(int(run.eot), 0)
    while run.running(max_new_tokens):
        token, ctx, run.logits = slide(ctx, run.logits, run.temperature, run.top_p, run.seed, np.int32(run.produced))
        token = np.where(run.done, pad, np.asarray(token)).astype(np.int32)
        run.done = run.done | (token == run.eot)
        run.emit(token[:, None])


def _check_prompt(prompt: Any) -> str:
    if isinstance(prompt, bytes):
        try:
            prompt = prompt.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = prompt[e.start : e.start + 1]
            raise GenerationError(f"prompt is not valid UTF-8 (byte {e.start}: {bad!r})") from None
    if not isinstance(prompt, str):
        raise GenerationError(f"prompt must be a string, got {type(prompt).__name__}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise GenerationError(f"prompt is not valid UTF-8 (undecodable bytes at character {e.start})") from None
    if not prompt:
        raise GenerationError("the prompt is empty: give at least one character")
    return prompt


class _Streamer:
    """Turns new token ids into text deltas: UTF-8 safe, holding back possible stop-string prefixes."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], callback: Callable[[str], Any] | None) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.callback = callback
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, ids: list[int], final: bool = False) -> bool:
        eot = self.tokenizer.eot_id
        for i in ids:
            if eot is not None and i == eot:
                self.stopped = True
                break
            self.text += self.decoder.decode(self.tokenizer.decode_bytes([i]))
        if final or self.stopped:
            self.text += self.decoder.decode(b"", final=True)
        self.text, found = cut_at_stop(self.text, self.stop)
        self.stopped = self.stopped or found
        hold = 0 if (final or self.stopped) else max((len(s) - 1 for s in self.stop), default=0)
        upto = max(self.sent, len(self.text) - hold)
        if self.callback is not None and upto > self.sent:
            self.callback(self.text[self.sent:upto])
        self.sent = upto
        return self.stopped


def generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop: Sequence[str] | str | None = None,
    stream: Callable[[str], Any] | None = None,
    jit_compile: bool = True,
) -> str:
    """Continue ``prompt`` with up to ``max_new_tokens`` tokens and return the new text.

    ``temperature`` ≤ 0 (or below ``MIN_TEMPERATURE``) means greedy. Sampling is reproducible for a
    ``seed``. Generation stops at the tokenizer's end-of-text token or at the first ``stop`` string
    (not included). When the text outgrows ``block_size`` the context is cropped to the last
    ``block_size`` tokens.
    ``stream`` receives text deltas as they are produced.

    Example:
        >>> from tfgpt.config import GPTConfig
        >>> from tfgpt.model import GPT
        >>> from tfgpt.tokenizers import CharTokenizer
        >>> tokenizer = CharTokenizer.train(["ROMEO: hello there"])
        >>> model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
        >>> text = generate(model, tokenizer, "ROMEO:", max_new_tokens=8, temperature=0.8, top_k=4, seed=1)
        >>> len(text) <= 8 and set(text) <= set("ROMEO: hello there")
        True
    """
    prompt = _check_prompt(prompt)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    ids = tokenizer.encode(prompt)
    if not ids:
        raise GenerationError("the prompt encodes to no tokens")
    streamer = _Streamer(tokenizer, stops, stream)

    def on_tokens(block: np.ndarray) -> bool:
        return streamer.feed([int(t) for t in block[0]])

    generate_ids(
        model, [ids], max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        seed=seed, eot_id=tokenizer.eot_id, on_tokens=on_tokens,
        vocab_limit=min(tokenizer.vocab_size, model.config.vocab_size),
        stream_chunk=1 if stream is not None else 64 if stops else max(1, max_new_tokens),
        jit_compile=jit_compile,
    )
    streamer.feed([], final=True)
    return streamer.text
