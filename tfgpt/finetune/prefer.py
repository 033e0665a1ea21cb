"""Preference-tune a run with Direct Preference Optimization (``finetune_prefer``).

Entries (``instruction``, ``input``, ``chosen``, ``rejected``) are split seeded 90/10 into
train/val. Each response is put after the Alpaca prompt
(:func:`tfgpt.finetune.instruct.format_prompt`) and given an end-of-text; a batch holds the
chosen sequences of its pairs, then the rejected ones, padded to the batch's longest
(:func:`tfgpt.finetune.instruct.collate`, labels masked to the response). The policy is trained
with :func:`tfgpt.finetune.dpo.dpo_loss` against a frozen reference copy of the starting model,
which is run on every batch. Dropout is off in both, so policy = reference gives margin 0 and
loss log 2 exactly. Loss, rewards, margin and accuracy are logged per step (train) and every
``eval_every`` steps and at each epoch end (val) to ``RUN2/logs/steps.jsonl`` and TensorBoard.
The output is an ordinary LM run dir (``tfgpt.load`` reads it; LoRA is merged on save) with a
``prefer:`` section in ``config.yaml``, and the starting run's ``instruct:`` section when it has one
(so ``tfgpt chat`` keeps its template). Examples over ``block_size + 1`` tokens are truncated
(one warning).
"""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfgpt.atomic import write_text_atomic
from tfgpt.config import read_yaml
from tfgpt.errors import ConfigError, TokenizerError
from tfgpt.finetune import checkpoints as ckpt
from tfgpt.finetune.classify import check_out
from tfgpt.finetune.dpo import dpo_loss, read_preference_data, sequence_logprob
from tfgpt.finetune.instruct import collate, encode_entry, no_end_of_text, unencodable_entry
from tfgpt.finetune.lora import enable_lora_on, freeze, param_counts
from tfgpt.finetune.progress import EpochLine, say
from tfgpt.finetune.stack import DEFAULT_CLIP, check_stack, make_finetune_optimizer, with_precision
from tfgpt.finetune.tune_instruct import InstructBatches, check_options
from tfgpt.runs import CONFIG_YAML, LOGS_DIR, load, save_run

#: the share of the pairs that is trained on; validation gets the rest
TRAIN_FRACTION = 0.9
#: the per-step log in ``RUN2/logs/``: one JSON object per train step and per val evaluation
STEPS_JSONL = "steps.jsonl"
METRICS = ("loss", "chosen_reward", "rejected_reward", "margin", "accuracy")
TEMPLATE = "alpaca"

Pair = tuple[list[int], list[int]]


def split_pairs(entries: list[dict[str, str]], seed: int = 0) -> tuple[list, list]:
    """Seeded shuffle, then ``(train, val)``: ``int(0.9 n)`` (at least 1) and the rest.

    Example:
        >>> [len(s) for s in split_pairs([{"i": str(k)} for k in range(1100)])]
        [990, 110]
    """
    order = list(entries)
    random.Random(seed).shuffle(order)
    n_train = max(1, int(len(order) * TRAIN_FRACTION))
    return order[:n_train], order[n_train:]


def encode_preference(entry: dict[str, str], tokenizer: Any) -> tuple[Pair, Pair]:
    """``((prompt, chosen_ids), (prompt, rejected_ids))``: each response after the entry's prompt."""
    return (encode_entry({**entry, "output": entry["chosen"]}, tokenizer),
            encode_entry({**entry, "output": entry["rejected"]}, tokenizer))


class PreferenceBatches(InstructBatches):
    """Batches of preference pairs: rows ``[:n]`` the chosen sequences, ``[n:]`` the rejected ones.

    Example:
        >>> b = PreferenceBatches([(([1], [2]), ([1], [3, 4]))], batch_size=2, pad_id=0)
        >>> [a.tolist() for a in b[0]]
        [[[1, 2, 0], [1, 3, 4]], [[2, 0, -100], [3, 4, 0]]]
    """

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = [self.pairs[i] for i in self.order[index * self.batch_size : (index + 1) * self.batch_size]]
        return collate([c for c, _ in rows] + [r for _, r in rows], self.pad_id, max_len=self.max_len)

    def tokens(self) -> int:
        """Real (non-pad) input tokens in one pass, chosen and rejected sequences both, capped."""
        cap = self.max_len or 1 << 62
        return sum(min(len(p) + len(r), cap) for pair in self.pairs for p, r in pair)


