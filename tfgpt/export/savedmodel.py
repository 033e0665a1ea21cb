"""SavedModel for TensorFlow Serving: in-graph tokenization, a KV-cached decode loop, no XLA.

Signatures (all run without XLA and without ``py_function``; TF Serving's C++ loader can run them):

``serving_default``
    inputs: ``prompts`` string ``[batch]``; optional scalars ``max_new_tokens`` int32 (default
    :data:`DEFAULT_MAX_NEW_TOKENS`), ``temperature`` float32 (default 0: greedy), ``top_k`` int32
    (default 0: off), ``seed`` int32 (default 0).
    outputs: ``completions`` string ``[batch]`` (new text only; invalid UTF-8 replaced by U+FFFD),
    ``ids`` int32 ``[batch, max_new_tokens]`` (new ids, -1 past the end; end-of-text not
    included), ``num_tokens`` int32 ``[batch]``.
``complete``
    ``prompts`` string ``[batch]`` and ``max_new_tokens``, ``temperature``, ``top_k``, ``seed``, each
    ``[batch]`` and required: one setting per prompt, every input batched along dimension 0, as TF
    Serving's batcher needs (``serving/batching_parameters.txt``). Outputs as ``serving_default``,
    ``ids`` ``[batch, max(max_new_tokens)]``. ``tfgpt serve`` merges concurrent requests into it.
``logits``
    ``ids`` int32 ``[batch, time]`` → ``logits`` float32 ``[batch, time, vocab]``.
``generate_ids``
    ``ids`` int32 ``[batch, time]`` (rows of equal length) + the optional scalars above →
    ``ids`` int32 ``[batch, max_new_tokens]`` (-1 past the end), ``num_tokens`` int32 ``[batch]``.

The decoding signatures only produce ids the tokenizer knows: when the model's vocabulary is
padded past the tokenizer's, the padded ids' logits are masked (as :func:`tfgpt.generate` does).

Lengths: ``max_new_tokens`` is clipped to ``[0, block_size - 1]``; a prompt longer than
``block_size - max_new_tokens`` tokens keeps its last tokens (cropped, like ``tfgpt.generate``),
so prompt + completion always fit one KV cache. Prompts of different token lengths decode as one
batch, each row at its own positions (a quantized or mixed-precision model decodes them row by row).

Rows are independent: a row's tokens depend only on its prompt and its own settings, not on the
rows beside it, so a request gives the same output alone or merged into a batch. Greedy output
equals :func:`tfgpt.generate`. Sampling uses the same Gumbel-max arithmetic with noise
``stateless_uniform([1, vocab], (seed, step))`` per row; the scalar ``seed`` of ``serving_default``
and ``generate_ids`` seeds row ``r`` with ``seed + r``. It is reproducible for a seed, but not
bit-identical to ``tfgpt.generate``, whose XLA-compiled loop lets the stateless RNG pick another
algorithm than TensorFlow's CPU kernel.

Example:
    >>> model, tokenizer = tfgpt.load("runs/shakespeare")  # doctest: +SKIP
    >>> module = ServingModule(model, tokenizer)  # doctest: +SKIP
    >>> module.serving_default(tf.constant(["ROMEO:"]), max_new_tokens=tf.constant(8))["completions"]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorflow.python.trackable.data_structures import NoDependency

from tfgpt.export.graph_decode import decode_step, fast_step_supported, sample_tf, write_chunk

DEFAULT_MAX_NEW_TOKENS = 32
#: Tokens per outer iteration of the SavedModel's decode loop: the big KV caches take one write per chunk.
DECODE_CHUNK = 16
SIGNATURES = ("serving_default", "complete", "logits", "generate_ids")
#: The optional scalar inputs shared by ``serving_default`` and ``generate_ids``.
SAMPLING_SPECS = (
    tf.TensorSpec([], tf.int32, name="max_new_tokens"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.int32, name="seed"),
)
#: ``complete``'s inputs after ``prompts``: the same settings, one per prompt (what TF Serving's batcher needs).
ROW_SPECS = tuple(tf.TensorSpec([None], s.dtype, name=s.name) for s in SAMPLING_SPECS)


def _widest(max_new: tf.Tensor) -> tf.Tensor:
    """The most new tokens any row asks for (0 for no rows): the width of the ids out."""
    return tf.reduce_max(tf.concat([max_new, [0]], axis=0))


class ServingModule(tf.Module):
    """The exported ``tf.Module``: model variables, the in-graph tokenizer, four signatures.

    Args:
        model: a built tfgpt GPT.
        tokenizer: its tokenizer (must provide ``graph_tokenizer()``).
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__(name="tfgpt_serving")
        if not model.built:
            model.build((None, None))
        # Not tracked: Keras variables would be saved a second time under model/..., doubling
        # the variables file and the memory a loader restores; self.vars holds them once.
        self.model = NoDependency(model)
        # TF1 session loader (TF Serving) needs the variables tracked by the module itself.
        self.vars = [v.value for v in model.variables]
        self.graph_tokenizer = tokenizer.graph_tokenizer()
        c = model.config
        self.block_size = int(c.block_size)
        self.vocab_size = int(c.vocab_size)
        self.n_layer = int(c.n_layer)
        self.n_head = int(c.n_head)
        self.head_dim = int(c.head_dim)
        self.eot_id = -1 if tokenizer.eot_id is None else int(tokenizer.eot_id)
        # The model's vocabulary may be padded past the tokenizer's (e.g. 50304): never sample those ids.
        self.vocab_limit = min(int(tokenizer.vocab_size), self.vocab_size)
        self.cache_dtype = model.dtype_policy.compute_dtype

    # -- the decode loop (plain TF control flow; cache writes with tensor_scatter_nd_update) -----

    def _prefill(self, dense: tf.Tensor, lengths: tf.Tensor, cache_len: tf.Tensor) -> tuple[tf.Tensor, list]:
        """Row ``r`` of ``dense`` ``[b, width]`` holds ``lengths[r]`` tokens, then padding → the logits
        after each row's last token ``[b, vocab]`` and the caches ``[b, 2, n_head, cache_len, head_dim]``
        (a row's slots from its length on hold padding, written over before they are read).

        The model's own cached call (``cache_update="scatter"``); only each row's last position is
        projected to logits. Causal attention keeps the padding out of the real positions.
        """
        layer_shape = [tf.shape(dense)[0], 2, self.n_head, cache_len, self.head_dim]
        caches = [tf.zeros(layer_shape, self.cache_dtype) for _ in range(self.n_layer)]
        hidden, caches = self.model.hidden_states(
            dense, cache=caches, cache_index=tf.constant(0, tf.int32), cache_update="scatter"
        )
        last = tf.gather(hidden, lengths - 1, batch_dims=1)  # [b, width]: each row's last real position
        return self.model.logits_from_hidden(last[:, None, :])[:, -1, :], caches

    def _decode(self, dense: tf.Tensor, lengths: tf.Tensor, max_new: tf.Tensor, sampling: tuple) -> tuple:
        """Prompts ``dense`` ``[b, width]`` (row ``r``: ``lengths[r]`` tokens, lengths + max_new ≤
        block_size) → new ids ``[b, max(max_new)]`` (-1 past each row's end), counts ``[b]``.

        ``max_new`` and the ``sampling`` tensors (temperature, top_k, seed) are ``[b]``: one value per
        row. Rows of different lengths decode together through :meth:`_steps_chunked` (each at its own
        positions); :meth:`_steps_model_call`, for models :func:`fast_step_supported` refuses, needs
        equal lengths.
        """
        batch, width = tf.shape(dense)[0], tf.shape(dense)[1]
        stop = _widest(max_new)
        if fast_step_supported(self.model):
            logits, caches = self._prefill(dense, lengths, width + stop + (-stop) % DECODE_CHUNK)
            step, out = self._steps_chunked(logits, caches, lengths, max_new, stop, sampling)
        else:
            logits, caches = self._prefill(dense, lengths, width + stop)
            step, out = self._steps_model_call(logits, caches, width, max_new, stop, sampling)
        produced = tf.cond(
            step > 0, lambda: tf.transpose(out.gather(tf.range(step))), lambda: tf.zeros([batch, 0], tf.int32)
        )
        new_ids = tf.pad(produced, [[0, 0], [0, stop - step]], constant_values=-1)
        counts = tf.reduce_sum(tf.cast(new_ids >= 0, tf.int32), axis=1)
        return new_ids, counts

    def _emit(self, step: tf.Tensor, logits: tf.Tensor, out: Any, done: tf.Tensor, max_new: tf.Tensor,
              sampling: tuple) -> tuple:
        """Sample this step's token, record it (-1 once a row is done: end-of-text or its ``max_new``
        reached); ``(token ≥ 0, out, done)``."""
        token = sample_tf(logits, *sampling, step, self.vocab_limit)
        done = tf.logical_or(done, step >= max_new)
        done = tf.logical_or(done, tf.equal(token, tf.constant(self.eot_id, tf.int32)))
        return tf.maximum(token, 0), out.write(step, tf.where(done, -1, token)), done

    @staticmethod
    def _running(step: tf.Tensor, done: tf.Tensor, max_new: tf.Tensor, stop: tf.Tensor) -> tf.Tensor:
        """Whether step ``step`` (< ``stop``) has a row that still emits."""
        live = tf.logical_and(tf.logical_not(done), step < max_new)
        return tf.logical_and(step < stop, tf.reduce_any(live))

    def _start(self, logits: tf.Tensor, stop: tf.Tensor) -> tuple:
        """The loops' first state: step 0, the ids' TensorArray, no row done."""
        out = tf.TensorArray(tf.int32, size=stop, element_shape=tf.TensorShape([None]))
        return tf.constant(0, tf.int32), out, tf.zeros([tf.shape(logits)[0]], tf.bool)

    def _steps_model_call(self, logits, caches, length, max_new, stop, sampling) -> tuple[tf.Tensor, Any]:
        """One step per token through the model's own cached call (quantized or mixed-precision models);
        every row is ``length`` tokens long."""
        step, out, done = self._start(logits, stop)

        def body(step, logits, caches, out, done):
            token, out, done = self._emit(step, logits, out, done, max_new, sampling)
            new_logits, caches = self.model(
                token[:, None], cache=list(caches), cache_index=length + step, cache_update="scatter"
            )
            return step + 1, new_logits[:, -1, :], caches, out, done

        layer = tf.TensorShape([None, 2, self.n_head, None, self.head_dim])
        step, _, _, out, _ = tf.while_loop(
            lambda step, _l, _c, _o, done: self._running(step, done, max_new, stop),
            body, (step, logits, caches, out, done),
            shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, self.vocab_size]), [layer] * self.n_layer,
                              tf.TensorShape(None), tf.TensorShape([None])),
        )
        return step, out

    def _steps_chunked(self, logits, caches, lengths, max_new, stop, sampling) -> tuple[tf.Tensor, Any]:
        """:func:`decode_step` per token, :data:`DECODE_CHUNK` tokens per outer iteration; row ``r``
        writes its step ``s`` at position ``lengths[r] + s``.

        Keys and values are kept apart per layer (no slice copies). A write into a tensor inside a
        ``while_loop`` copies it (plain TF kernels cannot update a loop variable in place), so each step
        writes only a chunk-sized buffer and the big caches, read-only inside the inner loop, take the
        chunk in one write per :data:`DECODE_CHUNK` tokens (sized for it by :meth:`_decode`).
        """
        batch, chunk = tf.shape(logits)[0], DECODE_CHUNK
        caches = [t for c in caches for t in (c[:, 0], c[:, 1])]  # [k_0, v_0, ...] [b, h, T, d]
        step, out, done = self._start(logits, stop)
        kv = tf.TensorShape([None, self.n_head, None, self.head_dim])
        state_shapes = (tf.TensorShape([]), tf.TensorShape([None, self.vocab_size]), [kv] * (2 * self.n_layer),
                        tf.TensorShape(None), tf.TensorShape([None]))

        def chunk_body(start, logits, caches, out, done):
            buffers = [tf.zeros([batch, self.n_head, chunk, self.head_dim], self.cache_dtype)] * (2 * self.n_layer)

            def body(step, logits, buffers, out, done):
                token, out, done = self._emit(step, logits, out, done, max_new, sampling)
                new_logits, buffers = decode_step(self.model, token, caches, lengths + start, buffers, step - start)
                return step + 1, new_logits, buffers, out, done

            step, logits, buffers, out, done = tf.while_loop(
                lambda step, _l, _b, _o, done: self._running(step, done, max_new, tf.minimum(start + chunk, stop)),
                body, (start, logits, buffers, out, done), shape_invariants=state_shapes,
            )
            caches = [write_chunk(c, b, lengths + start) for c, b in zip(caches, buffers, strict=True)]
            return step, logits, caches, out, done

        step, _, _, out, _ = tf.while_loop(
            lambda step, _l, _c, _o, done: self._running(step, done, max_new, stop),
            chunk_body, (step, logits, caches, out, done), shape_invariants=state_shapes,
        )
        return step, out

    def _clip_new(self, max_new_tokens: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(tf.cast(max_new_tokens, tf.int32), 0, self.block_size - 1)

    def _generate_rows(self, ids: tf.RaggedTensor, max_new: tf.Tensor, sampling: tuple) -> tuple[tf.Tensor, tf.Tensor]:
        """Crop each row to fit the cache (its last ``block_size - max_new[r]`` tokens), then decode: all
        rows as one batch, or row by row (``tf.map_fn``) for a model without :func:`fast_step_supported`
        whose rows differ in length. ``max_new`` and ``sampling``: ``[b]``."""
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        check = tf.debugging.assert_positive(lengths, message="a prompt encodes to no tokens: give at least one")
        with tf.control_dependencies([check]):
            keep = self.block_size - max_new
        new_len = tf.minimum(lengths, keep)
        starts = tf.cast(ids.row_starts(), tf.int32) + lengths - new_len
        dense = tf.gather(ids.flat_values, tf.ragged.range(starts, starts + new_len)).to_tensor(default_value=0)
        if fast_step_supported(self.model):
            return self._decode(dense, new_len, max_new, sampling)

        def per_row() -> tuple[tf.Tensor, tf.Tensor]:
            def one(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                row = [t[i : i + 1] for t in (max_new, *sampling)]
                new_ids, counts = self._decode(dense[i : i + 1, : new_len[i]], new_len[i : i + 1], row[0], row[1:])
                return tf.pad(new_ids[0], [[0, stop - tf.shape(new_ids)[1]]], constant_values=-1), counts[0]

            stop = _widest(max_new)
            return tf.map_fn(
                one, tf.range(tf.shape(dense)[0]),
                fn_output_signature=(tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)),
            )

        equal = tf.reduce_min(new_len) == tf.reduce_max(new_len)
        return tf.cond(equal, lambda: self._decode(dense, new_len, max_new, sampling), per_row)

    def _rows(self, batch: tf.Tensor, max_new_tokens, temperature, top_k, seed) -> tuple[tf.Tensor, tuple]:
        """The scalar settings of ``serving_default``/``generate_ids`` as one value per row; row ``r``
        is seeded ``seed + r`` (int32, wrapping), so a lone prompt is seeded ``seed``."""
        def fill(value: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
            return tf.fill([batch], tf.cast(value, dtype))

        seeds = tf.cast(seed, tf.int32) + tf.range(batch, dtype=tf.int32)
        return self._clip_new(fill(max_new_tokens, tf.int32)), (fill(temperature, tf.float32),
                                                               fill(top_k, tf.int32), seeds)

    def _tokenize(self, prompts: tf.Tensor) -> tf.RaggedTensor:
        """The prompts' ids, after checking that each is valid UTF-8 (the in-graph tokenizer's input)."""
        cleaned = tf.strings.unicode_transcode(
            prompts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD,
            replace_control_characters=False,
        )
        check = tf.debugging.assert_equal(
            tf.reduce_all(tf.equal(cleaned, prompts)), True, message="a prompt is not valid UTF-8"
        )
        with tf.control_dependencies([check]):
            return self.graph_tokenizer.tokenize(tf.identity(prompts))

    def _completions(self, prompts: tf.Tensor, max_new: tf.Tensor, sampling: tuple) -> dict[str, tf.Tensor]:
        """``serving_default``'s and ``complete``'s outputs: ids, their text and counts."""
        new_ids, counts = self._generate_rows(self._tokenize(prompts), max_new, sampling)
        text_ids = tf.RaggedTensor.from_tensor(new_ids, lengths=counts)
        completions = self.graph_tokenizer.detokenize(text_ids)
        completions = tf.reshape(completions, [-1])  # detokenize of an empty batch keeps [0]
        return {"completions": completions, "ids": new_ids, "num_tokens": counts}

    # -- signatures ------------------------------------------------------------------------

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompts"), *SAMPLING_SPECS])
    def serving_default(
        self,
        prompts: tf.Tensor,
        max_new_tokens: tf.Tensor = tf.constant(DEFAULT_MAX_NEW_TOKENS, tf.int32),  # noqa: B008
        temperature: tf.Tensor = tf.constant(0.0, tf.float32),  # noqa: B008
        top_k: tf.Tensor = tf.constant(0, tf.int32),  # noqa: B008
        seed: tf.Tensor = tf.constant(0, tf.int32),  # noqa: B008
    ) -> dict[str, tf.Tensor]:
        max_new, sampling = self._rows(tf.shape(prompts)[0], max_new_tokens, temperature, top_k, seed)
        return self._completions(prompts, max_new, sampling)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompts"), *ROW_SPECS])
    def complete(
        self, prompts: tf.Tensor, max_new_tokens: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor,
        seed: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        rows = tf.shape(prompts)[0]
        given = tf.stack([tf.shape(t)[0] for t in (max_new_tokens, temperature, top_k, seed)])
        check = tf.debugging.assert_equal(
            given, tf.fill([4], rows), message="complete takes one max_new_tokens, temperature, top_k and seed "
            "per prompt",
        )
        with tf.control_dependencies([check]):
            max_new = self._clip_new(max_new_tokens)
        return self._completions(prompts, max_new, (temperature, top_k, seed))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids")])
    def logits(self, ids: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": tf.cast(self.model(ids), tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids"), *SAMPLING_SPECS])
    def generate_ids(
        self,
        ids: tf.Tensor,
        max_new_tokens: tf.Tensor = tf.constant(DEFAULT_MAX_NEW_TOKENS, tf.int32),  # noqa: B008
        temperature: tf.Tensor = tf.constant(0.0, tf.float32),  # noqa: B008
        top_k: tf.Tensor = tf.constant(0, tf.int32),  # noqa: B008
        seed: tf.Tensor = tf.constant(0, tf.int32),  # noqa: B008
    ) -> dict[str, tf.Tensor]:
        in_vocab = tf.logical_and(tf.reduce_all(ids >= 0), tf.reduce_all(ids < self.vocab_size))
        check = tf.debugging.assert_equal(in_vocab, True, message=f"ids must be in [0, {self.vocab_size})")
        with tf.control_dependencies([check]):
            ragged = tf.RaggedTensor.from_tensor(tf.identity(ids))
        max_new, sampling = self._rows(tf.shape(ids)[0], max_new_tokens, temperature, top_k, seed)
        new_ids, counts = self._generate_rows(ragged, max_new, sampling)
        return {"ids": new_ids, "num_tokens": counts}

    def signatures(self) -> dict[str, Any]:
        """The four ``tf.function`` objects, keyed by signature name (passed as functions, not concrete
        functions, so ``tf.saved_model.save`` records the optional inputs' defaults in the SignatureDef)."""
        return {"serving_default": self.serving_default, "complete": self.complete, "logits": self.logits,
                "generate_ids": self.generate_ids}
