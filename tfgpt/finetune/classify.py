"""Fine-tune a run into a text classifier (``finetune_classify``) and apply one (``classify``).

The output is a run-like directory: ``config.yaml`` (the backbone's ``model:`` and a
``classifier:`` section with the labels, pad id, trainable group and test metrics),
``tokenizer/``, ``model.keras`` (a :class:`GPTClassifier`) and ``logs/`` (``metrics.csv`` and
TensorBoard). It is staged in a sibling temp dir and renamed into place, so a failed run leaves
nothing. Texts longer than the backbone's ``block_size`` are truncated to their first
``block_size`` tokens with one warning that says how many were cut.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfgpt.atomic import make_temp_dir
from tfgpt.config import read_yaml, save_model_config
from tfgpt.errors import ConfigError
from tfgpt.finetune.classifier import GPTClassifier, pad_batch
from tfgpt.finetune.labelled import Record, balance, label_names, read_labelled, split
from tfgpt.finetune.lora import enable_lora_on, freeze, param_counts
from tfgpt.runs import CONFIG_YAML, LOGS_DIR, MODEL_KERAS, TOKENIZER_DIR, check_run_dir, load
from tfgpt.tokenizers import load_tokenizer
from tfgpt.train.config import TrainConfig
from tfgpt.train.optim import make_optimizer

TRAINABLE = ("head", "last-block", "all", "lora")


def encode_texts(tokenizer: Any, texts: list[str], block_size: int) -> tuple[np.ndarray, int]:
    """Right-padded ids ``[n, time]`` (pad = the end-of-text id, else 0) and how many were truncated.

    Example:
        >>> from tfgpt.tokenizers.char import CharTokenizer
        >>> tok = CharTokenizer.train(["abc"], special_tokens=["<|endoftext|>"])
        >>> ids, cut = encode_texts(tok, ["ab", "c"], block_size=8)
        >>> ids.tolist(), cut
        ([[0, 1], [2, 3]], 0)
    """
    rows = [tokenizer.encode(t) for t in texts]
    cut = sum(len(r) > block_size for r in rows)
    if cut:
        warnings.warn(f"{cut} of {len(rows)} texts are longer than block_size {block_size}: truncated", stacklevel=2)
    return pad_batch([r[:block_size] for r in rows], pad_id_of(tokenizer)), cut


def pad_id_of(tokenizer: Any) -> int:
    """The id rows are right-padded with: the tokenizer's end-of-text id, else 0."""
    return tokenizer.eot_id if tokenizer.eot_id is not None else 0


def _apply_trainable(model: GPTClassifier, trainable: str, lora_rank: int, lora_alpha: float | None) -> None:
    """Freeze by group (:func:`tfgpt.finetune.lora.freeze`); ``lora`` first adds LoRA to the backbone."""
    if trainable == "lora":
        enable_lora_on(model, lora_rank, lora_alpha)
    freeze(model, trainable)


def check_trainable(trainable: str) -> None:
    """Refuse an unknown group before any data is read."""
    if trainable not in TRAINABLE:
        raise ConfigError(f"--trainable must be one of {', '.join(TRAINABLE)}; got {trainable!r}")


def check_out(run: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``out`` as a Path; refuse ``out`` equal to ``run`` or an existing non-empty directory."""
    out_path = Path(out)
    if out_path.resolve() == Path(run).resolve():
        raise ConfigError(f"--out {out} is the input run: choose a new directory")
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise ConfigError(f"--out {out} already exists and is not empty")
    return out_path


def _arrays(tokenizer: Any, records: list[Record], labels: list[str], block_size: int) -> tuple[Any, Any]:
    """``(ids, class ids)`` of ``records``, or None for an empty split."""
    if not records:
        return None
    ids, _ = encode_texts(tokenizer, [r.text for r in records], block_size)
    return ids, np.array([labels.index(r.label) for r in records], dtype=np.int32)


def _compile(model: GPTClassifier, lr: float, steps: int) -> None:
    """AdamW from the training stack (warmup-free cosine to lr/10, no decay on norms/biases)."""
    cfg = TrainConfig(max_steps=max(steps, 1), learning_rate=lr, min_lr=lr / 10, warmup_steps=0)
    model.compile(
        optimizer=make_optimizer(cfg, model),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


class _TestEval(keras.callbacks.Callback):
    """Adds ``test_loss``/``test_accuracy`` to each epoch's logs (before CSVLogger/TensorBoard read them)."""

    def __init__(self, test: tuple[Any, Any], batch_size: int) -> None:
        super().__init__()
        self.test, self.batch_size = test, batch_size

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss, acc = self.model.evaluate(*self.test, batch_size=self.batch_size, verbose=0)
        if logs is not None:
            logs.update(test_loss=float(loss), test_accuracy=float(acc))


def _fit(model: GPTClassifier, data: dict[str, Any], logs: Path, epochs: int, batch_size: int) -> dict[str, Any]:
    """``model.fit`` with per-epoch train/val/test loss + accuracy in CSV and TensorBoard logs;
    returns the final metrics."""
    x, y = data["train"]
    callbacks = [_TestEval(data["test"], batch_size)] if data["test"] is not None else []
    callbacks += [
        keras.callbacks.CSVLogger(str(logs / "metrics.csv")),
        keras.callbacks.TensorBoard(str(logs), write_graph=False),
    ]
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=data["val"],
                        shuffle=True, callbacks=callbacks, verbose=2)
    result = {k: float(v[-1]) for k, v in history.history.items()}
    for name in ("train", "test"):
        if data[name] is not None:
            loss, acc = model.evaluate(*data[name], batch_size=batch_size, verbose=0)
            result[f"{name}_eval_loss" if name == "train" else "test_loss"] = float(loss)
            result[f"{name}_eval_accuracy" if name == "train" else "test_accuracy"] = float(acc)
    return result


