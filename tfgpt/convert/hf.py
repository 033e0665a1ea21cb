"""Hugging Face GPT-2 directories: read one (``config.json`` + safetensors) and write one.

Read: ``config.json`` (``model_type`` gpt2) and ``model.safetensors``, or shards listed in
``model.safetensors.index.json``'s ``weight_map``. Names may carry the ``transformer.`` prefix
(transformers 5 writes it); ``h.N.attn.bias`` / ``attn.masked_bias`` are causal-mask buffers and
are skipped; an ``lm_head.weight`` is accepted only when it equals ``wte.weight`` (a tied head).
Files are read with ``safetensors.numpy``: no torch, never pickle (``pytorch_model.bin`` is refused).

Write: :func:`write_hf` lays out what ``GPT2LMHeadModel.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` load: ``model.safetensors`` (names with ``transformer.``,
as ``save_pretrained`` writes them, metadata ``format: pt``), ``config.json``, and the tokenizer as
``vocab.json`` + ``merges.txt`` + ``tokenizer_config.json`` + ``special_tokens_map.json``.

Example:
    >>> import tempfile
    >>> from tfgpt.config import GPTConfig
    >>> from tfgpt.model import GPT
    >>> from tfgpt.tokenizers import BPETokenizer
    >>> tok = BPETokenizer.train(["low lower lowest " * 20], vocab_size=260)
    >>> model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    >>> d = tempfile.mkdtemp()
    >>> sorted(write_hf(model, tok, d))
    ['config.json', 'merges.txt', 'model.safetensors', 'special_tokens_map.json', 'tokenizer_config.json', 'vocab.json']
    >>> ckpt = read_hf(d)
    >>> ckpt.layout, ckpt.model.config.n_embd
    ('hf-safetensors', 8)
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from tfgpt.atomic import write_bytes_atomic, write_text_atomic
from tfgpt.config import GPTConfig
from tfgpt.convert.files import Checkpoint, one_line, refuse_pickle
from tfgpt.convert.gpt2_names import check_gpt2_expressible, gpt2_state_dict, model_from_gpt2_state_dict
from tfgpt.errors import ConvertError

CONFIG_JSON = "config.json"
SAFETENSORS = "model.safetensors"
INDEX_JSON = "model.safetensors.index.json"
VOCAB_JSON = "vocab.json"
MERGES_TXT = "merges.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
PREFIX = "transformer."
_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers, not weights
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")

__all__ = ["read_hf", "write_hf", "check_hf_exportable", "read_safetensors", "hf_config"]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; :class:`ConvertError` naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConvertError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: expected a JSON object")
    return data


def _get(config: dict[str, Any], path: Path, *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` present in ``config`` (an int where ints are due); error if none and no default."""
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    if default is None:
        raise ConvertError(f"{path}: missing {' / '.join(keys)}")
    return default


def hf_config(config: dict[str, Any], path: Path) -> GPTConfig:
    """The :class:`GPTConfig` of an HF GPT-2 ``config.json``; refuses what tfgpt's GPT cannot run."""
    if config.get("model_type", "gpt2") != "gpt2":
        raise ConvertError(f"{path}: model_type {config.get('model_type')!r} is not gpt2")
    try:
        d = int(_get(config, path, "n_embd", "hidden_size"))
    except (TypeError, ValueError) as e:
        raise ConvertError(f"{path}: n_embd: {e}") from None
    act = config.get("activation_function", "gelu_new")
    if act not in _TANH_GELU:
        raise ConvertError(f"{path}: activation_function {act!r}: tfgpt's MLP uses tanh GELU (gelu_new)")
    if config.get("n_inner") not in (None, 4 * d):
        raise ConvertError(f"{path}: n_inner {config['n_inner']}: tfgpt's MLP width is fixed at 4 * n_embd")
    for key, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                    ("tie_word_embeddings", True)):
        if config.get(key, ok) != ok:
            raise ConvertError(f"{path}: {key}={config[key]} is not GPT-2's ({ok}); tfgpt cannot run it")
    try:
        return GPTConfig(
            vocab_size=int(_get(config, path, "vocab_size")),
            block_size=int(_get(config, path, "n_positions", "n_ctx", "max_position_embeddings")),
            n_layer=int(_get(config, path, "n_layer", "num_hidden_layers")),
            n_head=int(_get(config, path, "n_head", "num_attention_heads")),
            n_embd=d,
            dropout=float(config.get("resid_pdrop", 0.1)),
            layer_norm_epsilon=float(config.get("layer_norm_epsilon", 1e-5)),
        )
    except (TypeError, ValueError) as e:
        raise ConvertError(f"{path}: {e}") from None


