"""Fine-tune a run into a text classifier (``finetune_classify``) and apply one (``classify``).

The output is a run-like directory: ``config.yaml`` (the backbone's ``model:`` and a
``classifier:`` section with the labels, pad id, trainable group, quantization and test
metrics), ``tokenizer/``, the model and ``logs/`` (``metrics.csv`` and TensorBoard). The model
is ``model.keras`` (a :class:`GPTClassifier`), or, for an int8 base (``quantize="int8"``,
QLoRA-style), ``model.weights.h5``, which :func:`load_classifier` reads into a rebuilt, quantized
classifier (``keras.saving.load_model`` cannot rebuild the int8 layers).

Work happens in ``OUT.partial/`` (:mod:`tfgpt.finetune.checkpoints`: a manifest of the arguments
and a checkpoint per epoch), renamed to ``OUT`` at the end; an interrupted run continues with
``resume=True``. Bad input is refused before anything is written. Texts longer than the
backbone's ``block_size`` are truncated to their first ``block_size`` tokens with one warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfgpt.config import load_model_config, read_yaml, save_model_config
from tfgpt.errors import ConfigError, RunDirError, TokenizerError
from tfgpt.finetune import checkpoints as ckpt
from tfgpt.finetune.classifier import GPTClassifier, batch_dataset, pad_batch
from tfgpt.finetune.labelled import Record, balance, label_names, read_labelled, split
from tfgpt.finetune.lora import enable_lora_on, freeze, param_counts, quantize_base
from tfgpt.finetune.progress import EpochLine, say
from tfgpt.finetune.stack import DEFAULT_CLIP, check_stack, make_finetune_optimizer, with_precision
from tfgpt.model.gpt import GPT
from tfgpt.runs import CONFIG_YAML, LOGS_DIR, MODEL_KERAS, TOKENIZER_DIR, check_run_dir, load
from tfgpt.tokenizers import load_tokenizer

TRAINABLE = ("head", "last-block", "all", "lora")
QUANTIZE = ("int8",)
WEIGHTS_H5 = "model.weights.h5"  # the classifier of a quantized run (load_model cannot rebuild it)


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


def check_trainable(trainable: str, quantize: str | None = None, lora_rank: int = 16) -> None:
    """Refuse an unknown group, ``--quantize`` without LoRA, or a bad rank, before any data is read."""
    if trainable not in TRAINABLE:
        raise ConfigError(f"--trainable must be one of {', '.join(TRAINABLE)}; got {trainable!r}")
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
    if quantize is not None and trainable != "lora":
        raise ConfigError(f"--quantize {quantize} needs --trainable lora (the quantized base is frozen; "
                          f"only LoRA and the head train), got --trainable {trainable}")
    if trainable == "lora" and (isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or lora_rank <= 0):
        raise ConfigError(f"--lora-rank must be a positive integer, got {lora_rank!r}")


def check_out(run: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``out`` as a Path; refuse ``out`` equal to ``run`` or an existing non-empty directory."""
    out_path = Path(out)
    if out_path.resolve() == Path(run).resolve():
        raise ConfigError(f"--out {out} is the input run: choose a new directory")
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise ConfigError(f"--out {out} already exists and is not empty")
    return out_path


def unencodable_row(tokenizer: Any, records: list[Record], where: str | os.PathLike) -> TokenizerError | None:
    """The error of the first record (in file order) ``tokenizer`` cannot encode, as ``FILE:LINE: ...``.

    Example:
        >>> from tfgpt.tokenizers.char import CharTokenizer
        >>> tok = CharTokenizer.train(["abc"])
        >>> str(unencodable_row(tok, [Record("x", "ab", 1), Record("y", "a#", 2)], "d.tsv"))[:43]
        'd.tsv:2: 1 character(s) not in the char voc'
    """
    for record in sorted(records, key=lambda r: r.line):
        try:
            tokenizer.encode(record.text)
        except TokenizerError as e:
            return TokenizerError(f"{where}:{record.line}: {e}")
    return None


def _encoded(tokenizer: Any, parts: dict[str, list[Record]], labels: list[str], block_size: int,
             where: str | os.PathLike) -> dict[str, Any]:
    """:func:`_arrays` of each split; a text the tokenizer refuses is named by ``FILE:LINE``."""
    try:
        return {k: _arrays(tokenizer, v, labels, block_size) for k, v in parts.items()}
    except TokenizerError as e:
        raise unencodable_row(tokenizer, [r for v in parts.values() for r in v], where) or e from None


