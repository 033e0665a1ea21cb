"""Configuration dataclasses, strict dict/YAML (de)serialisation and model presets.

Every config is a frozen-ish dataclass; :func:`from_dict` builds one from a plain dict and
rejects unknown keys and wrong types with a message naming the key and the valid ones, so a
typo in a YAML file never silently falls back to a default.

Example:
    >>> cfg = GPTConfig.preset("char-small", vocab_size=65)
    >>> cfg.n_layer, cfg.n_embd
    (4, 128)
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from tfgpt.atomic import write_text_atomic
from tfgpt.errors import ConfigError, all_problems

T = TypeVar("T")

NormPlacement = Literal["pre", "post"]


@dataclasses.dataclass
class GPTConfig:
    """Shape and options of a GPT model.

    Attributes:
        vocab_size: number of token ids the embedding and head cover.
        block_size: maximum context length (learned position embeddings).
        n_layer, n_head, n_embd: depth, heads per attention, width (n_embd % n_head == 0).
        dropout: dropout rate on embeddings, attention probabilities and residual branches.
        bias: whether Dense and LayerNorm layers have a bias/offset (GPT-2: True).
        norm: "pre" (GPT-2) or "post" (original Transformer) LayerNorm placement.
        tie_embeddings: the output head reuses the token embedding matrix (GPT-2: True).
        layer_norm_epsilon: LayerNorm epsilon (GPT-2: 1e-5).
    """

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    norm: NormPlacement = "pre"
    tie_embeddings: bool = True
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.norm not in ("pre", "post"):
            raise ConfigError(f"model.norm must be 'pre' or 'post', got {self.norm!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """A named preset (see :data:`PRESETS`), with fields overridden by keyword."""
        if name not in PRESETS:
            hint = did_you_mean(name, PRESETS)
            raise ConfigError(f"unknown preset {name!r}{hint}; valid presets: {', '.join(sorted(PRESETS))}")
        return from_dict(cls, {**PRESETS[name], **overrides}, where=f"preset {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count computed from the shape (matches ``GPT(...).count_params()``)."""
        d, v, L = self.n_embd, self.vocab_size, self.n_layer
        b = 1 if self.bias else 0
        ln = d * (1 + b)
        attn = d * 3 * d + 3 * d * b + d * d + d * b
        mlp = d * 4 * d + 4 * d * b + 4 * d * d + d * b
        per_block = attn + mlp + 2 * ln
        total = L * per_block + ln + v * d + self.block_size * d
        if not self.tie_embeddings:
            total += d * v
        if non_embedding:
            total -= self.block_size * d
        return total


