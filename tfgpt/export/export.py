"""``export_run``: a run dir in, an export dir out (SavedModel, TFLite, tokenizer, ``export.json``).

Export dir layout::

    EXPORT/savedmodel/<name>/<version>/      saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests
    EXPORT/tflite/model.tflite               (+ model_int8.tflite with quantize="int8")
    EXPORT/tokenizer/                        the run's tokenizer (for the TFLite runner)
    EXPORT/hf/                               with format "hf": model.safetensors, config.json, vocab.json,
                                             merges.txt (GPT2LMHeadModel.from_pretrained / AutoTokenizer)
    EXPORT/export.json                       what was exported, from which run and checkpoint, verification

The whole dir is built in a temporary sibling and renamed into place (an existing export at
``out`` is replaced only once the new one is complete). ``out`` must be absent, empty or a previous
export (it holds ``export.json``), and must not be or contain the run dir.

The steps, each a function here: check the options and ``out``, load the run, copy its
tokenizer, write the SavedModel (+ warmup requests) and the TFLite files, verify, write
``export.json``, rename into place. Notes on why the export looks as it does: ``docs/design/export.md``.

Example (needs a trained run dir, e.g. from ``tfgpt train``):
    >>> info = export_run("runs/shakespeare", "export/shakespeare", quantize="int8", verify=True)  # doctest: +SKIP
    >>> info["verification"]["savedmodel"]["logits_max_abs_diff"] <= 1e-5  # doctest: +SKIP
    True
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfgpt import __version__
from tfgpt.atomic import staged_dir
from tfgpt.data.shards import file_sha256
from tfgpt.errors import ExportError
from tfgpt.export.records import EXPORT_JSON
from tfgpt.export.verify import verify_export
from tfgpt.export.warmup import WARMUP_FILE, sample_prompts, write_warmup
from tfgpt.prompt_templates import run_template

SAVED_MODEL_PB = "saved_model.pb"
FORMATS = ("savedmodel", "tflite", "hf")
QUANTIZE = ("int8",)
FORMAT_VERSION = 1
TOKENIZER = "tokenizer"  # the run's tokenizer, copied for the TFLite runner
HF_DIR = "hf"  # format "hf": a Hugging Face GPT-2 dir
#: The SavedModel's subdirectories whose files TF's loader reads besides saved_model.pb (sha256s in export.json).
LOADED_DIRS = ("variables", "assets")


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


def _check_options(formats: Sequence[str] | str, quantize: str | None, version: int, name: str) -> list[str]:
    """The formats to write, after refusing an unknown format or quantization, a bad version or name."""
    formats = _check_formats(formats)
    if quantize is not None and quantize not in QUANTIZE:
        raise ExportError(f"unsupported quantization {quantize!r}; choose from {', '.join(QUANTIZE)}")
    if quantize is not None and "tflite" not in formats:
        raise ExportError("--quantize int8 applies to the tflite format: add it to --format")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"version must be a positive integer, got {version!r}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ExportError(f"model name {name!r} may only hold letters, digits, '_' and '-'")
    return formats


def _source_info(run_dir: Path, weights: Path, model: Any, tokenizer: Any, name: str, version: int,
                 formats: list[str]) -> dict[str, Any]:
    """The head of export.json: what is exported, from which run and weights file."""
    return {
        "format_version": FORMAT_VERSION,
        "tfgpt_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "source": {
            "run": str(run_dir.resolve()),
            "checkpoint": str(weights.resolve()),
            "model": model.config.to_dict(),
            "tokenizer": {"type": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                          "eot_id": tokenizer.eot_id, "fingerprint": tokenizer.fingerprint()},
            "template": run_template(run_dir),  # the chat template: "alpaca" (instruct-tuned) or None
        },
        "name": name,
        "version": version,
        "formats": formats,
        "tokenizer": TOKENIZER,
    }


def _save_savedmodel(model: Any, tokenizer: Any, export_dir: Path, name: str, version: int) -> dict[str, Any]:
    """Write ``savedmodel/<name>/<version>/`` (signatures + warmup requests); its export.json entry."""
    import tensorflow as tf

    from tfgpt.export.savedmodel import ServingModule

    rel = f"savedmodel/{name}/{version}"
    sm_dir = export_dir / rel
    module = ServingModule(model, tokenizer)
    try:
        tf.saved_model.save(module, str(sm_dir), signatures=module.signatures())
    except Exception as e:  # noqa: BLE001 - tracing can fail in many ways; name the step
        raise ExportError(f"saving the SavedModel failed: {type(e).__name__}: {e}") from None
    write_warmup(sm_dir, name, sample_prompts(tokenizer))
    return {"path": rel, "signatures": signature_specs(sm_dir), "warmup": f"assets.extra/{WARMUP_FILE}", "xla": False,
            "saved_model_sha256": file_sha256(sm_dir / SAVED_MODEL_PB), "files_sha256": loaded_file_digests(sm_dir)}


def loaded_file_digests(sm_dir: Path) -> dict[str, str]:
    """The sha256 of each file under the SavedModel's :data:`LOADED_DIRS` (variables, assets), by relative path."""
    files = [p for d in LOADED_DIRS for p in sorted((sm_dir / d).rglob("*")) if p.is_file()]
    return {p.relative_to(sm_dir).as_posix(): file_sha256(p) for p in files}


