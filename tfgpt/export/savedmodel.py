"""SavedModel for TensorFlow Serving: in-graph tokenization, a KV-cached decode loop, no XLA.

Signatures (all run without XLA and without ``py_function``; TF Serving's C++ loader can run them):

``serving_default``
    inputs: ``prompts`` string ``[batch]``; optional scalars ``max_new_tokens`` int32 (default
    :data:`DEFAULT_MAX_NEW_TOKENS`), ``temperature`` float32 (default 0: greedy), ``top_k`` int32
    (default 0: off), ``seed`` int32 (default 0).
    outputs: ``completions`` string ``[batch]`` (new text only; invalid UTF-8 replaced by U+FFFD),
    ``ids`` int32 ``[batch, max_new_tokens]`` (new ids, -1 past the end; end-of-text not
    included), ``num_tokens`` int32 ``[batch]``.
``logits``
    ``ids`` int32 ``[batch, time]`` → ``logits`` float32 ``[batch, time, vocab]``.
``generate_ids``
    ``ids`` int32 ``[batch, time]`` (rows of equal length) + the optional scalars above →
    ``ids`` int32 ``[batch, max_new_tokens]`` (-1 past the end), ``num_tokens`` int32 ``[batch]``.

Both decoding signatures only produce ids the tokenizer knows: when the model's vocabulary is
padded past the tokenizer's, the padded ids' logits are masked (as :func:`tfgpt.generate` does).

Lengths: ``max_new_tokens`` is clipped to ``[0, block_size - 1]``; a prompt longer than
``block_size - max_new_tokens`` tokens keeps its last tokens (cropped, like ``tfgpt.generate``),
so prompt + completion always fit one KV cache. Prompts of different token lengths in one batch
are decoded one row at a time (``tf.map_fn``), equal lengths as one batch. Greedy output equals
:func:`tfgpt.generate`. Sampling uses the same Gumbel-max arithmetic and ``stateless_uniform(seed,
step)``, reproducible for a seed; it is not bit-identical to ``tfgpt.generate``, whose XLA-compiled
loop lets the stateless RNG pick a different algorithm than TensorFlow's CPU kernel.

Example:
    >>> model, tokenizer = tfgpt.load("runs/shakespeare")  # doctest: +SKIP
    >>> module = ServingModule(model, tokenizer)  # doctest: +SKIP
    >>> module.serving_default(tf.constant(["ROMEO:"]), max_new_tokens=tf.constant(8))["completions"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf
from tensorflow.python.trackable.data_structures import NoDependency

from tfgpt.generate.sampling import MIN_TEMPERATURE, NEG_INF, stateless_uniform
from tfgpt.model.attention import MASK_VALUE
from tfgpt.model.block import gelu_tanh

DEFAULT_MAX_NEW_TOKENS = 32
#: Tokens per outer iteration of the SavedModel's decode loop: the big KV caches take one write per chunk.
DECODE_CHUNK = 16
SIGNATURES = ("serving_default", "logits", "generate_ids")
#: The optional scalar inputs shared by ``serving_default`` and ``generate_ids``.
SAMPLING_SPECS = (
    tf.TensorSpec([], tf.int32, name="max_new_tokens"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.int32, name="seed"),
)


def sample_tf(
    logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, seed: tf.Tensor, step: tf.Tensor,
    vocab_limit: int | None = None,
) -> tf.Tensor:
    """Next ids ``[batch]`` int32: greedy when ``temperature`` < 1e-5 (``MIN_TEMPERATURE``), else top-k + Gumbel-max.

    Same arithmetic and noise as :func:`tfgpt.generate.sampling.sample_next`, with tensor ``top_k``
    (0 or ≥ vocab: off) and branches as ``tf.cond`` (no XLA needed). ``vocab_limit`` (static): ids ≥ it
    are never picked (a model vocabulary padded past the tokenizer's), as in ``tfgpt.generate``.
    """
    logits = tf.cast(logits, tf.float32)
    if vocab_limit is not None and (logits.shape[-1] is None or vocab_limit < logits.shape[-1]):
        keep = tf.range(tf.shape(logits)[-1]) < vocab_limit
        logits = tf.where(keep[None, :], logits, tf.constant(NEG_INF, tf.float32))

    def greedy() -> tf.Tensor:
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    def sampled() -> tf.Tensor:
        x = logits / tf.cast(temperature, tf.float32)
        vocab = tf.shape(x)[-1] if vocab_limit is None else tf.minimum(tf.shape(x)[-1], vocab_limit)
        k = tf.cast(top_k, tf.int32)

        def filtered() -> tf.Tensor:
            kth = tf.math.top_k(x, k, sorted=True).values[:, -1:]
            return tf.where(x < kth, tf.constant(NEG_INF, tf.float32), x)

        x = tf.cond(tf.logical_and(k > 0, k < vocab), filtered, lambda: x)
        u = stateless_uniform(tf.shape(x), seed, step)
        return tf.argmax(x - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)

    return tf.cond(temperature >= MIN_TEMPERATURE, sampled, greedy)


def fast_step_supported(model: Any) -> bool:
    """Whether :func:`decode_step` can run ``model``: float32 weights and compute, no quantized layer.

    Other models (mixed precision, ``quantize("int8")``) decode through the model's own cached call.
    """
    if model.dtype_policy.name != "float32":
        return False
    return all(getattr(layer, "quantization_mode", None) is None for layer in model._flatten_layers())


def _matmul(x: tf.Tensor, y: tf.Tensor, adj_y: bool = False) -> tf.Tensor:
    """``x @ y`` (``y`` transposed with ``adj_y``) as ``BatchMatMulV3``: a plain TF kernel that the oneDNN
    graph rewrite leaves alone. With one query row per step its ``_MklMatMul``/``_MklBatchMatMulV2``
    rewrites of MatMul/BatchMatMulV2 cost more in call overhead than the product itself (measured:
    benchmarks/README.md, "SavedModel serving_default without XLA")."""
    return tf.raw_ops.BatchMatMulV3(x=x, y=y, Tout=x.dtype, adj_y=adj_y)


def _dense(layer: Any, x: tf.Tensor) -> tf.Tensor:
    """A Keras ``Dense`` (no activation) on ``[batch, in]``."""
    y = _matmul(x, layer.kernel)
    return y if layer.bias is None else y + layer.bias


def _attend_step(attn: Any, x: tf.Tensor, caches: tuple, buffers: tuple, at: tf.Tensor, biases: tuple) -> tuple:
    """One position of :class:`~tfgpt.model.attention.CausalSelfAttention`: ``x`` ``[b, width]`` →
    ``(y [b, width], k_buffer, v_buffer)``.

    ``caches``: this layer's earlier keys and values ``[b, heads, T, head_dim]`` (read only);
    ``buffers``: the chunk's ``[b, heads, chunk, head_dim]``, written at ``at`` (``[b·heads, 3]``
    scatter rows); ``biases``: ``([T], [chunk])``, 0 where a key is visible, else -1e9. One softmax
    over both parts, as over one cache.
    """
    batch, heads, head_dim = tf.shape(x)[0], attn.num_heads, attn.head_dim
    q, k, v = tf.split(_dense(attn.c_attn, x), 3, axis=-1)  # 3 × [b, width]
    k_buf = tf.tensor_scatter_nd_update(buffers[0], at, tf.reshape(k, [-1, head_dim]))
    v_buf = tf.tensor_scatter_nd_update(buffers[1], at, tf.reshape(v, [-1, head_dim]))
    q = tf.reshape(q, [batch, heads, 1, head_dim]) * (1.0 / math.sqrt(head_dim))
    old = _matmul(q, caches[0], adj_y=True) + biases[0]  # [b, heads, 1, T]
    new = _matmul(q, k_buf, adj_y=True) + biases[1]  # [b, heads, 1, chunk]
    # softmax as plain ops (oneDNN's _MklSoftmax has the same per-call overhead as its small products)
    top = tf.maximum(tf.reduce_max(old, axis=-1, keepdims=True), tf.reduce_max(new, axis=-1, keepdims=True))
    e_old, e_new = tf.exp(old - top), tf.exp(new - top)
    total = tf.reduce_sum(e_old, axis=-1, keepdims=True) + tf.reduce_sum(e_new, axis=-1, keepdims=True)
    y = (_matmul(e_old, caches[1]) + _matmul(e_new, v_buf)) / total  # [b, heads, 1, head_dim]
    return _dense(attn.c_proj, tf.reshape(y, [batch, heads * head_dim])), k_buf, v_buf  # heads side by side


def _block_step(block: Any, x: tf.Tensor, caches: tuple, buffers: tuple, at: tf.Tensor, biases: tuple) -> tuple:
    """One position of a :class:`~tfgpt.model.block.TransformerBlock` (pre- or post-LN), as its ``call``."""
    def mlp(h: tf.Tensor) -> tf.Tensor:
        return _dense(block.mlp.c_proj, gelu_tanh(_dense(block.mlp.c_fc, h)))

    if block.norm == "pre":
        a, k_buf, v_buf = _attend_step(block.attn, block.ln_1(x), caches, buffers, at, biases)
        x = x + a
        x = x + mlp(block.ln_2(x))
    else:
        a, k_buf, v_buf = _attend_step(block.attn, x, caches, buffers, at, biases)
        x = block.ln_1(x + a)
        x = block.ln_2(x + mlp(x))
    return x, k_buf, v_buf


def decode_step(
    model: Any, token: tf.Tensor, caches: list[tf.Tensor], start: tf.Tensor, buffers: list[tf.Tensor], j: tf.Tensor
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Logits ``[b, vocab]`` after ``token`` ``[b]`` at position ``start + j``, and the written buffers.

    The model's cached single-token call in plain TF ops, for a graph run without XLA. ``caches``:
    keys and values apart, ``[k_0, v_0, k_1, v_1, ...]``, each ``[b, heads, T, head_dim]``, holding
    positions ``< start`` (read, never written). ``buffers``: the same for positions ``start, start + 1,
    ...`` (``[b, heads, chunk, head_dim]``); this token's keys/values go to index ``j``. The products
    are ``BatchMatMulV3`` (see :func:`_matmul`), keys read transposed by the product (no transpose op).
    Same weights and arithmetic as ``model(token[:, None], cache=..., cache_index=start + j)``.
    """
    batch, heads = tf.shape(token)[0], model.config.n_head
    x = model.wte(token) + model.wpe(start + j)[None, :]  # [b, width]
    grid = tf.reshape(tf.range(batch * heads), [batch * heads, 1])
    at = tf.concat([grid // heads, grid % heads, tf.fill([batch * heads, 1], j)], axis=1)  # [b·h, 3]
    hidden = (tf.range(tf.shape(caches[0])[2]) >= start, tf.range(tf.shape(buffers[0])[2]) > j)
    biases = tuple(tf.cast(h, x.dtype) * MASK_VALUE for h in hidden)  # ([T], [chunk]): later keys masked
    new_buffers = []
    for i, block in enumerate(model.blocks):
        x, k_buf, v_buf = _block_step(block, x, caches[2 * i : 2 * i + 2], buffers[2 * i : 2 * i + 2], at, biases)
        new_buffers += [k_buf, v_buf]
    x = model.ln_f(x)
    if model.lm_head is not None:
        logits = _dense(model.lm_head, x)
    else:
        logits = _matmul(x, model.wte.embeddings, adj_y=True)  # tied head: [b, width] · [vocab, width]ᵀ
    return tf.cast(logits, tf.float32), new_buffers


def write_chunk(cache: tf.Tensor, buffer: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
    """``cache[:, :, start : start + chunk] = buffer`` (``[b, heads, T, d]`` ← ``[b, heads, chunk, d]``)."""
    shape = tf.shape(buffer)
    b, h, t = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), tf.range(shape[2]) + start, indexing="ij")
    rows = tf.reshape(tf.stack([b, h, t], axis=-1), [-1, 3])  # [b·heads·chunk, 3]
    return tf.tensor_scatter_nd_update(cache, rows, tf.reshape(buffer, [-1, shape[3]]))


class ServingModule(tf.Module):
    """The exported ``tf.Module``: model variables, the in-graph tokenizer, three signatures.

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

    def _decode(
        self, ids: tf.Tensor, max_new: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """``ids`` ``[b, p]`` (equal lengths, p + max_new ≤ block_size) → new ids ``[b, max_new]``
        (-1 past the end), counts ``[b]``.

        Prefill is the model's own cached call (``cache_update="scatter"``, one
        ``[b, 2, n_head, p + max_new, head_dim]`` cache per layer, sized to this request; only the
        last position projected to logits). The steps after it run :meth:`_steps_chunked` when
        :func:`fast_step_supported`, else :meth:`_steps_model_call`.
        """
        model = self.model
        batch, length = tf.shape(ids)[0], tf.shape(ids)[1]
        layer_shape = [batch, 2, self.n_head, length + max_new, self.head_dim]
        caches = [tf.zeros(layer_shape, self.cache_dtype) for _ in range(self.n_layer)]
        hidden, caches = model.hidden_states(
            ids, cache=caches, cache_index=tf.constant(0, tf.int32), cache_update="scatter"
        )
        logits = model.logits_from_hidden(hidden[:, -1:, :])[:, -1, :]
        sampling = (temperature, top_k, seed)
        steps = self._steps_chunked if fast_step_supported(model) else self._steps_model_call
        step, out = steps(logits, caches, length, max_new, sampling)
        produced = tf.cond(
            step > 0, lambda: tf.transpose(out.gather(tf.range(step))), lambda: tf.zeros([batch, 0], tf.int32)
        )
        new_ids = tf.pad(produced, [[0, 0], [0, max_new - step]], constant_values=-1)
        counts = tf.reduce_sum(tf.cast(new_ids >= 0, tf.int32), axis=1)
        return new_ids, counts

    def _emit(self, step: tf.Tensor, logits: tf.Tensor, out: Any, done: tf.Tensor, sampling: tuple) -> tuple:
        """Sample this step's token, record it (-1 once a row is done); ``(token ≥ 0, out, done)``."""
        token = sample_tf(logits, *sampling, step, self.vocab_limit)
        done = tf.logical_or(done, tf.equal(token, tf.constant(self.eot_id, tf.int32)))
        return tf.maximum(token, 0), out.write(step, tf.where(done, -1, token)), done

    def _start(self, logits: tf.Tensor, max_new: tf.Tensor) -> tuple:
        """The loops' first state: step 0, the ids' TensorArray, no row done."""
        out = tf.TensorArray(tf.int32, size=max_new, element_shape=tf.TensorShape([None]))
        return tf.constant(0, tf.int32), out, tf.zeros([tf.shape(logits)[0]], tf.bool)

    def _steps_model_call(self, logits, caches, length, max_new, sampling) -> tuple[tf.Tensor, Any]:
        """One step per token through the model's own cached call (quantized or mixed-precision models)."""
        step, out, done = self._start(logits, max_new)

        def cond(step, logits, caches, out, done):
            return tf.logical_and(step < max_new, tf.logical_not(tf.reduce_all(done)))

        def body(step, logits, caches, out, done):
            token, out, done = self._emit(step, logits, out, done, sampling)
            new_logits, caches = self.model(
                token[:, None], cache=list(caches), cache_index=length + step, cache_update="scatter"
            )
            return step + 1, new_logits[:, -1, :], caches, out, done

        layer = tf.TensorShape([None, 2, self.n_head, None, self.head_dim])
        step, _, _, out, _ = tf.while_loop(
            cond, body, (step, logits, caches, out, done),
            shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, self.vocab_size]), [layer] * self.n_layer,
                              tf.TensorShape(None), tf.TensorShape([None])),
        )
        return step, out

    def _steps_chunked(self, logits, caches, length, max_new, sampling) -> tuple[tf.Tensor, Any]:
        """:func:`decode_step` per token, :data:`DECODE_CHUNK` tokens per outer iteration.

        Keys and values are kept apart per layer (no slice copies). A write into a tensor inside a
        ``while_loop`` copies it (plain TF kernels cannot update a loop variable in place), so each step
        writes only a chunk-sized buffer and the big caches, read-only inside the inner loop, take the
        chunk in one write per :data:`DECODE_CHUNK` tokens. They are padded to a whole number of chunks.
        """
        batch, chunk = tf.shape(logits)[0], DECODE_CHUNK
        pad = [[0, 0], [0, 0], [0, (-max_new) % chunk], [0, 0]]
        caches = [tf.pad(t, pad) for c in caches for t in (c[:, 0], c[:, 1])]  # [k_0, v_0, ...] [b, h, T, d]
        step, out, done = self._start(logits, max_new)
        kv = tf.TensorShape([None, self.n_head, None, self.head_dim])
        state_shapes = (tf.TensorShape([]), tf.TensorShape([None, self.vocab_size]), [kv] * (2 * self.n_layer),
                        tf.TensorShape(None), tf.TensorShape([None]))

        def running(step, done, stop):
            return tf.logical_and(step < stop, tf.logical_not(tf.reduce_all(done)))

        def chunk_body(start, logits, caches, out, done):
            buffers = [tf.zeros([batch, self.n_head, chunk, self.head_dim], self.cache_dtype)] * (2 * self.n_layer)

            def body(step, logits, buffers, out, done):
                token, out, done = self._emit(step, logits, out, done, sampling)
                new_logits, buffers = decode_step(self.model, token, caches, length + start, buffers, step - start)
                return step + 1, new_logits, buffers, out, done

            step, logits, buffers, out, done = tf.while_loop(
                lambda step, _l, _b, _o, done: running(step, done, tf.minimum(start + chunk, max_new)),
                body, (start, logits, buffers, out, done), shape_invariants=state_shapes,
            )
            caches = [write_chunk(c, b, length + start) for c, b in zip(caches, buffers, strict=True)]
            return step, logits, caches, out, done

        step, _, _, out, _ = tf.while_loop(
            lambda step, _l, _c, _o, done: running(step, done, max_new),
            chunk_body, (step, logits, caches, out, done), shape_invariants=state_shapes,
        )
        return step, out

    def _clip_new(self, max_new_tokens: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(tf.cast(max_new_tokens, tf.int32), 0, self.block_size - 1)

    def _generate_ragged(
        self, ids: tf.RaggedTensor, max_new: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Crop each row to fit the cache, then decode (one batch if lengths agree, else per row)."""
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        check = tf.debugging.assert_positive(lengths, message="a prompt encodes to no tokens: give at least one")
        with tf.control_dependencies([check]):
            keep = self.block_size - max_new
        new_len = tf.minimum(lengths, keep)
        starts = tf.cast(ids.row_starts(), tf.int32) + lengths - new_len
        cropped = tf.gather(ids.flat_values, tf.ragged.range(starts, starts + new_len))
        dense = cropped.to_tensor(default_value=0)

        def batched() -> tuple[tf.Tensor, tf.Tensor]:
            return self._decode(dense, max_new, temperature, top_k, seed)

        def per_row() -> tuple[tf.Tensor, tf.Tensor]:
            def one(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                row = dense[i : i + 1, : new_len[i]]
                new_ids, counts = self._decode(row, max_new, temperature, top_k, seed)
                return new_ids[0], counts[0]

            return tf.map_fn(
                one, tf.range(tf.shape(dense)[0]),
                fn_output_signature=(tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)),
            )

        return tf.cond(tf.reduce_min(new_len) == tf.reduce_max(new_len), batched, per_row)

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
        cleaned = tf.strings.unicode_transcode(
            prompts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD,
            replace_control_characters=False,
        )
        check = tf.debugging.assert_equal(
            tf.reduce_all(tf.equal(cleaned, prompts)), True, message="a prompt is not valid UTF-8"
        )
        with tf.control_dependencies([check]):
            ids = self.graph_tokenizer.tokenize(tf.identity(prompts))
        max_new = self._clip_new(max_new_tokens)
        new_ids, counts = self._generate_ragged(ids, max_new, temperature, top_k, seed)
        text_ids = tf.RaggedTensor.from_tensor(new_ids, lengths=counts)
        completions = self.graph_tokenizer.detokenize(text_ids)
        completions = tf.reshape(completions, [-1])  # detokenize of an empty batch keeps [0]
        return {"completions": completions, "ids": new_ids, "num_tokens": counts}

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
        new_ids, counts = self._generate_ragged(
            ragged, self._clip_new(max_new_tokens), temperature, top_k, seed
        )
        return {"ids": new_ids, "num_tokens": counts}

    def signatures(self) -> dict[str, Any]:
        """The three ``tf.function`` objects, keyed by signature name (passed as functions, not concrete
        functions, so ``tf.saved_model.save`` records the optional inputs' defaults in the SignatureDef)."""
        return {"serving_default": self.serving_default, "logits": self.logits, "generate_ids": self.generate_ids}
