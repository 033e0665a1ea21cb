"""``export_run``: a run dir in, an export dir out (SavedModel, TFLite, tokenizer, ``export.json``).

Export dir layout::

    EXPORT/savedmodel/<name>/<version>/      saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests
    EXPORT/tflite/model.tflite               (+ model_int8.tflite with quantize="int8")
    EXPORT/tokenizer/                        the run's tokenizer (for the TFLite runner)
    EXPORT/export.json                       what was exported, from which run and checkpoint, verification

The whole dir is built in a temporary sibling and renamed into place (an existing export at
``out`` is replaced only once the new one is complete). ``out`` must be absent, empty or a previous
export (it holds ``export.json``), and must not be or contain the run dir.

Example:
    >>> info = export_run("runs/shakespeare", "export/shakespeare", quantize="int8", verify=True)
    >>> info["verification"]["savedmodel"]["logits_max_abs_diff"] <= 1e-5
    True
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfgpt.atomic import make_temp_dir
from tfgpt.errors import ExportError

EXPORT_JSON = "export.json"
FORMATS = ("savedmodel", "tflite")
QUANTIZE = ("int8",)
WARMUP_FILE = "tf_serving_warmup_requests"
FORMAT_VERSION = 1


def _check_formats(formats: Sequence[str] | str) -> list[str]:
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = list(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ExportError(f"unsupported export format {', '.join(bad) or '(none)'}; choose from {', '.join(FORMATS)}")
    return formats


def default_name(run_dir: str | os.PathLike) -> str:
    """A TF Serving model name from the run dir's name (letters, digits, ``_`` and ``-``)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(run_dir).resolve().name).strip("_")
    return name or "tfgpt"


def signature_specs(saved_model_dir: str | os.PathLike) -> dict[str, Any]:
    """``{signature: {"inputs": {name: {dtype, shape}}, "outputs": ..., "defaults": {...}}}`` from saved_model.pb."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    specs: dict[str, Any] = {}
    for key, sig in proto.meta_graphs[0].signature_def.items():
        if key.startswith("__"):
            continue

        def info(m: Any) -> dict[str, Any]:
            return {
                k: {"dtype": tf.dtypes.as_dtype(v.dtype).name, "shape": [d.size for d in v.tensor_shape.dim]}
                for k, v in sorted(m.items())
            }

        specs[key] = {
            "inputs": info(sig.inputs),
            "outputs": info(sig.outputs),
            "defaults": {k: tf.make_ndarray(v).item() for k, v in sorted(sig.defaults.items())},
        }
    return specs


def sample_prompts(tokenizer: Any, n: int = 3) -> list[str]:
    """A few prompts the tokenizer can encode (for verification and warmup)."""
    candidates = ["ROMEO:", "The ", "Hello, world", "a", "\n"]
    good: list[str] = []
    for text in candidates:
        try:
            if tokenizer.encode(text):
                good.append(text)
        except Exception:  # noqa: BLE001 - char vocabularies reject unknown characters
            continue
    specials = set(tokenizer.special_tokens.values())
    plain = [i for i in range(tokenizer.vocab_size) if i not in specials]
    k = 0
    while len(good) < n and plain:
        text = tokenizer.decode(plain[k % len(plain): k % len(plain) + 3 + k])
        k += 1
        if text and text not in good:
            good.append(text)
        if k > 50:
            break
    return good[:n]


def write_warmup(sm_dir: Path, name: str, prompts: list[str], max_new_tokens: int = 4) -> Path:
    """``assets.extra/tf_serving_warmup_requests``: a TFRecord of ``PredictionLog``\\ s, one per signature."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    extra = sm_dir / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    path = extra / WARMUP_FILE
    params = {
        "max_new_tokens": tf.make_tensor_proto(max_new_tokens, tf.int32),
        "temperature": tf.make_tensor_proto(0.0, tf.float32),
        "top_k": tf.make_tensor_proto(0, tf.int32),
        "seed": tf.make_tensor_proto(0, tf.int32),
    }
    requests = [
        ("serving_default", {"prompts": tf.make_tensor_proto(prompts[:1], tf.string), **params}),
        ("logits", {"ids": tf.make_tensor_proto([[0, 0]], tf.int32)}),
        ("generate_ids", {"ids": tf.make_tensor_proto([[0]], tf.int32), **params}),
    ]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, inputs in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=name, signature_name=signature), inputs=inputs
            )
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def _save_savedmodel(model: Any, tokenizer: Any, sm_dir: Path, name: str) -> dict[str, Any]:
    import tensorflow as tf

    from tfgpt.export.savedmodel import ServingModule

    module = ServingModule(model, tokenizer)
    try:
        tf.saved_model.save(module, str(sm_dir), signatures=module.signatures())
    except Exception as e:  # noqa: BLE001 - tracing can fail in many ways; name the step
        raise ExportError(f"saving the SavedModel failed: {type(e).__name__}: {e}") from None
    write_warmup(sm_dir, name, sample_prompts(tokenizer))
    return {"signatures": signature_specs(sm_dir), "warmup": f"assets.extra/{WARMUP_FILE}", "xla": False}