def _save_tflite(model: Any, export_dir: Path, quantize: str | None) -> dict[str, Any]:
    """Write ``tflite/model.tflite`` (+ ``model_int8.tflite``); its export.json entry."""
    from tfgpt.export.tflite import convert_tflite

    sizes = convert_tflite(model, export_dir / "tflite", quantize=quantize)
    c = model.config
    entry: dict[str, Any] = {
        "files": {f"tflite/{k}": {"size_bytes": v, "sha256": file_sha256(export_dir / "tflite" / k)}
                  for k, v in sizes.items()},
        "signatures": {
            "prefill": {"inputs": {"ids": "int32 [1, time]"},
                        "outputs": {"logits": "float32 [1, vocab]", "cache": "float32 cache"}},
            "decode": {"inputs": {"token": "int32 [1, 1]", "index": "int32 []",
                                  "cache": "float32 cache, dim 3 any length <= block_size"},
                       "outputs": {"logits": "float32 [1, vocab]", "cache": "float32 cache"}},
        },
        "cache_shape": [1, c.n_layer, 2, c.block_size, c.n_embd],
        "builtins_only": True,
    }
    if "model_int8.tflite" in sizes:
        entry["int8_size_ratio"] = round(sizes["model_int8.tflite"] / sizes["model.tflite"], 4)
    return entry


def _save_hf(model: Any, tokenizer: Any, export_dir: Path) -> dict[str, Any]:
    """Write ``hf/`` (a Hugging Face GPT-2 dir, :func:`tfgpt.convert.hf.write_hf`); its export.json entry."""
    from tfgpt.convert.hf import write_hf

    files = write_hf(model, tokenizer, export_dir / HF_DIR)
    return {"path": HF_DIR, "files": {f"{HF_DIR}/{f}": {"size_bytes": (export_dir / HF_DIR / f).stat().st_size}
                                      for f in files}, "loads_with": "transformers.GPT2LMHeadModel.from_pretrained"}


def _check_hf(model: Any, tokenizer: Any, run_dir: Path, formats: list[str]) -> None:
    """With format "hf", refuse before any work a run whose shape or tokenizer a Hugging Face GPT-2 cannot hold."""
    from tfgpt.convert.hf import check_hf_exportable
    from tfgpt.errors import ConvertError

    if "hf" not in formats:
        return
    try:
        check_hf_exportable(model, tokenizer, f"{run_dir}: --format hf")
    except ConvertError as e:
        raise ExportError(str(e)) from None


def _export_classifier(run_dir: Path, out: Path, formats: Sequence[str] | str | None, quantize: str | None,
                       verify: bool, name: str, version: int, checkpoint: str | None) -> dict[str, Any]:
    """``export_run`` for a classifier run: its SavedModel only (:mod:`tfgpt.export.classifier`)."""
    from tfgpt.export import classifier as clf
    from tfgpt.runs import TOKENIZER_DIR

    clf.check_options(run_dir, formats, quantize, checkpoint)
    _check_options("savedmodel", None, version, name)
    _check_out(run_dir, out)
    model, tokenizer, labels, weights = clf.load(run_dir)
    with staged_dir(out) as tmp:
        shutil.copytree(run_dir / TOKENIZER_DIR, tmp / TOKENIZER, copy_function=shutil.copyfile)
        info = _source_info(run_dir, weights, model.backbone, tokenizer, name, version, ["savedmodel"])
        info = {"kind": clf.KIND, **info, "labels": labels}
        info["source"]["classifier"] = clf.classifier_section(run_dir, labels)
        entry = clf.save_savedmodel(model, tokenizer, labels, tmp, name, version)
        info["savedmodel"] = {**entry, "signatures": signature_specs(tmp / entry["path"]),
                              "saved_model_sha256": file_sha256(tmp / entry["path"] / SAVED_MODEL_PB),
                              "files_sha256": loaded_file_digests(tmp / entry["path"])}
        info["verification"] = clf.verify(tmp / entry["path"], model, tokenizer) if verify else None
        (tmp / EXPORT_JSON).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return info


