"""Instruction-tune a run (``finetune_instruct``): Alpaca template, masked loss, scored responses.

Entries (``instruction``, ``input``, ``output``) are split seeded (85% train, 10% test, 5% validation),
formatted with :func:`tfgpt.finetune.instruct.format_prompt`, given an end-of-text and collated
per batch to the batch's longest example. The loss covers the response tokens (and with
``mask_prompt=False`` the prompt too). The output is an ordinary LM run dir (``tfgpt.load`` reads
it; LoRA is merged on save) with an ``instruct:`` section in ``config.yaml`` and
``responses.json``: the test split's greedy responses next to the references, scored with
ROUGE-L and BLEU. Examples longer than ``block_size + 1`` tokens are truncated (one warning).
Work happens in ``OUT.partial/`` (:mod:`tfgpt.finetune.checkpoints`), renamed to ``OUT`` at the end;
an interrupted run continues with ``resume=True``.
"""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfgpt.atomic import write_text_atomic
from tfgpt.config import save_model_config
from tfgpt.errors import ConfigError, TokenizerError
from tfgpt.finetune import checkpoints as ckpt
from tfgpt.finetune.classify import check_out
from tfgpt.finetune.instruct import (
    collate,
    encode_entry,
    format_prompt,
    masked_lm_loss,
    no_end_of_text,
    read_instruction_data,
    unencodable_entry,
)
from tfgpt.finetune.lora import enable_lora_on, freeze, param_counts
from tfgpt.finetune.progress import EpochLine, say
from tfgpt.finetune.scores import score_responses
from tfgpt.finetune.stack import DEFAULT_CLIP, check_stack, make_finetune_optimizer, with_precision
from tfgpt.runs import CONFIG_YAML, LOGS_DIR, load, save_run

TRAINABLE = ("all", "last-block", "lora")
RESPONSES_JSON = "responses.json"
TEMPLATE = "alpaca"
#: train and test fractions (the book's chapter 7); validation gets the rest
FRACTIONS = (0.85, 0.10)

Pair = tuple[list[int], list[int]]


def split_entries(entries: list[dict[str, str]], seed: int = 0) -> tuple[list, list, list]:
    """Seeded shuffle, then ``(train, val, test)`` of ``int(0.85 n)``, the rest and ``int(0.10 n)``.

    Example:
        >>> [len(s) for s in split_entries([{"i": str(k)} for k in range(1100)])]
        [935, 55, 110]
    """
    order = list(entries)
    random.Random(seed).shuffle(order)
    n_train, n_test = int(len(order) * FRACTIONS[0]), int(len(order) * FRACTIONS[1])
    return order[:n_train], order[n_train + n_test:], order[n_train : n_train + n_test]


def encode_pairs(entries: list[dict[str, str]], tokenizer: Any, block_size: int) -> tuple[list[Pair], int]:
    """``(prompt_ids, response_ids)`` per entry and how many exceed ``block_size`` inputs (incl. end-of-text)."""
    pairs = [encode_entry(e, tokenizer) for e in entries]
    too_long = sum(len(p) + len(r) > block_size for p, r in pairs)  # + eot - 1 shift = inputs length
    return pairs, too_long


