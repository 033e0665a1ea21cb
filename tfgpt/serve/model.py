"""The SavedModel of an export dir as the server runs it: JSON inputs in, checked, numpy outputs out.

:class:`ExportedModel` loads the SavedModel once, fills in the signature's defaults, holds
``max_new_tokens`` to the server's cap, and turns the in-graph tokenizer's errors into 400s.

Example:
    >>> m = ExportedModel("export/shakespeare")  # doctest: +SKIP
    >>> m.predict("serving_default", {"prompts": ["ROMEO:"], "max_new_tokens": 8})["completions"]  # doctest: +SKIP
    array([b'ROMEO: ...'], dtype=object)
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from tfgpt.errors import ExportError
from tfgpt.serve.errors import BadRequest
from tfgpt.serve.jsonio import MAX_BATCH
from tfgpt.serve.rest import json_to_array

DEFAULT_MAX_NEW_TOKENS_CAP = 256

#: The in-graph tokenizer's error messages, and the 400 each becomes.
_TOKENIZER_ERRORS = {
    "not valid UTF-8": "a prompt is not valid UTF-8",
    "encodes to no tokens": "a prompt encodes to no tokens: give at least one character",
    "not in the char vocabulary": "a prompt holds characters that are not in the vocabulary",
}


class ExportedModel:
    """The SavedModel of an export dir, loaded once; ``predict`` converts and checks JSON inputs.

    ``max_new_tokens_cap`` bounds what a request may ask for (and the default it gets), never above
    ``block_size - 1``; a batch holds at most :data:`~tfgpt.serve.jsonio.MAX_BATCH` rows (413 otherwise).
    """

    def __init__(self, export_dir: str | os.PathLike, max_new_tokens_cap: int = DEFAULT_MAX_NEW_TOKENS_CAP) -> None:
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - registers the TF-Text ops of in-graph tokenizers (BPE, specials)

        from tfgpt.export.export import load_export_info, savedmodel_dir, signature_specs

        self.export_dir = Path(export_dir)
        self.info = load_export_info(export_dir)
        self.sm_dir = savedmodel_dir(export_dir, self.info)  # a tfgpt export's own graph, or an error
        self.name = self.info["name"]
        self.version = int(self.info["version"])
        self.block_size = int(self.info["source"]["model"]["block_size"])
        self.max_new_tokens_cap = min(int(max_new_tokens_cap), self.block_size - 1)
        self.specs = signature_specs(self.sm_dir)
        try:
            self._loaded = tf.saved_model.load(str(self.sm_dir))
        except (tf.errors.OpError, ValueError, OSError, IndexError, KeyError) as e:  # e.g. an older export's
            # damaged variables, which no recorded digest caught: one line, not TensorFlow's traceback
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ExportError(f"{self.sm_dir}: the SavedModel could not be loaded ({first}); re-export it") from None
        self._tf = tf

    def feeds(self, signature: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """The tensors ``signature`` takes for JSON-like ``inputs``: defaults filled in, types, shapes and
        ``max_new_tokens`` checked (a :class:`BadRequest` otherwise)."""
        if signature not in self.specs:
            raise BadRequest(f"unknown signature_name {signature!r}; have {', '.join(sorted(self.specs))}")
        spec = self.specs[signature]
        unknown = sorted(set(inputs) - set(spec["inputs"]))
        if unknown:
            raise BadRequest(f"unknown input(s) {', '.join(unknown)} for signature {signature!r}; "
                             f"expected {', '.join(sorted(spec['inputs']))}")
        feeds: dict[str, Any] = {}
        for key, info in spec["inputs"].items():
            if key in inputs:
                value = inputs[key]
            elif key in spec["defaults"]:
                value = spec["defaults"][key]
                if key == "max_new_tokens":
                    value = min(value, self.max_new_tokens_cap)
            else:
                raise BadRequest(f"missing input {key!r} for signature {signature!r}")
            array = json_to_array(key, value, info)
            if array.ndim and len(array) > MAX_BATCH:
                raise BadRequest(f"input {key!r} holds {len(array)} rows: this server takes at most {MAX_BATCH} "
                                 "per request", status=413)
            feeds[key] = self._tf.constant(array, dtype=info["dtype"])
        rows = {k: int(v.shape[0]) for k, v in sorted(feeds.items()) if spec["inputs"][k]["shape"] == [-1]}
        if len(set(rows.values())) > 1:
            raise BadRequest(f"signature {signature!r} takes one row of each input per prompt; got "
                             + ", ".join(f"{n} {k}" for k, n in rows.items()))
        check_settings({k: v.numpy() for k, v in feeds.items() if k in _SETTING_MINIMA}, self.max_new_tokens_cap)
        return feeds

    def predict(self, signature: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Run ``signature`` on JSON-like ``inputs`` (missing optional inputs take their defaults)."""
        feeds = self.feeds(signature, inputs)
        if "ids" in feeds and signature in ("logits", "generate_ids"):
            ids = feeds["ids"].numpy()
            vocab = int(self.info["source"]["model"]["vocab_size"])
            if ids.min() < 0 or ids.max() >= vocab:
                raise BadRequest(f"ids must be in [0, {vocab})")
            if signature == "logits" and ids.shape[1] > self.block_size:
                raise BadRequest(f"ids has {ids.shape[1]} positions, more than block_size {self.block_size}")
        return self.run(signature, feeds)

    def run(self, signature: str, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        """Run ``signature`` on checked ``feeds`` (:meth:`feeds`' tensors or numpy arrays); the in-graph
        tokenizer's errors become a :class:`BadRequest` naming the characters the vocabulary lacks."""
        try:
            out = self._loaded.signatures[signature](**feeds)
        except self._tf.errors.InvalidArgumentError as e:
            message = next((v for k, v in _TOKENIZER_ERRORS.items() if k in e.message), e.message.split("\n")[0])
            if "not in the char vocabulary" in e.message and "prompts" in feeds:
                prompts = [p.decode("utf-8", "replace") for p in np.asarray(feeds["prompts"]).reshape(-1)]
                message = self._which_characters(prompts) or message
            raise BadRequest(message) from None
        return {k: v.numpy() for k, v in out.items()}

    @functools.cached_property
    def python_tokenizer(self) -> Any:
        """The export's tokenizer in Python (loaded once, on the first bad prompt), or None if unreadable."""
        from tfgpt.tokenizers import load_tokenizer

        try:
            return load_tokenizer(self.export_dir / str(self.info.get("tokenizer", "tokenizer")))
        except Exception:  # noqa: BLE001 - the in-graph message stands without it
            return None

    def _which_characters(self, prompts: Any) -> str | None:
        """Name the characters the vocabulary lacks, as the CLI does: the export's tokenizer, in Python."""
        from tfgpt.errors import TokenizerError

        tokenizer = self.python_tokenizer
        if tokenizer is None:
            return None
        for i, prompt in enumerate([prompts] if isinstance(prompts, str) else list(prompts or [])):
            try:
                tokenizer.encode(prompt)
            except TokenizerError as e:
                return f"prompt {i}: {e}"
            except Exception:  # noqa: BLE001 - not a string: the signature's own message stands
                return None
        return None


#: The generation settings a request may give, scalar or one per prompt, and their smallest valid value.
_SETTING_MINIMA = {"max_new_tokens": 0, "temperature": 0.0, "top_k": 0}


def check_settings(settings: dict[str, np.ndarray], cap: int) -> None:
    """A :class:`BadRequest` naming the first setting out of range (every row checked), else None.

    Example:
        >>> check_settings({"max_new_tokens": np.array([8, 40])}, cap=31)
        Traceback (most recent call last):
        ...
        tfgpt.serve.errors.BadRequest: max_new_tokens 40 is above this server's cap (31)
    """
    for key, low in _SETTING_MINIMA.items():
        if key in settings and (np.asarray(settings[key]) < low).any():
            hint = " (0: no top-k filter)" if key == "top_k" else " (0: greedy)" if key == "temperature" else ""
            worst = np.asarray(settings[key]).min()
            shown = f"{worst:g}" if isinstance(low, float) else str(int(worst))
            raise BadRequest(f"{key} must be ≥ {low:g}{hint}, got {shown}")
    if "max_new_tokens" in settings and (np.asarray(settings["max_new_tokens"]) > cap).any():
        raise BadRequest(f"max_new_tokens {int(np.max(settings['max_new_tokens']))} is above this server's cap "
                         f"({cap})")
