"""``generate``: text in, text out, with the KV-cached compiled decode loop.

``generate_ids`` works on token ids in three named steps: prefill (the prompt into a fresh
KV cache), decode in the cache while it has room, then, once the text outgrows ``block_size``,
go on in one of two ways (``context``):

- ``"shift"`` (the default): keep the last ``block_size // 2`` tokens, prefill them into a fresh
  cache and decode in it again. Each token sees between half a block and a whole block of context;
  the token that overflows is still chosen with the whole block in view. Compiled loops
  throughout: one prefill per half block, never a call per token.
- ``"slide"``: nanoGPT's exact cropping, every token from the last ``block_size`` tokens, by
  re-running the whole window per token (no cache) in a compiled loop: exact, and slower.

Both agree token for token while the text fits the block.

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
CONTEXTS = ("shift", "slide")


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
    stream_chunk: int = 1
    pieces: list[np.ndarray] = dataclasses.field(default_factory=list)
    produced: int = 0
    stopped: bool = False
    _grow: int = 1

    def running(self, limit: int) -> bool:
        """Whether to produce more: under ``limit`` tokens, no stop from the callback, a row still going."""
        return self.produced < limit and not self.stopped and not self.done.all()

    def chunk(self, n_tokens: int) -> int:
        """The compiled loop's output width for a phase of ``n_tokens``: all of them, or one stream chunk."""
        width = min(self.stream_chunk, n_tokens) if self.on_tokens is not None else n_tokens
        return _bucket(max(1, width), 1 << 30)

    def next_steps(self, left: int) -> int:
        """Tokens for the next compiled call: all ``left``, or, streaming, 1, 2, 4, ... up to ``stream_chunk``
        (the first text comes after one token, later calls amortise their overhead)."""
        if self.on_tokens is None:
            return left
        n, self._grow = min(self._grow, self.stream_chunk, left), min(2 * self._grow, self.stream_chunk)
        return n

    def emit(self, block_ids: np.ndarray) -> None:
        """Keep a new ``[batch, k]`` block and hand it to ``on_tokens`` (True from it stops generation)."""
        self.pieces.append(block_ids)
        self.produced += block_ids.shape[1]
        self.stopped = bool(self.on_tokens(block_ids)) if self.on_tokens is not None else False

    def tail(self, ids: np.ndarray, n: int) -> np.ndarray:
        """The last ``n`` ids of prompt + output, ``[batch, n]``, from only as many pieces as it takes."""
        parts, have = [], 0
        for piece in reversed(self.pieces):
            if have >= n:
                break
            parts.append(piece)
            have += piece.shape[1]
        if have < n:
            parts.append(ids)
        return np.concatenate(parts[::-1], axis=1)[:, -n:]

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
    stream_chunk: int = 16,
    jit_compile: bool = True,
    vocab_limit: int | None = None,
    context: str = "shift",
) -> np.ndarray:
    """Generate up to ``max_new_tokens`` ids after each row of ``prompt_ids`` (rows of equal length).

    Returns ``[batch, n]`` int32 new ids (rows that hit ``eot_id`` are padded with it). With
    ``on_tokens``, each compiled call hands its new ``[batch, k]`` block to the callback, k = 1, 2,
    4, ... up to ``stream_chunk``; returning True from it stops generation. The tokens are the same
    with or without a callback. ``vocab_limit`` keeps ids below it (the tokenizer's size when the
    model's vocabulary is padded). ``context`` says how to go on past ``block_size``: ``"shift"``
    or ``"slide"`` (see the module docstring).

    Example:
        >>> from tfgpt.config import GPTConfig
        >>> from tfgpt.model import GPT
        >>> model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=16))
        >>> generate_ids(model, [[1, 2, 3]], max_new_tokens=40, temperature=0).shape  # past block_size
        (1, 40)
    """
    ids = _check_prompt_ids(model.config, prompt_ids, max_new_tokens)
    mode = _check_sampling(model.config.vocab_size, temperature, top_k, top_p, vocab_limit)
    if context not in CONTEXTS:
        raise GenerationError(f"context must be one of {', '.join(CONTEXTS)}, got {context!r}")
    if isinstance(stream_chunk, bool) or not isinstance(stream_chunk, int) or stream_chunk < 1:
        raise GenerationError(f"stream_chunk must be a positive integer, got {stream_chunk!r}")
    if max_new_tokens == 0:
        return np.zeros((ids.shape[0], 0), np.int32)
    run = _Decoding(
        Decoder.for_model(model, jit_compile=jit_compile), mode,
        temperature=np.float32(1.0 if mode.greedy else temperature),
        top_p=np.float32(1.0 if top_p is None else top_p),
        seed=seed32(seed),
        eot=np.int32(-1 if eot_id is None else eot_id),
        on_tokens=on_tokens,
        stream_chunk=stream_chunk,
    )
    max_len = _prefill(run, model, ids, max_new_tokens)
    length = ids.shape[1]
    _decode_in_cache(run, length, min(max_new_tokens, max_len - length))
    block = model.config.block_size
    if context == "shift" and block >= 2:
        _decode_shifting(run, ids, max_new_tokens, block)
    else:
        _decode_sliding(run, ids, max_new_tokens, block)
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


