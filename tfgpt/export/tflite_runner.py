"""Run an exported ``.tflite`` (``prefill``/``decode`` signatures) with the LiteRT interpreter.

Example:
    >>> text = generate_tflite("export/tflite/model.tflite", "export/tokenizer", "ROMEO:",
    ...                        max_new_tokens=50)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfgpt.errors import ExportError, GenerationError
from tfgpt.export.records import check_tflite_digest
from tfgpt.stops import cut_at_stop


def make_interpreter(tflite_path: str | os.PathLike) -> Any:
    """A LiteRT interpreter (``ai-edge-litert``, else ``tf.lite.Interpreter``) for ``tflite_path``."""
    path = Path(tflite_path)
    if not path.is_file():
        raise ExportError(f"TFLite file not found: {path}")
    check_tflite_digest(path)
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is in the serve extra
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    try:
        return Interpreter(model_path=str(path))
    except ValueError as e:
        raise ExportError(f"{path} is not a valid TFLite model: {e}") from None


def _softmax_sample(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None,
                    rng: np.random.Generator) -> int:
    x = logits.astype(np.float64) / temperature
    if top_k is not None and 0 < top_k < x.size:
        kth = np.sort(x)[-top_k]
        x = np.where(x < kth, -np.inf, x)
    p = np.exp(x - x.max())
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum_before = np.cumsum(p[order]) - p[order]
        keep = order[cum_before < top_p]
        mask = np.zeros_like(p)
        mask[keep] = 1.0
        p = p * mask / (p * mask).sum()
    return int(rng.choice(p.size, p=p))


CACHE_ROUND = 64


def _crop_cache(cache: np.ndarray, length: int) -> np.ndarray:
    return cache if cache.shape[3] == length else np.ascontiguousarray(cache[:, :, :, :length])


class TFLiteGenerator:
    """Greedy/sampled decoding over a tfgpt ``.tflite`` file, one prompt at a time.

    Example:
        >>> gen = TFLiteGenerator("export/tflite/model.tflite")  # doctest: +SKIP
        >>> gen.generate_ids([1, 2, 3], max_new_tokens=8)  # doctest: +SKIP
    """

    def __init__(self, tflite_path: str | os.PathLike) -> None:
        self.interpreter = make_interpreter(tflite_path)
        signatures = self.interpreter.get_signature_list()
        if not {"prefill", "decode"} <= set(signatures):
            raise ExportError(f"{tflite_path} lacks prefill/decode signatures (has {sorted(signatures)})")
        self.prefill = self.interpreter.get_signature_runner("prefill")
        self.decode = self.interpreter.get_signature_runner("decode")
        cache = self.prefill.get_output_details()["cache"]  # static: [1, n_layer, 2, block_size, n_embd]
        self.cache_shape = tuple(int(d) for d in cache["shape"])
        self.block_size = self.cache_shape[3]
        # decode takes a cache of any length ≤ block_size (dim 3 is dynamic in files exported since
        # 2026-11-23; older files need the full block).
        sig = self.decode.get_input_details()["cache"].get("shape_signature", [])
        self.dynamic_cache = len(sig) == 5 and int(sig[3]) == -1
        self.vocab_size = int(self.decode.get_output_details()["logits"]["shape"][-1])

    def cache_length(self, n_context: int, max_new_tokens: int) -> int:
        """Cache positions decode needs for ``n_context`` prompt tokens and ``max_new_tokens`` new ones:
        rounded up to a multiple of :data:`CACHE_ROUND`, at most block_size (decode reads and copies
        the whole cache every step, so a short request should not carry a full-block cache)."""
        if not self.dynamic_cache:
            return self.block_size
        need = n_context + max(max_new_tokens, 1)
        return min(self.block_size, -(-need // CACHE_ROUND) * CACHE_ROUND)

    def generate_ids(
        self,
        ids: Sequence[int],
        max_new_tokens: int = 100,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        eot_id: int | None = None,
        vocab_limit: int | None = None,
        context: str = "shift",
    ) -> list[int]:
        """New token ids after ``ids`` (stops after ``eot_id``, which is included).

        ``vocab_limit``: ids ≥ it are never produced (pass the tokenizer's size when the model's
        vocabulary is padded past it, as :func:`tfgpt.generate` does). ``context``: past block_size,
        "shift" re-prefills the last half block and the new token, "slide" the last block_size tokens
        for every token (the semantics of :func:`tfgpt.generate_ids`, greedy ids equal to it).
        """
        if context not in ("shift", "slide"):
            raise GenerationError(f"context must be one of shift, slide, got {context!r}")
        refill = self.block_size // 2 + 1 if context == "shift" and self.block_size >= 2 else self.block_size
        window, limit = self._check_request(ids, max_new_tokens, vocab_limit)
        rng = np.random.default_rng(seed)
        out: list[int] = []
        if max_new_tokens == 0:
            return out
        cache_len = self.cache_length(len(window), max_new_tokens)
        result = self.prefill(ids=np.asarray([window], np.int32))
        logits, cache = result["logits"][0], _crop_cache(result["cache"], cache_len)
        position = len(window)
        while len(out) < max_new_tokens:
            logits = logits[:limit]  # the ids past the tokenizer's vocabulary are never picked
            if temperature is None or temperature <= 0:
                token = int(np.argmax(logits))
            else:
                token = _softmax_sample(logits, temperature, top_k, top_p, rng)
            out.append(token)
            window.append(token)
            if (eot_id is not None and token == eot_id) or len(out) == max_new_tokens:
                break
            if position >= self.block_size:  # cache full: re-prefill the last half block + the new token, or block
                window = window[-refill:]  # shift: the last half block and the new token; slide: the block
                result = self.prefill(ids=np.asarray([window], np.int32))
                result["cache"] = _crop_cache(result["cache"], cache_len)
                position = len(window)
            else:
                result = self.decode(token=np.asarray([[token]], np.int32), index=np.asarray(position, np.int32),
                                     cache=cache)
                position += 1
            logits, cache = result["logits"][0], result["cache"]
        return out

    def _check_request(
        self, ids: Sequence[int], max_new_tokens: int, vocab_limit: int | None
    ) -> tuple[list[int], int]:
        """The prompt's last block_size ids (a warning when that crops it) and the vocabulary limit, checked."""
        ids = [int(i) for i in ids]
        if not ids:
            raise GenerationError("the prompt is empty: give at least one token")
        if min(ids) < 0 or max(ids) >= self.vocab_size:
            raise GenerationError(f"prompt token ids must be in [0, {self.vocab_size})")
        if max_new_tokens < 0:
            raise GenerationError(f"max_new_tokens must be ≥ 0, got {max_new_tokens}")
        limit = self.vocab_size if vocab_limit is None else int(vocab_limit)
        if not 0 < limit <= self.vocab_size:
            raise GenerationError(f"vocab_limit must be in [1, {self.vocab_size}], got {vocab_limit}")
        if len(ids) > self.block_size and max_new_tokens > 0:
            warnings.warn(f"prompt has {len(ids)} tokens, more than block_size {self.block_size}: "
                          f"keeping the last {self.block_size}", stacklevel=3)
        return ids[-self.block_size:], limit