def _arrays(tokenizer: Any, records: list[Record], labels: list[str], block_size: int) -> tuple[Any, Any]:
    """``(token rows cut to block_size, class ids)`` of ``records``, or None for an empty split."""
    if not records:
        return None
    rows = [tokenizer.encode(r.text) for r in records]
    cut = sum(len(r) > block_size for r in rows)
    if cut:
        warnings.warn(f"{cut} of {len(rows)} texts are longer than block_size {block_size}: truncated", stacklevel=4)
    return [r[:block_size] for r in rows], np.array([labels.index(r.label) for r in records], dtype=np.int32)


def _compile(model: GPTClassifier, lr: float, steps: int, jit_compile: bool | str, stack: dict[str, Any]) -> None:
    """AdamW from the training stack (:func:`tfgpt.finetune.stack.make_finetune_optimizer`)."""
    model.compile(
        optimizer=make_finetune_optimizer(model, lr, steps, **stack),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )


class _TestEval(keras.callbacks.Callback):
    """Adds ``test_loss``/``test_accuracy`` to each epoch's logs (before CSVLogger/TensorBoard read them)."""

    def __init__(self, test: Any) -> None:
        super().__init__()
        self.test = test

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss, acc = self.model.evaluate(self.test, verbose=0)
        if logs is not None:
            logs.update(test_loss=float(loss), test_accuracy=float(acc))


def _fit(model: GPTClassifier, data: dict[str, Any], work: Path, opts: dict[str, Any],
         callbacks: list[keras.callbacks.Callback]) -> dict[str, Any]:
    """One ``model.fit`` per epoch, from the last checkpoint in ``work`` on, with per-epoch
    train/val/test loss + accuracy in CSV and TensorBoard logs and a checkpoint after each;
    returns the final metrics. Each epoch's order is a permutation seeded by ``(seed, epoch)``,
    so a resumed run sees the batches an uninterrupted one would. Each batch is padded to its
    own longest row (:func:`tfgpt.finetune.classifier.batch_dataset`; a power of two under XLA)."""
    logs = work / LOGS_DIR
    pad = dict(batch_size=opts["batch_size"], pad_id=model.pad_id, max_width=model.backbone.config.block_size,
               bucket=bool(model.jit_compile))
    ds = {k: batch_dataset(*v, np.arange(len(v[1])), **pad) if v is not None else None for k, v in data.items()}
    cbs = [_TestEval(ds["test"])] if ds["test"] is not None else []
    cbs += [EpochLine(opts["epochs"]), keras.callbacks.CSVLogger(str(logs / "metrics.csv"), append=True),
            keras.callbacks.TensorBoard(str(logs), write_graph=False), *callbacks]

    def fit_epoch(epoch: int) -> dict[str, Any]:
        order = np.random.default_rng([opts["seed"], epoch]).permutation(len(data["train"][1]))
        history = model.fit(batch_dataset(*data["train"], order, **pad), initial_epoch=epoch, epochs=epoch + 1,
                            validation_data=ds["val"], shuffle=False, callbacks=cbs, verbose=0)
        return {k: float(v[-1]) for k, v in history.history.items()}

    _, last = ckpt.run_epochs(work, model, opts["epochs"], fit_epoch)
    result = dict(last)
    for name in ("train", "test"):
        if ds[name] is not None:
            loss, acc = model.evaluate(ds[name], verbose=0)
            result[f"{name}_eval_loss" if name == "train" else "test_loss"] = float(loss)
            result[f"{name}_eval_accuracy" if name == "train" else "test_accuracy"] = float(acc)
    return result


def build_classifier(gpt: GPT, num_classes: int, pad_id: int, trainable: str, quantize: str | None = None,
                     lora_rank: int = 16, lora_alpha: float | None = None) -> GPTClassifier:
    """A built :class:`GPTClassifier` over ``gpt``: base quantized (``quantize``), LoRA added
    (``trainable="lora"``) and frozen by group (:func:`tfgpt.finetune.lora.freeze`)."""
    model = GPTClassifier(gpt, num_classes, pad_id=pad_id)
    model.build((None, None))
    if quantize is not None:
        quantize_base(model, quantize)
    if trainable == "lora":
        enable_lora_on(model, lora_rank, lora_alpha)
    freeze(model, trainable)
    return model


def _finish(work: Path, out: Path, model: GPTClassifier, tokenizer: Any, section: dict[str, Any]) -> None:
    """Write config, tokenizer and model into ``work``, drop its checkpoints, rename it to ``out``."""
    save_model_config(work / CONFIG_YAML, model.backbone.config, classifier=section)
    tokenizer.save(work / TOKENIZER_DIR)
    if section.get("quantize"):
        model.save_weights(work / WEIGHTS_H5)  # LoRA merged, re-quantized int8 kernels
    else:
        model.save(work / MODEL_KERAS)
    ckpt.finish_work(work, out)


