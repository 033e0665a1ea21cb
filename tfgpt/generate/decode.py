"""The compiled, KV-cached decode loop, in ``keras.ops`` with a per-backend compiler.

Three compiled functions serve every request of a given shape:

- ``prefill(ids [B, P_pad], cache, last)``: run the (right-padded) prompt through the model,
  writing its keys/values into the cache, and return the logits at position ``last``.
- ``loop(logits, cache, index, num_steps, ...)``: a ``while_loop`` that samples a token, writes it
  at ``index + step`` and runs one cached step, until ``num_steps`` tokens or every row hit
  end-of-text. ``num_steps``, temperature, top-p, seed and the start index are tensors, so the
  loop is traced once per shape and never per token.
- ``slide(ctx [B, block_size], logits, num_steps, ...)``: nanoGPT's exact cropping once the text
  outgrows ``block_size``, as a ``while_loop`` too: sample a token, roll it into the window and
  re-run the whole window (no cache), ``num_steps`` times.

The default past ``block_size`` (see :func:`tfgpt.generate_ids`) is a context shift that reuses
``prefill`` and ``loop``: keep the last half block, prefill it into a fresh cache, go on.

On TensorFlow these are ``tf.function(jit_compile=True)`` (XLA makes the CPU loop fast); on JAX
they are ``jax.jit`` over the model's variables passed as arguments (no weights baked in).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from tfgpt.generate.sampling import NEG_INF, sample_next


@dataclasses.dataclass(frozen=True)
class SamplingMode:
    """The static part of sampling: what changes the compiled graph."""

    greedy: bool = True
    top_k: int | None = None
    use_top_p: bool = False
    #: ids ≥ this are never produced (a model vocabulary padded past the tokenizer's, e.g. 50304).
    vocab_limit: int | None = None


def _step_token(logits: Any, mode: SamplingMode, temperature: Any, top_p: Any, seed: Any, step: Any) -> Any:
    if mode.vocab_limit is not None:
        ids = ops.arange(ops.shape(logits)[-1], dtype="int32")
        logits = ops.where(ops.expand_dims(ids, 0) < mode.vocab_limit, logits, NEG_INF)
    return sample_next(
        logits,
        greedy=mode.greedy,
        temperature=temperature,
        top_k=mode.top_k,
        top_p=top_p if mode.use_top_p else None,
        seed=seed,
        step=step,
    )


def _prefill(model: Any, ids: Any, cache: Any, last: Any) -> tuple[Any, Any]:
    hidden, cache = model.hidden_states(ids, cache=cache, cache_index=0)
    last_hidden = ops.take(hidden, ops.reshape(ops.cast(last, "int32"), (1,)), axis=1)
    return model.logits_from_hidden(last_hidden)[:, 0, :], cache


def _emit(out: Any, step: Any, token: Any, done: Any, pad: Any, eot_id: Any) -> tuple[Any, Any, Any]:
    """Write this step's token into ``out [B, chunk]`` (``pad`` for finished rows); mark rows that hit eot."""
    token = ops.where(done, pad, token)
    out = ops.slice_update(out, (ops.zeros((), "int32"), step), ops.expand_dims(token, 1))
    return token, out, ops.logical_or(done, ops.equal(token, eot_id))


def _run_steps(body: Callable, logits: Any, state: Any, num_steps: Any, done: Any, chunk: int) -> tuple:
    """``while_loop`` of ``body(step, logits, state, out, done)`` for ``num_steps`` or until every row is done."""
    out = ops.zeros((ops.shape(logits)[0], chunk), "int32")
    num_steps = ops.cast(num_steps, "int32")

    def cond(step, logits, state, out, done):
        return ops.logical_and(step < num_steps, ops.logical_not(ops.all(done)))

    step, logits, state, out, done = ops.while_loop(cond, body, (ops.zeros((), "int32"), logits, state, out, done))
    return out, step, logits, state, done


