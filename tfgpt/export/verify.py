"""Checks that an export computes what the Keras model computes.

SavedModel: loaded with the TF1 session loader that TensorFlow Serving's C++ loader mirrors
(``tf.compat.v1.saved_model.loader.load``), the ``logits`` signature is within 1e-5 of the Keras
model and greedy ``serving_default`` completions equal :func:`tfgpt.generate`; ``saved_model_cli
run`` (a separate process) returns the same greedy ids. TFLite: prefill logits within tolerance and
float greedy tokens equal to Keras; int8 greedy tokens compared, the first divergence reported.

Example:
    >>> figures = verify_export("export/shakespeare", model, tokenizer, info)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tfgpt.errors import ExportError
from tfgpt.export.warmup import sample_prompts

LOGITS_TOL = 1e-5
VERIFY_NEW_TOKENS = 16
#: ``saved_model_cli`` itself, in a fresh interpreter that first registers the TF-Text ops (TF Serving
#: links them in; a plain ``python -m ...saved_model_cli`` cannot load an in-graph BPE/special-token tokenizer).
SAVED_MODEL_CLI = (
    "import sys, tensorflow_text; from tensorflow.python.tools import saved_model_cli; "
    "sys.argv[0] = 'saved_model_cli'; saved_model_cli.main()"
)


class SavedModelSession:
    """A SavedModel loaded once into a TF1 session, as TensorFlow Serving holds it; :meth:`run` runs a signature.

    Loading and the first run of each signature take seconds (graph import, Grappler); later runs reuse
    them, so checking several requests against one export costs one load.

    Example:
        >>> with SavedModelSession("export/savedmodel/m/1") as sm:  # doctest: +SKIP
        ...     sm.run("logits", {"ids": [[1, 2, 3]]})["logits"].shape
        (1, 3, 65)
    """

    def __init__(self, sm_dir: str | os.PathLike) -> None:
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - registers the TF-Text ops of in-graph tokenizers

        self.session = tf.compat.v1.Session(graph=tf.Graph())
        self.meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(sm_dir))

    def run(self, signature: str, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        """The outputs of ``signature`` for ``feeds``; missing inputs take the SignatureDef's recorded defaults."""
        import tensorflow as tf

        sig = self.meta.signature_def[signature]
        feed = {}
        for key, info in sig.inputs.items():
            if key in feeds:
                feed[info.name] = feeds[key]
            elif key in sig.defaults:
                feed[info.name] = tf.make_ndarray(sig.defaults[key])
            else:
                raise ExportError(f"signature {signature!r} needs input {key!r}")
        names = sorted(sig.outputs)
        values = self.session.run([sig.outputs[k].name for k in names], feed)
        return dict(zip(names, values, strict=True))

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> SavedModelSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def session_run(sm_dir: str | os.PathLike, signature: str, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run one signature through ``tf.compat.v1.saved_model.loader.load`` in a fresh graph/session.

    Missing inputs are filled from the SignatureDef's recorded defaults (:class:`SavedModelSession` runs several).

    Example:
        >>> session_run("export/savedmodel/m/1", "logits", {"ids": [[1, 2, 3]]})["logits"].shape  # doctest: +SKIP
        (1, 3, 65)
    """
    with SavedModelSession(sm_dir) as session:
        return session.run(signature, feeds)


def _first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _keras_greedy_ids(model: Any, ids: list[int], n: int, tokenizer: Any) -> list[int]:
    """Greedy ids from :func:`tfgpt.generate_ids`, limited to the tokenizer's vocabulary as ``tfgpt.generate``."""
    from tfgpt.generate import generate_ids

    eot_id, limit = tokenizer.eot_id, min(tokenizer.vocab_size, model.config.vocab_size)
    out = [int(t) for t in generate_ids(model, [ids], max_new_tokens=n, temperature=0.0, eot_id=eot_id,
                                        vocab_limit=limit)[0]]
    if eot_id is not None and eot_id in out:
        out = out[: out.index(eot_id) + 1]
    return out


def saved_model_cli_ids(sm_dir: str | os.PathLike, ids: list[int], n: int) -> list[int]:
    """Greedy ``generate_ids`` through ``saved_model_cli run`` (a separate process, TF1 session, TF-Text ops
    registered as in TF Serving)."""
    with tempfile.TemporaryDirectory(prefix="tfgpt_smcli_") as tmp:
        ids_file = Path(tmp) / "in_ids.npy"
        np.save(ids_file, np.asarray([ids], np.int32), allow_pickle=False)
        exprs = f"max_new_tokens={int(n)};temperature=0.0;top_k=0;seed=0"
        cmd = [sys.executable, "-c", SAVED_MODEL_CLI, "run", "--dir", str(sm_dir),
               "--tag_set", "serve", "--signature_def", "generate_ids", "--inputs", f"ids={ids_file}",
               "--input_exprs", exprs, "--outdir", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        out = Path(tmp) / "ids.npy"
        if proc.returncode != 0 or not out.is_file():
            raise ExportError(f"saved_model_cli run failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        row = np.load(out, allow_pickle=False)[0]
    return [int(t) for t in row if t >= 0]


def verify_savedmodel(sm_dir: Path, model: Any, tokenizer: Any, prompts: list[str],
                      max_new_tokens: int = VERIFY_NEW_TOKENS) -> dict[str, Any]:
    """Figures for the SavedModel; raises ExportError when a check fails."""
    import tfgpt

    encoded = [tokenizer.encode(p) for p in prompts]
    n = min(max_new_tokens, model.config.block_size - max(len(e) for e in encoded))
    if n < 1:
        raise ExportError("verification prompts do not fit block_size")
    ids = np.asarray([encoded[0]], np.int32)
    with SavedModelSession(sm_dir) as session:
        sm_logits = session.run("logits", {"ids": ids})["logits"]
        diff = float(np.max(np.abs(sm_logits - np.asarray(model(ids)))))
        if not diff <= LOGITS_TOL:
            raise ExportError(f"SavedModel logits differ from Keras by {diff:.3g} (> {LOGITS_TOL})")
        expected = [tfgpt.generate(model, tokenizer, p, max_new_tokens=n, temperature=0.0) for p in prompts]
        got = session.run("serving_default", {"prompts": np.asarray(prompts, object), "max_new_tokens": n,
                                              "temperature": 0.0, "top_k": 0, "seed": 0})
    completions = [c.decode("utf-8") for c in got["completions"]]
    if completions != expected:
        raise ExportError(f"SavedModel greedy completions {completions!r} differ from Keras {expected!r}")
    cli = saved_model_cli_ids(sm_dir, encoded[0], n)
    keras_ids = _keras_greedy_ids(model, encoded[0], n, tokenizer)
    keras_ids = [t for t in keras_ids if t != tokenizer.eot_id]
    if cli != keras_ids:
        raise ExportError(f"saved_model_cli greedy ids {cli} differ from Keras {keras_ids}")
    return {
        "loader": "tf.compat.v1.saved_model.loader.load",
        "logits_max_abs_diff": diff,
        "prompts": prompts,
        "max_new_tokens": n,
        "greedy_completions_equal": True,
        "saved_model_cli_greedy_ids_equal": True,
    }


def verify_tflite(tflite_dir: Path, model: Any, tokenizer: Any, prompts: list[str],
                  max_new_tokens: int = VERIFY_NEW_TOKENS) -> dict[str, Any]:
    """Figures for model.tflite (must equal Keras) and model_int8.tflite (first divergence reported)."""
    from tfgpt.export.tflite_runner import TFLiteGenerator

    figures: dict[str, Any] = {}
    for fname in ("model.tflite", "model_int8.tflite"):
        path = tflite_dir / fname
        if not path.is_file():
            continue
        gen = TFLiteGenerator(path)
        per_prompt = []
        max_diff = 0.0
        for prompt in prompts:
            ids = tokenizer.encode(prompt)
            n = min(max_new_tokens, model.config.block_size - len(ids))
            ref_logits = np.asarray(model(np.asarray([ids], np.int32)))[0, -1]
            lite_logits = gen.prefill(ids=np.asarray([ids], np.int32))["logits"][0]
            max_diff = max(max_diff, float(np.max(np.abs(ref_logits - lite_logits))))
            expected = _keras_greedy_ids(model, ids, n, tokenizer)
            got = gen.generate_ids(ids, n, temperature=0.0, eot_id=tokenizer.eot_id,
                                   vocab_limit=min(tokenizer.vocab_size, gen.vocab_size))
            per_prompt.append(
                {"prompt": prompt, "tokens": len(expected), "first_divergence": _first_divergence(got, expected),
                 "agreeing": sum(a == b for a, b in zip(got, expected, strict=False))}
            )
        equal = all(p["first_divergence"] is None for p in per_prompt)
        agreement = sum(p["agreeing"] for p in per_prompt) / max(sum(p["tokens"] for p in per_prompt), 1)
        figures[fname] = {
            "prefill_logits_max_abs_diff": max_diff, "greedy_tokens_equal": equal, "token_agreement": agreement,
            "prompts": per_prompt,
        }
        if fname == "model.tflite" and not equal:
            raise ExportError(f"TFLite float greedy tokens differ from Keras: {per_prompt}")
        if not equal:
            warnings.warn(divergence_warning(fname, per_prompt, agreement), stacklevel=2)
    return figures


def divergence_warning(fname: str, per_prompt: list[dict[str, Any]], agreement: float) -> str:
    """The warning for a quantized file whose greedy tokens part from Keras's: how often and where.

    Example:
        >>> divergence_warning("model_int8.tflite", [{"prompt": "The ", "tokens": 16, "first_divergence": 4}], 0.75)
        "model_int8.tflite: greedy tokens agree with Keras at 75% of 16 positions; first divergence at token 4 \
of prompt 'The ' (int8 weights move the logits a little; model.tflite matches exactly)"
    """
    first = next(p for p in per_prompt if p["first_divergence"] is not None)
    total = sum(p["tokens"] for p in per_prompt)
    return (f"{fname}: greedy tokens agree with Keras at {agreement:.0%} of {total} positions; first divergence "
            f"at token {first['first_divergence']} of prompt {first['prompt']!r} (int8 weights move the logits a "
            "little; model.tflite matches exactly)")


def verify_export(export_dir: str | os.PathLike, model: Any, tokenizer: Any, info: dict[str, Any]) -> dict[str, Any]:
    """Run the checks for every format in ``info`` (the export.json being written)."""
    export_dir = Path(export_dir)
    prompts = sample_prompts(tokenizer)
    result: dict[str, Any] = {}
    if "savedmodel" in info:
        result["savedmodel"] = verify_savedmodel(export_dir / info["savedmodel"]["path"], model, tokenizer, prompts)
    if "tflite" in info:
        result["tflite"] = verify_tflite(export_dir / "tflite", model, tokenizer, prompts)
    if "hf" in info:
        from tfgpt.export.hf import verify_hf

        result["hf"] = verify_hf(export_dir / info["hf"]["path"], model, tokenizer, prompts)
    return result
