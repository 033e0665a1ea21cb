"""``import_gpt2``: a GPT-2 checkpoint directory in, an ordinary tfgpt run dir out.

Three layouts, told apart by their files (:func:`detect_layout`): Hugging Face (``config.json`` +
``model.safetensors`` or its shards), OpenAI's TensorFlow checkpoint (``hparams.json`` +
``model.ckpt.*``), and a keras-hub preset (``config.json`` naming ``GPT2Backbone`` +
``model.weights.h5``). Pickle files are refused, never opened. The model's size comes from the
file's own hyper-parameters; the tokenizer from :func:`~tfgpt.convert.gpt2_tokenizer.find_tokenizer`,
and its size must equal ``wte``'s rows.

Everything is read and checked in memory first; the run is then written in a temporary sibling of
``out_run`` and renamed into place, so a failure leaves no half-written run. ``RUN/source.json``
records the layout, every file read (sha256, size), the hyper-parameters and the tfgpt version.

Example:
    >>> info = import_gpt2("gpt2-hf/", "runs/gpt2")  # doctest: +SKIP
    >>> model, tokenizer = tfgpt.load("runs/gpt2")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from tfgpt import __version__
from tfgpt.atomic import staged_dir, write_text_atomic
from tfgpt.convert.files import Checkpoint, file_record, refuse_pickle
from tfgpt.convert.gpt2_tokenizer import FoundTokenizer, find_tokenizer
from tfgpt.convert.hf import CONFIG_JSON, INDEX_JSON, SAFETENSORS, read_hf, read_json
from tfgpt.convert.keras_hub_preset import is_keras_hub_config, read_keras_hub_preset
from tfgpt.convert.openai_ckpt import HPARAMS_JSON, read_openai_ckpt
from tfgpt.errors import ConvertError
from tfgpt.runs import SOURCE_JSON, save_run

FORMAT_VERSION = 1
READERS = {"hf": read_hf, "openai": read_openai_ckpt, "keras-hub": read_keras_hub_preset}

__all__ = ["import_gpt2", "detect_layout", "read_gpt2", "SOURCE_JSON"]


def detect_layout(directory: str | os.PathLike) -> str:
    """"hf", "openai" or "keras-hub" from the files in ``directory``; refuses pickle and unknown dirs."""
    d = Path(directory)
    if not d.exists():
        raise ConvertError(f"{d}: not found (give the directory holding the checkpoint's files)")
    if not d.is_dir():
        refuse_pickle(d)
        raise ConvertError(f"{d}: not a directory (give the directory holding the checkpoint's files)")
    if (d / CONFIG_JSON).is_file():
        if is_keras_hub_config(read_json(d / CONFIG_JSON)):
            return "keras-hub"
        if (d / SAFETENSORS).is_file() or (d / INDEX_JSON).is_file():
            return "hf"
    if (d / HPARAMS_JSON).is_file() and any(d.glob("*.index")):
        return "openai"
    refuse_pickle(d)
    raise ConvertError(f"{d}: no GPT-2 checkpoint found: expected {CONFIG_JSON} + {SAFETENSORS} (Hugging Face), "
                       f"{HPARAMS_JSON} + model.ckpt.* (OpenAI) or a keras-hub preset")


def read_gpt2(directory: str | os.PathLike) -> Checkpoint:
    """The :class:`~tfgpt.convert.files.Checkpoint` in ``directory``, whichever layout it has."""
    return READERS[detect_layout(directory)](directory)


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that holds anything: an existing run (or any file) is never overwritten."""
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out}: exists and is not a directory: choose another --out")
    if out.is_dir() and any(out.iterdir()):
        what = "an existing run" if (out / "config.yaml").exists() else "not empty"
        raise ConvertError(f"{out}: {what}; import-gpt2 never overwrites: choose another --out or remove it")


def _check_sizes(ckpt: Checkpoint, found: FoundTokenizer) -> None:
    rows = ckpt.model.config.vocab_size
    if found.tokenizer.vocab_size != rows:
        raise ConvertError(
            f"{found.files[0]}: tokenizer has {found.tokenizer.vocab_size} tokens but {ckpt.weights_file}: "
            f"tensor wte.weight has {rows} rows; give the model's own tokenizer with --tokenizer DIR"
        )


def source_info(ckpt: Checkpoint, found: FoundTokenizer) -> dict[str, Any]:
    """The content of ``RUN/source.json``: where the weights and the tokenizer came from."""
    return {
        "format_version": FORMAT_VERSION,
        "tfgpt_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "layout": ckpt.layout,
        "from": str(ckpt.root.resolve()),
        "files": [file_record(p, ckpt.root) for p in ckpt.files],
        "hyperparameters": ckpt.hyperparameters,
        "model": ckpt.model.config.to_dict(),
        "tokenizer": {"how": found.how, "type": found.tokenizer.kind, "vocab_size": found.tokenizer.vocab_size,
                      "files": [file_record(p, ckpt.root) for p in found.files]},
    }


def _write_run(out: Path, ckpt: Checkpoint, found: FoundTokenizer, info: dict[str, Any]) -> None:
    """Write the run in a temp sibling of ``out`` and rename it into place (removed on any failure)."""
    with staged_dir(out) as stage:  # ``out`` is absent or empty (checked)
        save_run(stage, ckpt.model, found.tokenizer)
        write_text_atomic(stage / SOURCE_JSON, json.dumps(info, indent=2, ensure_ascii=False) + "\n")


def import_gpt2(from_dir: str | os.PathLike, out_run: str | os.PathLike,
                tokenizer: str | os.PathLike | None = None) -> dict[str, Any]:
    """Import the GPT-2 in ``from_dir`` as a run dir at ``out_run``; returns ``source.json``'s content + ``run``.

    ``tokenizer``: a directory with vocab.json + merges.txt (or encoder.json + vocab.bpe), or
    ``"gpt2"`` for the packaged GPT-2 vocabulary; by default the files beside the weights, else
    the packaged vocabulary. Raises :class:`~tfgpt.errors.ConvertError` (one line naming the file
    and the tensor) for bad input, leaving nothing at ``out_run``.

    Example:
        >>> import tempfile
        >>> from tfgpt.config import GPTConfig
        >>> from tfgpt.convert import write_hf
        >>> from tfgpt.model import GPT
        >>> from tfgpt.tokenizers import BPETokenizer
        >>> tok = BPETokenizer.train(["low lower lowest " * 20], vocab_size=260)
        >>> d = Path(tempfile.mkdtemp())
        >>> model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
        >>> _ = write_hf(model, tok, d / "hf")  # a Hugging Face GPT-2 dir, as from save_pretrained
        >>> info = import_gpt2(d / "hf", d / "run")
        >>> info["layout"], info["tokenizer"]["how"], sorted(p.name for p in (d / "run").iterdir())
        ('hf-safetensors', 'beside the weights', ['config.yaml', 'model.keras', 'source.json', 'tokenizer'])
    """
    out = Path(out_run)
    _check_out(out)
    ckpt = read_gpt2(from_dir)
    found = find_tokenizer(ckpt.root, tokenizer)
    _check_sizes(ckpt, found)
    info = source_info(ckpt, found)
    _check_out(out)
    _write_run(out, ckpt, found, info)
    return {"run": str(out), **info}