def export_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    formats: Sequence[str] | str | None = None,
    quantize: str | None = None,
    verify: bool = False,
    name: str | None = None,
    version: int = 1,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Export the run at ``run_dir`` to ``out``; returns the content of ``out/export.json``.

    ``formats``: any of "savedmodel", "tflite", "hf" (a list or a comma-separated string; default
    savedmodel + tflite). A classifier run (``tfgpt finetune classify``) exports only its SavedModel
    (:mod:`tfgpt.export.classifier`: strings in, labels and probabilities out);
    ``quantize="int8"`` adds ``tflite/model_int8.tflite``; ``verify`` checks the exports against the
    Keras model (:mod:`tfgpt.export.verify`), raising :class:`~tfgpt.errors.ExportError` if one fails.

    Example:
        >>> info = export_run("runs/shakespeare", "export/shakespeare", formats="savedmodel,tflite",
        ...                   quantize="int8")  # doctest: +SKIP
        >>> info["tflite"]["files"]["tflite/model_int8.tflite"]["size_bytes"] > 0  # doctest: +SKIP
        True
    """
    from tfgpt.export.classifier import is_classifier_run
    from tfgpt.runs import TOKENIZER_DIR, load, weights_path

    run_dir, out = Path(run_dir), Path(out)
    name = name or default_name(run_dir)
    if is_classifier_run(run_dir):
        return _export_classifier(run_dir, out, formats, quantize, verify, name, version, checkpoint)
    formats = _check_options(("savedmodel", "tflite") if formats is None else formats, quantize, version, name)
    _check_out(run_dir, out)
    model, tokenizer = load(run_dir, checkpoint=checkpoint)
    weights = weights_path(run_dir, checkpoint)
    _check_hf(model, tokenizer, run_dir, formats)
    with staged_dir(out) as tmp:
        # copyfile, not copy2: the export's files get the umask's mode, not the run's (possibly owner-only) one
        shutil.copytree(run_dir / TOKENIZER_DIR, tmp / TOKENIZER, copy_function=shutil.copyfile)
        info = _source_info(run_dir, weights, model, tokenizer, name, version, formats)
        if "savedmodel" in formats:
            info["savedmodel"] = _save_savedmodel(model, tokenizer, tmp, name, version)
        if "tflite" in formats:
            info["tflite"] = _save_tflite(model, tmp, quantize)
        if "hf" in formats:
            info["hf"] = _save_hf(model, tokenizer, tmp)
        info["verification"] = verify_export(tmp, model, tokenizer, info) if verify else None
        (tmp / EXPORT_JSON).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return info


def savedmodel_dir(export_dir: str | os.PathLike, info: dict[str, Any]) -> Path:
    """The SavedModel dir of the export ``info`` describes, checked before anything parses or loads it.

    Its path must stay inside ``export_dir`` and its ``saved_model.pb`` must have the sha256 that
    export.json recorded: a graph can read and write files when run, so ``tfgpt serve`` loads none
    that ``tfgpt export`` did not write.
    """
    from tfgpt.errors import RunDirError

    entry = info.get("savedmodel")
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise RunDirError(f"{export_dir} has no SavedModel (export with --format savedmodel)")
    root = Path(export_dir).resolve()
    sm_dir = (root / entry["path"]).resolve()
    if not sm_dir.is_relative_to(root):
        raise RunDirError(f"{Path(export_dir) / EXPORT_JSON}: savedmodel.path {entry['path']!r} leaves the export")
    pb = sm_dir / SAVED_MODEL_PB
    if not pb.is_file():
        raise RunDirError(f"{sm_dir} holds no {SAVED_MODEL_PB}")
    want = entry.get("saved_model_sha256")
    if not isinstance(want, str):
        raise RunDirError(f"{Path(export_dir) / EXPORT_JSON} records no sha256 of {SAVED_MODEL_PB} (an older "
                          f"tfgpt, or not tfgpt's): re-export it with tfgpt export")
    if file_sha256(pb) != want:
        raise RunDirError(f"{pb} is not the graph tfgpt export wrote (its sha256 differs from export.json's): "
                          f"refusing to load it; re-export")
    _check_loaded_files(sm_dir, entry.get("files_sha256"), Path(export_dir) / EXPORT_JSON)
    return Path(export_dir) / entry["path"]


def _check_loaded_files(sm_dir: Path, recorded: Any, export_json: Path) -> None:
    """Each variables/assets file export.json lists must be there with its sha256 (TensorFlow's own CRCs fail
    as raw errors deep in the loader). Exports made before these digests were recorded list none."""
    from tfgpt.errors import RunDirError

    if recorded is None:
        return
    if not isinstance(recorded, dict):
        raise RunDirError(f"{export_json}: savedmodel.files_sha256 must be an object of path -> sha256")
    for rel, want in recorded.items():
        path = (sm_dir / rel).resolve()
        if not path.is_relative_to(sm_dir):
            raise RunDirError(f"{export_json}: savedmodel.files_sha256 names {rel!r}, outside the SavedModel")
        if not path.is_file():
            raise RunDirError(f"{path} is missing (export.json lists it): re-export")
        if file_sha256(path) != want:
            raise RunDirError(f"{path} is corrupt: its sha256 differs from the one export.json recorded; re-export")


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