PRESETS: dict[str, dict[str, Any]] = {
    "char-small": dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128),
    "baby": dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
    "gpt2": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(vocab_size=50257, block_size=1024, n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(vocab_size=50257, block_size=1024, n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(vocab_size=50257, block_size=1024, n_layer=48, n_head=25, n_embd=1600),
}


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def did_you_mean(name: str, choices: typing.Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to a mistyped ``name``, else ``""``.

    Example:
        >>> did_you_mean("lerning_rate", ["learning_rate", "min_lr"])
        " (did you mean 'learning_rate'?)"
    """
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_value(key: str, value: Any, annotation: Any) -> Any:
    """``value`` for a field ``key`` annotated ``annotation``, or a ConfigError naming key and type.

    A ``6e-4``-style string becomes a float where the field takes one; an int becomes a float.
    """
    value = _exponent_float(value, annotation)
    if not _type_ok(value, annotation):
        raise ConfigError(f"key {key!r} must be {_describe(annotation)}, got {type(value).__name__} {value!r}")
    return float(value) if annotation is float and isinstance(value, int) else value


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types.

    ``where`` names the source (file and section) in error messages. Unknown keys and wrong types
    are reported all at once; value checks (``__post_init__``) come after, first problem only.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    problems = []
    if unknown:
        named = ", ".join(f"{k!r}{did_you_mean(k, fields)}" for k in unknown)
        problems.append(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {named}; "
                        f"valid keys: {', '.join(fields)}")
    kwargs = {}
    for key, value in data.items():
        if key in fields:
            try:
                kwargs[key] = check_value(key, value, hints[key])
            except ConfigError as e:
                problems.append(f"{where}: {e}")
    all_problems(problems)  # the value checks below need every key of the right type
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


#: A float written with an exponent but no dot (``6e-4``). PyYAML follows YAML 1.1, whose floats
#: need a dot, so ``yaml.safe_load`` gives the string ``"6e-4"``; YAML 1.2 (and nanoGPT users) mean
#: a number. :func:`from_dict` reads such a string as a float where the field takes a float.
EXPONENT_FLOAT = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+")


def _exponent_float(value: Any, annotation: Any) -> Any:
    """``value`` as a float if it is a ``6e-4``-style string and the field takes a float, else as is."""
    if isinstance(value, str) and EXPONENT_FLOAT.fullmatch(value.strip()) and _type_ok(0.5, annotation):
        return float(value.replace("_", ""))
    return value


def _accepts_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return any(isinstance(a, str) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_str(a) for a in typing.get_args(annotation))
    return False


def parse_scalar(raw: str, annotation: Any = Any) -> Any:
    """A ``key=value`` override's value for a field annotated ``annotation``.

    A field that takes text gets the raw text (``ROMEO:``, ``yes`` and ``1.`` stay strings; ``null``
    gives None where the field allows it); any other field gets the YAML scalar, read as config
    files are (``false`` a bool, ``1e-3`` a float where the field takes one).

    Example:
        >>> parse_scalar("1e-3", float), parse_scalar("ROMEO:", str), parse_scalar("yes", bool)
        (0.001, 'ROMEO:', True)
    """
    if _accepts_str(annotation):
        if raw.strip() in ("null", "Null", "NULL", "~") and _type_ok(None, annotation):
            return None
        return raw
    if not raw.strip():
        return ""
    try:
        return _exponent_float(yaml.safe_load(raw), annotation)
    except yaml.YAMLError:
        return raw


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        _check_whole(text, path)
        data = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


#: The first and last lines of the YAML files tfgpt writes: :func:`read_yaml` refuses one cut short, which YAML
#: alone cannot tell (half a mapping is a smaller mapping).
YAML_HEADER = "# written by tfgpt; a complete file ends with the line '# end'\n"
YAML_END = "# end"


def _check_whole(text: str, path: Path) -> None:
    """Refuse a file tfgpt wrote (it starts with :data:`YAML_HEADER`) whose :data:`YAML_END` line is gone: a
    cut removes the tail. Lines a user appended after the end line are kept; an editor's BOM is ignored."""
    if text.lstrip("\ufeff").startswith(YAML_HEADER.rstrip("\n")) and not any(
            line.strip() == YAML_END for line in text.splitlines()):
        raise ConfigError(f"{path}: truncated: tfgpt wrote it, but its {YAML_END!r} line is gone (the file is cut "
                          "short; restore it, or delete its first line to use it as it is)")


def write_yaml(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Atomically write a mapping as YAML, between :data:`YAML_HEADER` and :data:`YAML_END`."""
    write_text_atomic(path, YAML_HEADER + yaml.safe_dump(data, sort_keys=False) + YAML_END + "\n")


def load_model_config(path: str | os.PathLike) -> GPTConfig:
    """Read the ``model:`` section of a config/run YAML file (or a bare model mapping)."""
    data = read_yaml(path)
    section = data.get("model", data) if "model" in data else data
    if not data:
        raise ConfigError(f"{path}: empty file, expected a 'model' mapping")
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'model' must be a mapping of GPT settings (or a preset), got {section!r}")
    if "preset" in section:
        section = dict(section)
        name = section.pop("preset")
        return GPTConfig.preset(name, **section)
    return from_dict(GPTConfig, section, where=f"{path}: model")


def save_model_config(path: str | os.PathLike, config: GPTConfig, **sections: dict[str, Any]) -> None:
    """Write ``{"model": config, **sections}`` as YAML, atomically."""
    write_yaml(path, {"model": config.to_dict(), **sections})
