"""``generate``: text in, text out, with the KV-cached compiled decode loop.

Example:
    >>> model, tokenizer = tfgpt.load("runs/shakespeare")
    >>> print(tfgpt.generate(model, tokenizer, "ROMEO:", max_new_tokens=100, temperature=0.8, top_k=40))
"""

from __future__ import annotations

import codecs
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tfgpt.errors import GenerationError
from tfgpt.generate.decode import Decoder, SamplingMode
from tfgpt.generate.sampling import MIN_TEMPERATURE
from tfgpt.seeds import seed32

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
    """
    config = model.config
    ids = np.asarray(prompt_ids, dtype=np.int32)
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise GenerationError("the prompt is empty: give at least one token")
    if max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens must be ≥ 0, got {max_new_tokens}")
    if ids.min() < 0 or ids.max() >= config.vocab_size:
        raise GenerationError(f"prompt token ids must be in [0, {config.vocab_size}), got {ids.min()}..{ids.max()}")
    mode = _check_sampling(config.vocab_size, temperature, top_k, top_p, vocab_limit)
    block = config.block_size
    if ids.shape[1] > block:
        warnings.warn(
            f"prompt has {ids.shape[1]} tokens, more than block_size {block}: keeping the last {block}",
            stacklevel=2,
        )
        ids = ids[:, -block:]
    batch, length = ids.shape
    if max_new_tokens == 0:
        return np.zeros((batch, 0), np.int32)

    if not model.built:
        model.build((None, None))
    decoder = Decoder.for_model(model, jit_compile=jit_compile)
    max_len = _bucket(length + max_new_tokens, block)
    pad_len = min(_bucket(length, block), max_len)
    padded = np.zeros((batch, pad_len), np.int32)
    padded[:, :length] = ids
    cache = model.init_cache(batch, max_len, per_layer=True)
    logits, cache = decoder.prefill()(padded, cache, np.int32(length - 1))

    temp = np.float32(1.0 if mode.greedy else temperature)
    p = np.float32(1.0 if top_p is None else top_p)
    seed_t = seed32(seed)
    eot = np.int32(-1 if eot_id is None else eot_id)
    done = np.zeros((batch,), bool)
    pieces: list[np.ndarray] = []
    produced = 0

    def emit(block_ids: np.ndarray) -> bool:
        pieces.append(block_ids)
        return bool(on_tokens(block_ids)) if on_tokens is not None else False

    # Phase 1: cached decoding while the cache has room.
    in_cache = min(max_new_tokens, max_len - length)
    chunk = _bucket(max(1, min(stream_chunk if on_tokens is not None else in_cache, in_cache)), 1 << 30)
    step_cap = max(1, stream_chunk) if on_tokens is not None else chunk
    loop = decoder.loop(mode, chunk)
    stop = False
    while produced < in_cache and not stop and not done.all():
        n = min(step_cap, in_cache - produced)
        out, steps, logits, cache, done_t = loop(
            logits, cache, np.int32(length + produced), np.int32(n), temp, p, seed_t,
            np.int32(produced), eot, done,
        )
        steps = int(np.asarray(steps))
        done = np.asarray(done_t)
        produced += steps
        stop = emit(np.asarray(out)[:, :steps])
    # Phase 2: the text outgrew block_size: slide a block_size window, one token at a time.
    if produced < max_new_tokens and not stop and not done.all():
        history = np.concatenate([ids] + pieces, axis=1)[:, -block:]
        slide = decoder.slide(mode)
        ctx = history
        while produced < max_new_tokens and not stop and not done.all():
            token, ctx, logits = slide(ctx, logits, temp, p, seed_t, np.int32(produced))
            token = np.asarray(token)
            token = np.where(done, max(int(eot), 0), token).astype(np.int32)
            done = done | (token == eot)
            produced += 1
            stop = emit(token[:, None])
    return np.concatenate(pieces, axis=1) if pieces else np.zeros((batch, 0), np.int32)


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
        for s in self.stop:
            at = self.text.find(s)
            if at >= 0:
                self.text = self.text[:at]
                self.stopped = True
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
        >>> text = generate(model, tokenizer, "ROMEO:", max_new_tokens=50, temperature=0.8, top_k=40)
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