def _check_safetensors(path: Path) -> None:
    """Refuse a file that is not safetensors or is cut short, naming the first tensor past its end."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if head[:2] == b"PK" or head[:1] == b"\x80":
            raise ConvertError(f"{path}: a PyTorch/pickle file under a safetensors name: tfgpt never opens pickle")
        if len(head) < 8:
            raise ConvertError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ConvertError(f"{path}: truncated safetensors file (header of {n} bytes, file of {size})")
        try:
            header = json.loads(f.read(n))
            ends = {k: int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"}
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise ConvertError(f"{path}: not a safetensors file (bad header: {one_line(e)})") from None
    available = size - 8 - n
    for name, end in ends.items():
        if end > available:
            raise ConvertError(f"{path}: tensor {name} is truncated: it ends at byte {end} "
                               f"of the data, the file holds {available} (copy the file again)")


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of one safetensors file as NumPy arrays (no torch); one-line errors naming the file."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: weights file not found")
    _check_safetensors(path)
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types; name the file
        raise ConvertError(f"{path}: unreadable safetensors file ({one_line(e)})") from None


def _shard_files(directory: Path) -> list[Path]:
    """The weights files of an HF dir: ``model.safetensors``, or the shards its index names."""
    index = directory / INDEX_JSON
    if not index.is_file():
        return [directory / SAFETENSORS]
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConvertError(f"{index}: no weight_map (tensor name -> shard file)")
    names = [str(name) for name in dict.fromkeys(weight_map.values())]
    bad = next((n for n in names if Path(n).name != n or n in (".", "..")), None)
    if bad is not None:
        raise ConvertError(f"{index}: shard name {bad!r} is not a file name beside the index")
    shards = [directory / name for name in names]
    for shard in shards:
        if not shard.is_file():
            raise ConvertError(f"{index}: names shard {shard.name}, which is missing")
    return shards


def _gpt2_name(name: str) -> str | None:
    """The GPT-2 name of a tensor as stored (``transformer.`` stripped), or None for a mask buffer."""
    name = name.removeprefix(PREFIX)
    return None if name.endswith(_BUFFERS) else name


def _collect(shards: list[Path]) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, str]]]:
    """GPT-2-named tensors of all ``shards`` and where each came from (file, name in file)."""
    tensors: dict[str, np.ndarray] = {}
    origin: dict[str, tuple[str, str]] = {}
    for shard in shards:
        for stored, array in read_safetensors(shard).items():
            name = _gpt2_name(stored)
            if name is None:
                continue
            if name in tensors:
                raise ConvertError(f"{shard}: tensor {stored} duplicates {origin[name][1]} of {origin[name][0]}")
            tensors[name], origin[name] = array, (str(shard), stored)
    return tensors, origin


def _drop_tied_head(tensors: dict[str, np.ndarray], origin: dict[str, tuple[str, str]]) -> None:
    """Remove an ``lm_head.weight`` that equals ``wte.weight``; refuse an untied head."""
    head = tensors.pop("lm_head.weight", None)
    if head is None:
        return
    file, stored = origin.pop("lm_head.weight")
    wte = tensors.get("wte.weight")
    if wte is None or head.shape != wte.shape or not np.array_equal(head, wte):
        raise ConvertError(f"{file}: tensor {stored} differs from wte.weight: an untied head, which GPT-2 "
                           "(and tfgpt's import) does not have")


def read_hf(directory: str | os.PathLike) -> Checkpoint:
    """Read an HF GPT-2 dir (``config.json`` + ``model.safetensors`` or shards) into a :class:`Checkpoint`."""
    directory = Path(directory)
    config_path = directory / CONFIG_JSON
    raw = read_json(config_path)
    config = hf_config(raw, config_path)
    shards = _shard_files(directory)
    if not shards[0].is_file():
        refuse_pickle(directory)
        raise ConvertError(f"{directory}: no {SAFETENSORS} or {INDEX_JSON} beside {CONFIG_JSON}")
    tensors, origin = _collect(shards)
    _drop_tied_head(tensors, origin)
    sharded = (directory / INDEX_JSON).is_file()
    source = directory / INDEX_JSON if sharded else shards[0]  # names a missing tensor
    model = model_from_gpt2_state_dict(tensors, config, str(source), origin=origin, config_source=str(config_path))
    files = [config_path, *([directory / INDEX_JSON] if sharded else []), *shards]
    layout = "hf-safetensors-sharded" if sharded else "hf-safetensors"
    return Checkpoint(layout, model, files, raw, directory, source)


# -- writing --------------------------------------------------------------------------------------------


def check_hf_exportable(model: Any, tokenizer: Any, what: str) -> None:
    """Raise :class:`ConvertError` naming the option if ``model`` + ``tokenizer`` cannot be an HF GPT-2 dir.

    GPT-2 has pre-LN blocks, biases and a tied head; its tokenizer files hold byte-level BPE, so a
    char-tokenizer run is refused (its weights without a tokenizer would load but not be usable).
    """
    check_gpt2_expressible(model.config, what)
    if getattr(tokenizer, "kind", None) not in ("bpe", "gpt2"):
        raise ConvertError(
            f"{what}: tokenizer type {getattr(tokenizer, 'kind', type(tokenizer).__name__)!r}: Hugging Face's "
            "GPT2Tokenizer reads byte-level BPE only (vocab.json + merges.txt); prepare with --tokenizer bpe or "
            "gpt2, or export this run with --format savedmodel,tflite"
        )


def hf_config_json(config: GPTConfig, eot_id: int | None) -> dict[str, Any]:
    """The ``config.json`` transformers' ``GPT2LMHeadModel`` reads for a GPT of ``config``."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_embd": config.n_embd,
        "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None, "activation_function": "gelu_new",
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "layer_norm_epsilon": config.layer_norm_epsilon, "initializer_range": 0.02, "scale_attn_weights": True,
        "use_cache": True, "bos_token_id": eot_id, "eos_token_id": eot_id, "tie_word_embeddings": True,
        "dtype": "float32",
    }