class InstructBatches:
    """Batches of ``collate``d pairs, each padded to its own longest example; a ``tf.data`` for ``fit``.

    ``dataset()`` wraps a generator of pre-collated batches (shapes ``[None, None]``, so each batch
    keeps its own width); with a ``seed`` pass ``k`` (``passes``, counted from 0) is in the order
    ``default_rng([seed, k]).permutation``, so a resumed run that sets ``passes`` to the epochs
    done sees the batches an uninterrupted one does.

    Example:
        >>> b = InstructBatches([([1, 2], [3]), ([1], [4, 5, 6])], batch_size=2, pad_id=0)
        >>> [a.tolist() for a in b[0]]
        [[[1, 2, 3, 0], [1, 4, 5, 6]], [[-100, 3, 0, -100], [4, 5, 6, 0]]]
    """

    def __init__(self, pairs: list[Pair], batch_size: int, pad_id: int, mask_prompt: bool = True,
                 max_len: int | None = None, seed: int | None = None) -> None:
        self.pairs, self.batch_size, self.pad_id = pairs, batch_size, pad_id
        self.mask_prompt, self.max_len = mask_prompt, max_len
        self.seed, self.passes = seed, 0
        self.order = np.arange(len(pairs))

    def __len__(self) -> int:
        return -(-len(self.pairs) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return collate([self.pairs[i] for i in rows], self.pad_id, mask_prompt=self.mask_prompt,
                       max_len=self.max_len)

    def __call__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass: a new seeded order first (when seeded), then every batch."""
        if self.seed is not None:
            self.order = np.random.default_rng([self.seed, self.passes]).permutation(len(self.pairs))
            self.passes += 1
        for index in range(len(self)):
            yield self[index]

    def dataset(self) -> Any:
        """``tf.data.Dataset`` of ``(inputs, labels)`` int32 ``[batch, width]``, its length known."""
        import tensorflow as tf

        spec = tf.TensorSpec((None, None), tf.int32)
        ds = tf.data.Dataset.from_generator(self, output_signature=(spec, spec))
        return ds.apply(tf.data.experimental.assert_cardinality(len(self)))

    def tokens(self) -> int:
        """Real (non-pad) input tokens in one pass: each pair's prompt + response + eot - 1, capped."""
        cap = self.max_len or 1 << 62
        return sum(min(len(p) + len(r), cap) for p, r in self.pairs)


@keras.saving.register_keras_serializable(package="tfgpt")
class MaskedLMLoss(keras.losses.Loss):
    """``masked_lm_loss`` as a Keras loss: mean cross-entropy over labels != -100 of the batch."""

    def __init__(self, name: str = "masked_lm_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return masked_lm_loss(y_pred, keras.ops.cast(y_true, "int32"))


def split_loss(model: Any, batches: InstructBatches) -> float | None:
    """The token-weighted mean masked loss over all ``batches`` (dropout off); None for no data."""
    total, count = 0.0, 0
    for i in range(len(batches)):
        x, y = batches[i]
        n = int((y != -100).sum())
        if n:
            total += float(masked_lm_loss(model(x, training=False), y)) * n
            count += n
    return total / count if count else None


def generate_responses(model: Any, tokenizer: Any, entries: list[dict[str, str]], max_new_tokens: int) -> list[str]:
    """Greedy responses (KV-cached ``tfgpt.generate``, stopping at end-of-text) to each entry's prompt.

    Prompts longer than ``block_size`` keep their last ``block_size`` tokens (one warning in all).
    """
    from tfgpt.generate.generate import generate

    out, cropped = [], 0
    for entry in entries:
        prompt = format_prompt(entry)
        cropped += len(tokenizer.encode(prompt)) > model.config.block_size
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="prompt has .* tokens, more than block_size")
            out.append(generate(model, tokenizer, prompt, max_new_tokens=max_new_tokens, temperature=0).strip())
    if cropped:
        warnings.warn(f"{cropped} of {len(entries)} test prompts are longer than block_size "
                      f"{model.config.block_size}: generated from their last {model.config.block_size} tokens",
                      stacklevel=2)
    return out


def check_options(trainable: str, lora_rank: int, epochs: int, batch_size: int, max_new_tokens: int) -> None:
    """Refuse bad options before anything is read."""
    if trainable not in TRAINABLE:
        raise ConfigError(f"--trainable must be one of {', '.join(TRAINABLE)}; got {trainable!r}")
    for flag, value in (("--lora-rank", lora_rank), ("--epochs", epochs), ("--batch-size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{flag} must be a positive integer, got {value!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")


def _batches(parts: dict[str, list], tokenizer: Any, block_size: int, batch_size: int, mask_prompt: bool,
             seed: int) -> dict[str, InstructBatches]:
    """Encoded splits as batches (train reshuffled per epoch); warns once about truncated examples.

    Without ``mask_prompt`` a ``val_response`` entry holds the val split masked to its responses.
    """
    encoded = {k: encode_pairs(v, tokenizer, block_size) for k, v in parts.items()}
    cut = sum(n for _, n in encoded.values())
    if cut:
        warnings.warn(f"{cut} of {sum(len(v) for v in parts.values())} examples are longer than block_size "
                      f"{block_size} tokens: truncated to their first {block_size}", stacklevel=3)
    eot = int(tokenizer.eot_id)
    out = {k: InstructBatches(pairs, batch_size, eot, mask_prompt, block_size, seed if k == "train" else None)
           for k, (pairs, _) in encoded.items()}
    if not mask_prompt:
        out["val_response"] = InstructBatches(encoded["val"][0], batch_size, eot, True, block_size)
    return out


def _losses(model: Any, batches: dict[str, InstructBatches], when: str) -> dict[str, float | None]:
    """``val_loss_<when>`` (the training objective) and ``val_response_loss_<when>`` (response tokens only)."""
    val = split_loss(model, batches["val"])
    response = split_loss(model, batches["val_response"]) if "val_response" in batches else val
    return {f"val_loss_{when}": val, f"val_response_loss_{when}": response}


def _fit(model: Any, batches: dict[str, InstructBatches], work: Path, epochs: int,
         extra: list[keras.callbacks.Callback]) -> dict[str, Any]:
    """One ``model.fit`` per epoch from the last checkpoint in ``work`` on, per-epoch train/val loss in
    CSV + TensorBoard and a checkpoint after each; the last epoch's logs and tokens/s of this process."""
    logs = work / LOGS_DIR
    callbacks = [EpochLine(epochs), keras.callbacks.CSVLogger(str(logs / "metrics.csv"), append=True),
                 keras.callbacks.TensorBoard(str(logs), write_graph=False), *extra]
    val = batches["val"].dataset() if len(batches["val"]) else None

    def fit_epoch(epoch: int) -> dict[str, Any]:
        batches["train"].passes = epoch
        history = model.fit(batches["train"].dataset(), initial_epoch=epoch, epochs=epoch + 1, validation_data=val,
                            callbacks=callbacks, shuffle=False, verbose=0)
        return {f"fit_{k}": float(v[-1]) for k, v in history.history.items()}

    start = time.perf_counter()
    done, result = ckpt.run_epochs(work, model, epochs, fit_epoch)
    seconds = time.perf_counter() - start
    tokens = batches["train"].tokens()
    result = dict(result, train_tokens=tokens * epochs, train_seconds=round(seconds, 3),
                  tokens_per_s=round(tokens * (epochs - done) / seconds, 1))
    return result


def _responses(model: Any, tokenizer: Any, test: list[dict[str, str]], max_new_tokens: int,
               when: str) -> tuple[list, dict]:
    """``responses.json`` rows for the test split and their scores (``rouge_l_<when>``, ``bleu_<when>``)."""
    if not test or not max_new_tokens:
        return [], {}
    said = generate_responses(model, tokenizer, test, max_new_tokens)
    rows = [{**{k: e[k] for k in ("instruction", "input", "output")}, "model_response": r}
            for e, r in zip(test, said, strict=True)]
    scores = score_responses(said, [e["output"] for e in test])
    return rows, {f"{k}_{when}": v for k, v in scores.items()}


def _load_inputs(run: str | os.PathLike, data: str | os.PathLike, seed: int, batch_size: int,
                 mask_prompt: bool) -> tuple[Any, Any, dict[str, list], dict[str, InstructBatches]]:
    """``(gpt, tokenizer, splits, batches)``: entries read and checked, the run loaded, splits encoded."""
    entries = read_instruction_data(data)
    gpt, tokenizer = load(run)
    if tokenizer.eot_id is None:
        raise no_end_of_text(run, "instruction tuning")
    parts = dict(zip(("train", "val", "test"), split_entries(entries, seed), strict=True))
    try:
        batches = _batches(parts, tokenizer, gpt.config.block_size, batch_size, mask_prompt, seed)
    except TokenizerError as e:
        raise unencodable_entry(entries, lambda entry: encode_entry(entry, tokenizer), data) or e from None
    return gpt, tokenizer, parts, batches


def _make_trainable(gpt: Any, trainable: str, lora_rank: int, lora_alpha: float | None) -> dict[str, int]:
    """Add LoRA (``lora``) and freeze by group; says (stderr) and returns the parameter counts."""
    if trainable == "lora":
        enable_lora_on(gpt, lora_rank, lora_alpha)
    freeze(gpt, trainable)
    n_trainable, n_total = param_counts(gpt)
    say(f"trainable parameters: {n_trainable:,} of {n_total:,} ({trainable})")
    return {"trainable_params": n_trainable, "total_params": n_total}


def _train_into(work: Path, gpt: Any, tokenizer: Any, parts: dict[str, list], batches: dict[str, InstructBatches],
                epochs: int, max_new_tokens: int, callbacks: list[keras.callbacks.Callback]) -> dict[str, Any]:
    """Fit, save the run into ``work``, reload it (LoRA merged) and score it; returns the new metrics."""
    with ckpt.keeps_finished_epochs(work):
        metrics = _fit(gpt, batches, work, epochs, callbacks)
    save_run(work, gpt, tokenizer)
    tuned, _ = load(work)  # what users get: LoRA merged, plain Dense layers
    metrics.update(_losses(tuned, batches, "after"))
    rows, scores = _responses(tuned, tokenizer, parts["test"], max_new_tokens, "after")
    write_text_atomic(work / RESPONSES_JSON, json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    return {**metrics, **scores}


def _start(run: str | os.PathLike, data: str | os.PathLike, work: Path, opts: dict[str, Any], resume: bool) -> tuple:
    """``(gpt, tokenizer, splits, batches, metrics before training)``; ``OUT.partial`` created (or its
    manifest checked on resume) once the data and the run are read. The starting model's val loss
    and scores are measured once and kept for a resumed run."""
    gpt, tokenizer, parts, batches = _load_inputs(run, data, opts["seed"], opts["batch_size"], opts["mask_prompt"])
    manifest = dict(opts, run=str(Path(run).resolve()), data=str(Path(data).resolve()),
                    data_sha256=ckpt.file_digest(data))
    ckpt.start_work(work, resume, manifest)

    def before() -> dict[str, Any]:
        metrics = _losses(gpt, batches, "before")
        if opts["score_start"]:
            metrics.update(_responses(gpt, tokenizer, parts["test"], opts["max_new_tokens"], "before")[1])
        return metrics

    return gpt, tokenizer, parts, batches, ckpt.remembered(work, "before", before)


def finetune_instruct(
    run: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *, mask_prompt: bool = True,
    epochs: int = 2, batch_size: int = 8, lr: float = 5e-5, seed: int = 0, trainable: str = "all",
    lora_rank: int = 16, lora_alpha: float | None = None, max_new_tokens: int = 256, score_start: bool = True,
    resume: bool = False, clip: float = DEFAULT_CLIP, accumulate: int = 1, precision: str = "float32",
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> dict[str, Any]:
    """Instruction-tune ``run`` on an Alpaca-style JSON file into the LM run dir ``out``; returns its metrics.

    ``score_start`` also scores the starting model's test responses (``rouge_l_before``, ``bleu_before``).
    Work happens in ``OUT.partial/`` with a checkpoint per epoch; ``resume=True`` continues an
    interrupted run (same arguments). ``clip``, ``accumulate``, ``precision``: :mod:`tfgpt.finetune.stack`.
    ``callbacks`` are extra Keras callbacks for each epoch's ``fit``.

    Example:
        >>> m = finetune_instruct("runs/base", "instruction-data.json", "runs/instruct")  # doctest: +SKIP
        >>> m["val_loss_before"], m["val_loss_after"], m["rouge_l_after"]  # doctest: +SKIP
    """
    out_path = check_out(run, out)
    check_options(trainable, lora_rank, epochs, batch_size, max_new_tokens)
    stack = dict(clip=clip, accumulate=accumulate, precision=precision)
    check_stack(**stack)
    work = ckpt.check_work(out_path, resume)
    opts = dict(mask_prompt=mask_prompt, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, trainable=trainable,
                lora_rank=lora_rank if trainable == "lora" else None, lora_alpha=lora_alpha,
                max_new_tokens=max_new_tokens, score_start=score_start, **stack)
    gpt, tokenizer, parts, batches, metrics = _start(run, data, work, opts, resume)
    keras.utils.set_random_seed(seed)
    gpt = with_precision(gpt, precision)
    metrics.update(_make_trainable(gpt, trainable, lora_rank, lora_alpha))
    # no XLA: every batch has its own width, and XLA would compile each one
    gpt.compile(optimizer=make_finetune_optimizer(gpt, lr, epochs * len(batches["train"]), **stack),
                loss=MaskedLMLoss(), jit_compile=False)
    metrics.update(_train_into(work, gpt, tokenizer, parts, batches, epochs, max_new_tokens, list(callbacks or [])))
    section = {"template": TEMPLATE, "mask_prompt": mask_prompt, "data": str(data), "trainable": trainable,
               "lora_rank": lora_rank if trainable == "lora" else None, "seed": seed, **stack,
               "split": {k: len(v) for k, v in parts.items()}, "metrics": metrics}
    save_model_config(work / CONFIG_YAML, gpt.config, instruct=section)
    ckpt.finish_work(work, out_path)
    return {"split": section["split"], **metrics}