def finetune_classify(
    run: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, trainable: str = "head",
    balance_classes: bool = False, epochs: int = 5, batch_size: int = 8, lr: float = 5e-4, seed: int = 0,
    lora_rank: int = 16, lora_alpha: float | None = None,
) -> dict[str, Any]:
    """Train a classifier from ``run`` on a labelled file and write it to ``out``; returns its metrics.

    Example:
        >>> m = finetune_classify("runs/gpt2", "spam.tsv", "runs/spam", trainable="last-block")  # doctest: +SKIP
        >>> m["test_accuracy"]  # doctest: +SKIP
    """
    out_path = check_out(run, out)
    check_trainable(trainable)
    records = read_labelled(data)
    records = balance(records, seed) if balance_classes else records
    labels = label_names(records)
    gpt, tokenizer = load(run)
    parts = dict(zip(("train", "val", "test"), split(records, seed=seed), strict=True))
    arrays = {k: _arrays(tokenizer, v, labels, gpt.config.block_size) for k, v in parts.items()}
    keras.utils.set_random_seed(seed)
    model = GPTClassifier(gpt, len(labels), pad_id=pad_id_of(tokenizer))
    model.build((None, None))
    _apply_trainable(model, trainable, lora_rank, lora_alpha)
    n_trainable, n_total = param_counts(model)
    print(f"trainable parameters: {n_trainable:,} of {n_total:,} ({trainable})")
    _compile(model, lr, epochs * -(-len(parts["train"]) // batch_size))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stage = make_temp_dir(out_path.parent, f".{out_path.name}.")
    try:
        (stage / LOGS_DIR).mkdir()
        metrics = _fit(model, arrays, stage / LOGS_DIR, epochs, batch_size)
        metrics.update(trainable_params=n_trainable, total_params=n_total)
        section = {"labels": labels, "pad_id": model.pad_id, "trainable": trainable, "metrics": metrics}
        save_model_config(stage / CONFIG_YAML, gpt.config, classifier=section)
        tokenizer.save(stage / TOKENIZER_DIR)
        model.save(stage / MODEL_KERAS)
        if out_path.exists():
            out_path.rmdir()  # checked empty above
        os.replace(stage, out_path)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return metrics


def load_classifier(run: str | os.PathLike) -> tuple[GPTClassifier, Any, list[str]]:
    """``(model, tokenizer, labels)`` of a directory :func:`finetune_classify` wrote."""
    path = check_run_dir(run)
    section = read_yaml(path / CONFIG_YAML).get("classifier")
    if not isinstance(section, dict) or not isinstance(section.get("labels"), list):
        raise ConfigError(f"{path / CONFIG_YAML}: no 'classifier:' section with labels (not a classifier run)")
    model = keras.saving.load_model(path / MODEL_KERAS, safe_mode=True, compile=False)
    return model, load_tokenizer(path / TOKENIZER_DIR), [str(x) for x in section["labels"]]


def classify(run: str | os.PathLike, texts: list[str]) -> list[tuple[str, float]]:
    """``(label, probability)`` of each text under a classifier run.

    Example:
        >>> classify("runs/spam", ["WIN a prize now!"])  # doctest: +SKIP
        [('spam', 0.97)]
    """
    model, tokenizer, labels = load_classifier(run)
    ids, _ = encode_texts(tokenizer, list(texts), model.backbone.config.block_size)
    probs = np.asarray(keras.ops.softmax(model(ids), axis=-1))  # [n, num_classes]
    return [(labels[int(i)], float(p[i])) for p, i in zip(probs, probs.argmax(axis=1), strict=True)]