class DPOModel(keras.Model):
    """``policy`` trained by DPO against ``reference``, a frozen copy of the starting model.

    ``train_step`` computes the per-sequence response log-probs of both models on the batch
    (both with dropout off; the reference under ``stop_gradient``), the DPO loss, and gives the
    policy's gradients to ``optimizer.apply``, which clips (``global_clipnorm``), accumulates
    (``gradient_accumulation_steps``) and, for mixed_float16, unscales (the loss is scaled by
    ``optimizer.scale_loss``): :func:`tfgpt.finetune.stack.make_finetune_optimizer`. It returns
    this step's ``loss``, ``chosen_reward``, ``rejected_reward``, ``margin`` and ``accuracy``.
    Only the policy is saved; this wrapper is not.
    """

    def __init__(self, policy: keras.Model, reference: keras.Model, beta: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy, self.reference = policy, reference
        self.reference.trainable = False
        self.beta = float(beta)

    def build(self, input_shape: tuple = (None, None)) -> None:
        for model in (self.policy, self.reference):
            if not model.built:
                model.build(input_shape)
        self.built = True

    def call(self, token_ids: Any, training: bool | None = None) -> Any:
        return self.policy(token_ids, training=False)

    def stats(self, token_ids: Any, labels: Any) -> dict[str, Any]:
        """This batch's DPO loss and rewards (batch means); rows ``[:n]`` chosen, ``[n:]`` rejected."""
        n = keras.ops.shape(token_ids)[0] // 2
        policy = sequence_logprob(self.policy(token_ids, training=False), labels)  # [2n]
        reference = keras.ops.stop_gradient(sequence_logprob(self.reference(token_ids, training=False), labels))
        return dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], self.beta)

    def train_step(self, data: Any) -> dict[str, Any]:
        import tensorflow as tf

        token_ids, labels = data[:2]  # (x, y) from fit; train_on_batch adds a sample weight (None)
        with tf.GradientTape() as tape:
            out = self.stats(token_ids, labels)
            scaled = self.optimizer.scale_loss(out["loss"])
        variables = self.policy.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return out

    def test_step(self, data: Any) -> dict[str, Any]:
        return self.stats(*data[:2])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta": self.beta}


def evaluate_pairs(model: DPOModel, batches: PreferenceBatches) -> dict[str, float] | None:
    """The exact per-pair means of the DPO metrics over all ``batches``; None for no data."""
    totals, count = dict.fromkeys(METRICS, 0.0), 0
    for index in range(len(batches)):
        x, y = batches[index]
        n = len(x) // 2
        for key, value in model.stats(x, y).items():
            totals[key] += float(value) * n
        count += n
    return {k: v / count for k, v in totals.items()} if count else None