def check_tokenizer_matches(tflite_path: Path, tokenizer: Any, vocab_size: int) -> None:
    """Refuse a tokenizer that is not the model's: more ids than the model has logits, or another
    fingerprint than the one the export's ``export.json`` (two levels up, when present) recorded."""
    if tokenizer.vocab_size > vocab_size:
        raise ExportError(f"the tokenizer has {tokenizer.vocab_size} tokens but {tflite_path} has {vocab_size} "
                          f"logits: it is not this model's tokenizer (the export's is in its tokenizer/ dir)")
    info_path = tflite_path.parent.parent / "export.json"
    try:
        recorded = json.loads(info_path.read_text(encoding="utf-8"))["source"]["tokenizer"]["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # a .tflite on its own: the vocabulary size is all there is to check
    if tokenizer.fingerprint() != recorded:
        raise ExportError(f"the tokenizer is not the one {info_path} was exported with (fingerprint "
                          f"{tokenizer.fingerprint()} != {recorded}); use the export's tokenizer/ dir")


def generate_tflite(
    tflite_path: str | os.PathLike,
    tokenizer_dir: str | os.PathLike | None,
    prompt: str | bytes,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop: Sequence[str] | str | None = None,
    context: str = "shift",
) -> str:
    """Continue ``prompt`` with a ``.tflite`` export; returns the new text (what ``tfgpt generate
    --tflite FILE --tokenizer DIR`` prints). ``context`` as in :meth:`TFLiteGenerator.generate_ids`.

    ``tokenizer_dir`` defaults to ``tokenizer/`` next to the ``tflite/`` folder of an export.
    Sampling uses NumPy's generator seeded with ``seed`` (greedy when ``temperature`` ≤ 0).

    Example:
        >>> generate_tflite("export/tflite/model.tflite", "export/tokenizer", "ROMEO:", 20,
        ...                 temperature=0)  # doctest: +SKIP
    """
    from tfgpt.generate.generate import _check_prompt
    from tfgpt.tokenizers import load_tokenizer

    path = Path(tflite_path)
    gen = TFLiteGenerator(path)  # first: a missing or broken file is the error to report
    if tokenizer_dir is None:
        tokenizer_dir = path.parent.parent / "tokenizer"
    prompt = _check_prompt(prompt)
    tokenizer = load_tokenizer(tokenizer_dir)
    check_tokenizer_matches(path, tokenizer, gen.vocab_size)
    ids = tokenizer.encode(prompt)
    if not ids:
        raise GenerationError("the prompt encodes to no tokens")
    new = gen.generate_ids(ids, max_new_tokens, temperature, top_k, top_p, seed, tokenizer.eot_id,
                           vocab_limit=min(tokenizer.vocab_size, gen.vocab_size), context=context)
    if tokenizer.eot_id is not None and new and new[-1] == tokenizer.eot_id:
        new = new[:-1]
    text = tokenizer.decode_bytes(new).decode("utf-8", errors="replace")
    return cut_at_stop(text, [stop] if isinstance(stop, str) else list(stop or []))[0]