def finetune_classify(
    run: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, trainable: str = "head",
    balance_classes: bool = False, epochs: int = 5, batch_size: int = 8, lr: float = 5e-4, seed: int = 0,
    lora_rank: int = 16, lora_alpha: float | None = None, quantize: str | None = None, resume: bool = False,
    callbacks: list[keras.callbacks.Callback] | None = None, jit_compile: bool | str = "auto",
    clip: float = DEFAULT_CLIP, accumulate: int = 1, precision: str = "float32",
) -> dict[str, Any]:
    """Train a classifier from ``run`` on a labelled file and write it to ``out``; returns its metrics.

    ``quantize="int8"`` (with ``trainable="lora"``) quantizes the frozen base first (QLoRA-style).
    ``resume=True`` continues an interrupted run from ``OUT.partial``'s last epoch; it needs the
    same arguments. ``callbacks`` are extra Keras callbacks given to each epoch's ``fit``;
    ``jit_compile`` goes to ``compile`` (False saves the XLA compile time on tiny models).
    ``clip``, ``accumulate`` and ``precision`` are the training stack's (:mod:`tfgpt.finetune.stack`).

    Example:
        >>> m = finetune_classify("runs/gpt2", "spam.tsv", "runs/spam", trainable="lora",
        ...                       quantize="int8")  # doctest: +SKIP
        >>> m["test_accuracy"]  # doctest: +SKIP
    """
    check_trainable(trainable, quantize, lora_rank)
    stack = dict(clip=clip, accumulate=accumulate, precision=precision)
    check_stack(**stack)
    out_path = check_out(run, out)
    work = ckpt.check_work(out_path, resume)
    records = read_labelled(data)
    records = balance(records, seed) if balance_classes else records
    labels = label_names(records)
    gpt, tokenizer = load(run)
    parts = dict(zip(("train", "val", "test"), split(records, seed=seed), strict=True))
    arrays = _encoded(tokenizer, parts, labels, gpt.config.block_size, data)
    opts = dict(trainable=trainable, balance=balance_classes, epochs=epochs, batch_size=batch_size, lr=lr,
                seed=seed, lora_rank=lora_rank if trainable == "lora" else None, lora_alpha=lora_alpha,
                quantize=quantize, **stack)
    manifest = dict(opts, run=str(Path(run).resolve()), data=str(Path(data).resolve()),
                    data_sha256=ckpt.file_digest(data))
    ckpt.start_work(work, resume, manifest)
    keras.utils.set_random_seed(seed)
    model = build_classifier(with_precision(gpt, precision), len(labels), pad_id_of(tokenizer), trainable,
                             quantize, lora_rank, lora_alpha)
    n_trainable, n_total = param_counts(model)
    say(f"trainable parameters: {n_trainable:,} of {n_total:,} ({trainable}{', int8 base' if quantize else ''})")
    _compile(model, lr, epochs * -(-len(parts["train"]) // batch_size), jit_compile, stack)
    with ckpt.keeps_finished_epochs(work):
        metrics = _fit(model, arrays, work, opts, list(callbacks or []))
    metrics.update(trainable_params=n_trainable, total_params=n_total)
    section = {"labels": labels, "pad_id": model.pad_id, "trainable": trainable, "quantize": quantize,
               "lora_rank": opts["lora_rank"], **stack, "metrics": metrics}
    _finish(work, out_path, model, tokenizer, section)
    return metrics


def load_classifier(run: str | os.PathLike) -> tuple[GPTClassifier, Any, list[str]]:
    """``(model, tokenizer, labels)`` of a directory :func:`finetune_classify` wrote.

    A float run loads ``model.keras`` with ``safe_mode=True``; a quantized one is rebuilt
    (``GPTClassifier(GPT(config))``, :func:`quantize_base`) and reads ``model.weights.h5``.
    """
    path = check_run_dir(run)
    section = read_yaml(path / CONFIG_YAML).get("classifier")
    if not isinstance(section, dict) or not isinstance(section.get("labels"), list):
        raise ConfigError(f"{path / CONFIG_YAML}: no 'classifier:' section with labels (not a classifier run)")
    labels = [str(x) for x in section["labels"]]
    quantize = section.get("quantize")
    weights = path / (WEIGHTS_H5 if quantize else MODEL_KERAS)
    if not weights.is_file():
        raise RunDirError(f"{path} is not a complete classifier run: missing {weights.name}")
    if quantize:
        model = GPTClassifier(GPT(load_model_config(path / CONFIG_YAML)), len(labels), pad_id=int(section["pad_id"]))
        model.build((None, None))
        quantize_base(model, str(quantize))
        model.load_weights(weights)
    else:
        model = keras.saving.load_model(weights, safe_mode=True, compile=False)
    return model, load_tokenizer(path / TOKENIZER_DIR), labels


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