class StepLog(keras.callbacks.Callback):
    """One JSON line per train step and per val evaluation in ``steps.jsonl``, and TensorBoard scalars.

    Val is evaluated before training (step 0), every ``eval_every`` steps (0: never) and at each
    epoch end. Each epoch's logs become the means over its steps plus the latest ``val_*``
    (so CSVLogger, placed after this callback, writes those).
    """

    def __init__(self, logs: Path, val: PreferenceBatches, eval_every: int) -> None:
        super().__init__()
        self.logs, self.val, self.eval_every = Path(logs), val, eval_every
        self.lines: list[dict[str, Any]] = []
        self.step, self.epoch, self.epoch_rows = 0, 0, []

    def _write(self, split: str, values: dict[str, float]) -> None:
        import tensorflow as tf

        line = {"split": split, "step": self.step, "epoch": self.epoch, **values}
        self.lines.append(line)
        with open(self.logs / STEPS_JSONL, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        with self.writers[split].as_default(step=self.step):
            for key, value in values.items():
                tf.summary.scalar(key, value)

    def _evaluate(self) -> None:
        """Evaluate val and log it, unless this step's val is logged already (or val is empty)."""
        if self.lines and self.lines[-1]["split"] == "val":
            return
        values = evaluate_pairs(self.model, self.val)
        if values is not None:
            self._write("val", values)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        import tensorflow as tf

        self.writers = {s: tf.summary.create_file_writer(str(self.logs / s)) for s in ("train", "val")}
        self._evaluate()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch, self.epoch_rows = epoch, []

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        values = {k: float(logs[k]) for k in METRICS}
        self.epoch_rows.append(values)
        self._write("train", values)
        if self.eval_every and self.step % self.eval_every == 0:
            self._evaluate()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._evaluate()
        if logs is not None and self.epoch_rows:
            logs.update({k: float(np.mean([r[k] for r in self.epoch_rows])) for k in METRICS})
            last_val = [line for line in self.lines if line["split"] == "val"][-1:]
            logs.update({f"val_{k}": last_val[0][k] for k in METRICS} if last_val else {})

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for writer in self.writers.values():
            writer.close()

    def restore(self, epochs_done: int) -> None:
        """Continue the log of an interrupted run: keep the lines of the finished epochs (the
        file is cut back to them) and count steps on from there."""
        path = self.logs / STEPS_JSONL
        lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
        self.lines = [line for line in lines if line["epoch"] < epochs_done]
        write_text_atomic(path, "".join(json.dumps(line) + "\n" for line in self.lines))
        self.step = self.lines[-1]["step"] if self.lines else 0


def check_prefer_options(trainable: str, lora_rank: int, epochs: int, batch_size: int, beta: float,
                         eval_every: int) -> None:
    """Refuse bad options before anything is read (the instruct driver's checks, plus beta and eval_every)."""
    check_options(trainable, lora_rank, epochs, batch_size, 0)
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not beta > 0:
        raise ConfigError(f"--beta must be a positive number, got {beta!r}")
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 0:
        raise ConfigError(f"--eval-every must be an integer >= 0, got {eval_every!r}")


def preference_batches(parts: dict[str, list], tokenizer: Any, block_size: int, batch_size: int,
             seed: int) -> dict[str, PreferenceBatches]:
    """Encoded splits as batches (train reshuffled each epoch); one warning about truncated pairs."""
    encoded = {k: [encode_preference(e, tokenizer) for e in v] for k, v in parts.items()}
    pairs = [p for v in encoded.values() for p in v]
    cut = sum(any(len(p) + len(r) > block_size for p, r in pair) for pair in pairs)
    if cut:
        empty = sum(any(len(p) > block_size for p, _ in pair) for pair in pairs)
        note = f" ({empty} of them keep no token of a response and teach nothing)" if empty else ""
        warnings.warn(f"{cut} of {len(pairs)} preference pairs are longer than block_size {block_size} tokens: "
                      f"truncated to their first {block_size}{note}", stacklevel=3)
    eot = int(tokenizer.eot_id)
    return {k: PreferenceBatches(v, batch_size, eot, max_len=block_size, seed=seed if k == "train" else None)
            for k, v in encoded.items()}


def _load_inputs(run: str | os.PathLike, data: str | os.PathLike, seed: int, batch_size: int) -> tuple:
    """``(policy, reference, tokenizer, splits, batches)``: entries checked, the run loaded twice."""
    entries = read_preference_data(data)
    policy, tokenizer = load(run)
    if tokenizer.eot_id is None:
        raise no_end_of_text(run, "preference tuning")
    reference, _ = load(run)  # a second model from the same weights, never updated
    parts = dict(zip(("train", "val"), split_pairs(entries, seed), strict=True))
    try:
        batches = preference_batches(parts, tokenizer, policy.config.block_size, batch_size, seed)
    except TokenizerError as e:
        raise unencodable_entry(entries, lambda entry: encode_preference(entry, tokenizer), data) or e from None
    return policy, reference, tokenizer, parts, batches


def _make_model(policy: Any, reference: Any, opts: dict[str, Any], steps: int) -> tuple[DPOModel, dict[str, int]]:
    """LoRA (``lora``) and freezing on the policy, the compiled :class:`DPOModel`, parameter counts.

    The training stack's AdamW (:mod:`tfgpt.finetune.stack`); no XLA, since every batch has its own width.
    """
    if opts["trainable"] == "lora":
        enable_lora_on(policy, opts["lora_rank"], opts["lora_alpha"])
    freeze(policy, opts["trainable"])
    n_trainable, n_total = param_counts(policy)
    say(f"trainable parameters: {n_trainable:,} of {n_total:,} ({opts['trainable']})")
    model = DPOModel(policy, reference, opts["beta"])
    stack = {k: opts[k] for k in ("clip", "accumulate", "precision")}
    model.compile(optimizer=make_finetune_optimizer(policy, opts["lr"], steps, **stack), jit_compile=False)
    return model, {"trainable_params": n_trainable, "total_params": n_total}


def _fit(model: DPOModel, batches: dict[str, PreferenceBatches], work: Path, opts: dict[str, Any],
         callbacks: list[keras.callbacks.Callback]) -> dict[str, Any]:
    """One ``model.fit`` per epoch from the last checkpoint in ``work`` on (the policy and the optimizer;
    the reference is the starting run), with the per-step log; the val metrics before/after and the
    train curve's ends."""
    steplog = StepLog(work / LOGS_DIR, batches["val"], opts["eval_every"])
    steplog.restore(ckpt.latest_epoch(work) or 0)
    cbs = [steplog, EpochLine(opts["epochs"]),
           keras.callbacks.CSVLogger(str(work / LOGS_DIR / "metrics.csv"), append=True), *callbacks]

    def fit_epoch(epoch: int) -> dict[str, Any]:
        batches["train"].passes = epoch
        history = model.fit(batches["train"].dataset(), initial_epoch=epoch, epochs=epoch + 1, callbacks=cbs,
                            shuffle=False, verbose=0)
        return {k: float(v[-1]) for k, v in history.history.items()}

    start = time.perf_counter()
    done, _ = ckpt.run_epochs(work, model.policy, opts["epochs"], fit_epoch, optimizer=model.optimizer)
    seconds = time.perf_counter() - start
    train = [line for line in steplog.lines if line["split"] == "train"]
    val = [line for line in steplog.lines if line["split"] == "val"]
    ran = sum(line["epoch"] >= done for line in train)
    result: dict[str, Any] = {"steps": len(train), "train_seconds": round(seconds, 3),
                              "steps_per_s": round(ran / seconds, 3)}
    for key in METRICS:
        result[f"train_{key}_first"], result[f"train_{key}_last"] = train[0][key], train[-1][key]
        if val:
            result[f"val_{key}_before"], result[f"val_{key}_after"] = val[0][key], val[-1][key]
    return result


def finetune_prefer(
    run: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *, beta: float = 0.1,
    epochs: int = 1, batch_size: int = 8, lr: float = 5e-6, seed: int = 0, trainable: str = "all",
    lora_rank: int = 16, lora_alpha: float | None = None, eval_every: int = 50, resume: bool = False,
    clip: float = DEFAULT_CLIP, accumulate: int = 1, precision: str = "float32",
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> dict[str, Any]:
    """DPO-tune ``run`` on a preference JSON file into the LM run dir ``out``; returns its metrics.

    Work happens in ``OUT.partial/`` with a checkpoint per epoch (the policy and the optimizer; the
    reference is reloaded from ``run``); ``resume=True`` continues an interrupted run (same
    arguments). ``clip``, ``accumulate``, ``precision``: :mod:`tfgpt.finetune.stack`. ``callbacks``
    are extra Keras callbacks for ``fit`` (their ``self.model`` is the :class:`DPOModel`, with
    ``.policy`` and ``.reference``).

    Example:
        >>> m = finetune_prefer("runs/instruct", "prefs.json", "runs/dpo", beta=0.1)  # doctest: +SKIP
        >>> m["val_margin_before"], m["val_margin_after"], m["val_accuracy_after"]  # doctest: +SKIP
    """
    out_path = check_out(run, out)
    check_prefer_options(trainable, lora_rank, epochs, batch_size, beta, eval_every)
    check_stack(clip, accumulate, precision)
    work = ckpt.check_work(out_path, resume)
    policy, reference, tokenizer, parts, batches = _load_inputs(run, data, seed, batch_size)
    opts = dict(beta=float(beta), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, trainable=trainable,
                lora_rank=lora_rank if trainable == "lora" else None, lora_alpha=lora_alpha,
                eval_every=eval_every, clip=clip, accumulate=accumulate, precision=precision)
    ckpt.start_work(work, resume, dict(opts, run=str(Path(run).resolve()), data=str(Path(data).resolve()),
                                       data_sha256=ckpt.file_digest(data)))
    keras.utils.set_random_seed(seed)
    policy, reference = with_precision(policy, precision), with_precision(reference, precision)
    model, metrics = _make_model(policy, reference, opts, epochs * len(batches["train"]))
    kept = {k: v for k, v in read_yaml(Path(run) / CONFIG_YAML).items() if k == "instruct"}
    with ckpt.keeps_finished_epochs(work):
        metrics.update(_fit(model, batches, work, opts, list(callbacks or [])))
    section = {"template": TEMPLATE, **opts, "data": str(data), "reference": str(run),
               "split": {k: len(v) for k, v in parts.items()}, "metrics": metrics}
    save_run(work, policy, tokenizer, {**kept, "prefer": section})  # LoRA merged by Keras on save
    ckpt.finish_work(work, out_path)
    return {"split": section["split"], **metrics}