def _tokenizer_files(tokenizer: Any, block_size: int) -> dict[str, str]:
    """``{file name: text}`` of the tokenizer as transformers' ``GPT2Tokenizer`` reads it."""
    encoder = dict(sorted(tokenizer.encoder.items(), key=lambda kv: kv[1]))
    merges = ["#version: 0.2", *(f"{a} {b}" for a, b in tokenizer.merges)]
    eot = next((t for t, i in tokenizer.special_tokens.items() if i == tokenizer.eot_id), None)
    specials = {"bos_token": eot, "eos_token": eot, "unk_token": eot} if eot is not None else {}
    tok_config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": block_size, "add_prefix_space": False,
                  "errors": "replace", "clean_up_tokenization_spaces": False, **specials}
    return {
        VOCAB_JSON: json.dumps(encoder, ensure_ascii=False),
        MERGES_TXT: "\n".join(merges) + "\n",
        TOKENIZER_CONFIG: json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n",
        SPECIAL_TOKENS_MAP: json.dumps(specials, indent=2, ensure_ascii=False) + "\n",
    }


def write_hf(model: Any, tokenizer: Any, out_dir: str | os.PathLike) -> list[str]:
    """Write ``model`` + ``tokenizer`` as an HF GPT-2 dir; returns the file names written.

    Each file is written atomically. Raises :class:`ConvertError` (naming the option) for a model
    or tokenizer GPT-2 cannot express; see :func:`check_hf_exportable`.
    """
    from safetensors.numpy import save

    check_hf_exportable(model, tokenizer, "this model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {PREFIX + name: np.ascontiguousarray(a, dtype="float32") for name, a in gpt2_state_dict(model).items()}
    write_bytes_atomic(out / SAFETENSORS, save(tensors, metadata={"format": "pt"}))  # safetensors' files are 0600
    config = hf_config_json(model.config, tokenizer.eot_id)
    write_text_atomic(out / CONFIG_JSON, json.dumps(config, indent=2) + "\n")
    for name, text in _tokenizer_files(tokenizer, model.config.block_size).items():
        write_text_atomic(out / name, text)
    return [SAFETENSORS, CONFIG_JSON, VOCAB_JSON, MERGES_TXT, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP]