def _check_out(run_dir: Path, out: Path) -> None:
    """Refuse an ``out`` that replacing would destroy anything but a previous export."""
    run, target = run_dir.resolve(), out.resolve()
    if target == run or target in run.parents:
        raise ExportError(f"export dir {out} is or contains the run dir {run_dir}: choose another --out")
    if out.exists() and not out.is_dir():
        raise ExportError(f"export dir {out} exists and is not a directory: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_JSON).is_file():
        raise ExportError(f"export dir {out} is not empty and holds no {EXPORT_JSON} (not a previous export): "
                          f"refusing to replace it; choose another --out or remove it")


def export_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    formats: Sequence[str] | str = ("savedmodel", "tflite"),
    quantize: str | None = None,
    verify: bool = False,
    name: str | None = None,
    version: int = 1,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Export the run at ``run_dir`` to ``out``; returns the content of ``out/export.json``.

    ``formats``: any of "savedmodel", "tflite" (a list or a comma-separated string);
    ``quantize="int8"`` adds ``tflite/model_int8.tflite``; ``verify`` checks the exports against
    the Keras model (see :mod:`tfgpt.export.verify`) and records the figures, raising
    :class:`~tfgpt.errors.ExportError` if a check fails.

    Example:
        >>> export_run("runs/shakespeare", "export/shakespeare", formats="savedmodel,tflite", quantize="int8")
    """
    import tfgpt
    from tfgpt.runs import TOKENIZER_DIR, weights_path

    formats = _check_formats(formats)
    if quantize is not None and quantize not in QUANTIZE:
        raise ExportError(f"unsupported quantization {quantize!r}; choose from {', '.join(QUANTIZE)}")
    if quantize is not None and "tflite" not in formats:
        raise ExportError("--quantize int8 applies to the tflite format: add it to --format")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"version must be a positive integer, got {version!r}")
    name = name or default_name(run_dir)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ExportError(f"model name {name!r} may only hold letters, digits, '_' and '-'")
    out = Path(out)
    _check_out(Path(run_dir), out)
    model, tokenizer = tfgpt.load(run_dir, checkpoint=checkpoint)
    weights = weights_path(run_dir, checkpoint)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, f".{out.name}.")
    try:
        # copyfile, not copy2: the export's files get the umask's mode, not the run's (possibly owner-only) one
        shutil.copytree(Path(run_dir) / TOKENIZER_DIR, tmp / "tokenizer", copy_function=shutil.copyfile)
        info: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "tfgpt_version": tfgpt.__version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "source": {
                "run": str(Path(run_dir).resolve()),
                "checkpoint": str(weights.resolve()),
                "model": model.config.to_dict(),
                "tokenizer": {"type": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                              "eot_id": tokenizer.eot_id, "fingerprint": tokenizer.fingerprint()},
            },
            "name": name,
            "version": version,
            "formats": formats,
            "tokenizer": "tokenizer",
        }
        if "savedmodel" in formats:
            rel = f"savedmodel/{name}/{version}"
            sm = _save_savedmodel(model, tokenizer, tmp / rel, name)
            info["savedmodel"] = {"path": rel, **sm}
        if "tflite" in formats:
            from tfgpt.export.tflite import convert_tflite

            sizes = convert_tflite(model, tmp / "tflite", quantize=quantize)
            info["tflite"] = {
                "files": {f"tflite/{k}": {"size_bytes": v} for k, v in sizes.items()},
                "signatures": {
                    "prefill": {"inputs": {"ids": "int32 [1, time]"},
                                "outputs": {"logits": "float32 [1, vocab]", "cache": "float32 cache"}},
                    "decode": {"inputs": {"token": "int32 [1, 1]", "index": "int32 []",
                                          "cache": "float32 cache, dim 3 any length <= block_size"},
                               "outputs": {"logits": "float32 [1, vocab]", "cache": "float32 cache"}},
                },
                "cache_shape": [1, model.config.n_layer, 2, model.config.block_size, model.config.n_embd],
                "builtins_only": True,
            }
            if "model_int8.tflite" in sizes:
                info["tflite"]["int8_size_ratio"] = round(sizes["model_int8.tflite"] / sizes["model.tflite"], 4)
        info["verification"] = None
        if verify:
            from tfgpt.export.verify import verify_export

            info["verification"] = verify_export(tmp, model, tokenizer, info)
        (tmp / EXPORT_JSON).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def load_export_info(export_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``export.json`` of an export dir (a clear error if it is missing or broken)."""
    from tfgpt.errors import RunDirError

    path = Path(export_dir) / EXPORT_JSON
    if not path.is_file():
        raise RunDirError(f"{export_dir} is not an export directory: {EXPORT_JSON} is missing (run tfgpt export)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(info, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return info