def _loop(
    model: Any, mode: SamplingMode, chunk: int,
    logits: Any, cache: Any, index: Any, num_steps: Any, temperature: Any, top_p: Any,
    seed: Any, step_offset: Any, eot_id: Any, done: Any,
) -> tuple[Any, Any, Any, Any, Any]:
    index = ops.cast(index, "int32")
    eot_id = ops.cast(eot_id, "int32")
    pad = ops.maximum(eot_id, 0)

    def body(step, logits, cache, out, done):
        token = _step_token(logits, mode, temperature, top_p, seed, step_offset + step)
        token, out, done = _emit(out, step, token, done, pad, eot_id)
        new_logits, cache = model(ops.expand_dims(token, 1), cache=cache, cache_index=index + step)
        return step + 1, new_logits[:, -1, :], cache, out, done

    return _run_steps(body, logits, cache, num_steps, done, chunk)


def _slide(
    model: Any, mode: SamplingMode, chunk: int,
    logits: Any, ctx: Any, num_steps: Any, temperature: Any, top_p: Any,
    seed: Any, step_offset: Any, eot_id: Any, done: Any,
) -> tuple[Any, Any, Any, Any, Any]:
    eot_id = ops.cast(eot_id, "int32")
    pad = ops.maximum(eot_id, 0)

    def body(step, logits, ctx, out, done):
        token = _step_token(logits, mode, temperature, top_p, seed, step_offset + step)
        token, out, done = _emit(out, step, token, done, pad, eot_id)
        ctx = ops.concatenate([ctx[:, 1:], ops.expand_dims(token, 1)], axis=1)  # [B, block_size], rolled by one
        hidden, _ = model.hidden_states(ctx)
        return step + 1, model.logits_from_hidden(hidden[:, -1:, :])[:, 0, :], ctx, out, done

    return _run_steps(body, logits, ctx, num_steps, done, chunk)


def _compile(model: Any, fn: Callable, jit_compile: bool) -> Callable:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit_compile, reduce_retracing=False)
    if backend == "jax":
        import jax

        variables = model.variables

        def stateless(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return fn(*args)

        jitted = jax.jit(stateless) if jit_compile else stateless

        def call(*args):
            return jitted([v.value for v in variables], *args)

        return call
    raise NotImplementedError(f"generation supports the tensorflow and jax backends, not {backend}")


class Decoder:
    """Compiled prefill/loop/slide functions for one model, cached per sampling mode and shape.

    Example:
        >>> import numpy as np
        >>> from tfgpt.config import GPTConfig
        >>> from tfgpt.model import GPT
        >>> model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=16))
        >>> decoder = Decoder.for_model(model)
        >>> decoder is Decoder.for_model(model)  # one per model: compiled functions are reused
        True
        >>> ids = np.array([[1, 2, 3, 0]], np.int32)  # a 3-token prompt, right-padded
        >>> logits, cache = decoder.prefill()(ids, model.init_cache(1, 16), np.int32(2))
        >>> tuple(logits.shape)  # the logits at position 2
        (1, 20)
    """

    _instances: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, model: Any, jit_compile: bool = True) -> None:
        self.model = model
        self.jit_compile = jit_compile
        self._fns: dict[tuple, Callable] = {}

    @classmethod
    def for_model(cls, model: Any, jit_compile: bool = True) -> Decoder:
        per_model = cls._instances.setdefault(model, {})
        if jit_compile not in per_model:
            per_model[jit_compile] = cls(model, jit_compile)
        return per_model[jit_compile]

    def _get(self, key: tuple, make: Callable[[], Callable]) -> Callable:
        if key not in self._fns:
            self._fns[key] = _compile(self.model, make(), self.jit_compile)
        return self._fns[key]

    def prefill(self) -> Callable:
        model = self.model
        return self._get(("prefill",), lambda: lambda ids, cache, last: _prefill(model, ids, cache, last))

    def loop(self, mode: SamplingMode, chunk: int) -> Callable:
        model = self.model

        def make():
            def fn(*args):
                return _loop(model, mode, chunk, *args)

            return fn

        return self._get(("loop", mode, chunk), make)

    def slide(self, mode: SamplingMode, chunk: int) -> Callable:
        model = self.model

        def make():
            def fn(*args):
                return _slide(model, mode, chunk, *args)

            return fn

        return self._get(("slide", mode, chunk), make)