def _decode_in_cache(run: _Decoding, start: int, n_tokens: int, width: int | None = None) -> None:
    """The compiled cached loop: up to ``n_tokens`` more tokens, written at cache positions from ``start``.

    Without a callback one call produces them all; with one, a stream chunk per call. ``width`` is the
    compiled loop's output width (default: enough for ``n_tokens``).
    """
    first, limit = run.produced, run.produced + n_tokens
    loop = run.decoder.loop(run.mode, width or run.chunk(n_tokens))
    while run.running(limit):
        n = run.next_steps(limit - run.produced)
        out, steps, run.logits, run.cache, done = loop(
            run.logits, run.cache, np.int32(start + run.produced - first), np.int32(n), run.temperature, run.top_p,
            run.seed, np.int32(run.produced), run.eot, run.done,
        )
        run.done = np.asarray(done)
        run.emit(np.asarray(out)[:, : int(np.asarray(steps))])


def _decode_shifting(run: _Decoding, ids: np.ndarray, max_new_tokens: int, block: int) -> None:
    """Past block_size, ``context="shift"``: prefill the last half block into a fresh cache, decode, repeat.

    The logits in hand (from the whole block) choose the next token, which goes in after the kept half.
    """
    keep = block // 2
    model, width = run.decoder.model, run.chunk(block - keep)  # one compiled width for every half block
    while run.running(max_new_tokens):
        tail = run.tail(ids, keep)  # [batch, keep]
        _, run.cache = run.decoder.prefill()(tail, model.init_cache(len(tail), block), np.int32(keep - 1))
        _decode_in_cache(run, keep, min(block - keep, max_new_tokens - run.produced), width)


def _decode_sliding(run: _Decoding, ids: np.ndarray, max_new_tokens: int, block: int) -> None:
    """Past block_size, ``context="slide"``: nanoGPT's exact window of the last block_size tokens."""
    if not run.running(max_new_tokens):
        return
    ctx = run.tail(ids, block)  # [batch, block_size]
    slide = run.decoder.slide(run.mode, run.chunk(max_new_tokens - run.produced))
    while run.running(max_new_tokens):
        n = run.next_steps(max_new_tokens - run.produced)
        out, steps, run.logits, ctx, done = slide(
            run.logits, ctx, np.int32(n), run.temperature, run.top_p, run.seed, np.int32(run.produced), run.eot,
            run.done,
        )
        run.done = np.asarray(done)
        run.emit(np.asarray(out)[:, : int(np.asarray(steps))])


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
    context: str = "shift",
) -> str:
    """Continue ``prompt`` with up to ``max_new_tokens`` tokens and return the new text.

    ``temperature`` ≤ 0 (or below ``MIN_TEMPERATURE``) means greedy. Sampling is reproducible for a
    ``seed``. Generation stops at the tokenizer's end-of-text token or at the first ``stop`` string
    (not included). When the text outgrows ``block_size``, ``context="shift"`` goes on from the
    last half block and ``context="slide"`` from exactly the last ``block_size`` tokens (nanoGPT's
    cropping; slower). ``stream`` receives text deltas as they are produced.

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
        stream_chunk=16 if stream is not None else 64 if stops else max(1, max_new_tokens),
        jit_compile=jit_compile, context=context,
    )
    streamer.feed([], final=True)
    return streamer.text
