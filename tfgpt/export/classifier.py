"""SavedModel of a classifier run (from ``tfgpt finetune classify``): strings in, labels and probabilities out.

``serving_default`` (no XLA, no ``py_function``; the TF1 session loader TF Serving mirrors runs it):

    inputs: ``texts`` string ``[batch]``
    outputs: ``labels`` string ``[batch]``, ``label_ids`` int32 ``[batch]``, ``probability`` float32
    ``[batch]`` (the chosen label's), ``probabilities`` float32 ``[batch, num_classes]`` (softmax, in
    the order of ``export.json``'s ``labels``).

The run's tokenizer is in the graph (``tokenizer.graph_tokenizer()``, as in the LM export). Each text
keeps its first ``block_size`` tokens and rows are right-padded with the classifier's pad id, as
:func:`tfgpt.finetune.classify.classify` does, so the probabilities equal ``classify()``'s (an
empty text pools the pad token at position 0, as there). ``export_run`` calls these functions for
a run whose ``config.yaml`` has a ``classifier:`` section; only the ``savedmodel`` format applies.

Example:
    >>> from tfgpt.export import export_run
    >>> info = export_run("runs/spam", "export/spam")  # doctest: +SKIP
    >>> info["kind"], info["labels"]  # doctest: +SKIP
    ('classifier', ['ham', 'spam'])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.trackable.data_structures import NoDependency

from tfgpt.config import read_yaml
from tfgpt.errors import ExportError
from tfgpt.export.warmup import WARMUP_FILE, sample_prompts

KIND = "classifier"
INPUT = "texts"
#: Largest |export - Keras| probability difference ``verify`` accepts.
PROB_TOL = 1e-5


def is_classifier_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir/config.yaml`` has a ``classifier:`` section (a ``tfgpt finetune classify`` output)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return False
    config = read_yaml(path)
    return isinstance(config, dict) and "classifier" in config


def load(run_dir: Path) -> tuple[Any, Any, list[str], Path]:
    """``(model, tokenizer, labels, weights file)`` of a classifier run (:func:`load_classifier`)."""
    from tfgpt.finetune.classify import load_classifier

    model, tokenizer, labels = load_classifier(run_dir)
    weights = next((run_dir / f for f in ("model.keras", "model.weights.h5") if (run_dir / f).is_file()), run_dir)
    return model, tokenizer, labels, weights


def check_options(run_dir: Path, formats: Sequence[str] | str | None, quantize: str | None,
                  checkpoint: str | None) -> None:
    """Refuse what a classifier export cannot do: a format other than savedmodel, --quantize, --checkpoint."""
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    other = [f for f in (formats or ["savedmodel"]) if f != "savedmodel"]
    why = f"{run_dir} is a classifier run (config.yaml has a classifier: section): it exports only as a SavedModel"
    if other:
        raise ExportError(f"{why}; --format {','.join(other)} is not supported for classifiers "
                          f"(use --format savedmodel)")
    if quantize is not None:
        raise ExportError(f"{why}; --quantize applies to the LM's TFLite files (an int8 classifier keeps "
                          f"the int8 base it was trained with)")
    if checkpoint is not None:
        raise ExportError(f"{why}; it holds one model and no checkpoints: drop --checkpoint")


class ClassifierModule(tf.Module):
    """The exported ``tf.Module``: the classifier's variables, the in-graph tokenizer, ``serving_default``.

    Example:
        >>> import numpy as np
        >>> from tfgpt.finetune.classifier import GPTClassifier
        >>> from tfgpt.model.gpt import GPT
        >>> from tfgpt.tokenizers import CharTokenizer
        >>> tok = CharTokenizer.train(["abc"])
        >>> clf = GPTClassifier(GPT(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8), 2)
        >>> module = ClassifierModule(clf, tok, ["no", "yes"])  # keep a reference: the tf.function needs it
        >>> out = module.serving_default(tf.constant(["ab", ""]))
        >>> out["probabilities"].shape.as_list(), out["labels"].dtype.name
        ([2, 2], 'string')
    """

    def __init__(self, model: Any, tokenizer: Any, labels: Sequence[str]) -> None:
        super().__init__(name="tfgpt_classifier")
        if not model.built:
            model.build((None, None))
        if len(labels) != model.num_classes:
            raise ExportError(f"{len(labels)} labels for a {model.num_classes}-class classifier")
        self.model = NoDependency(model)  # its variables are tracked once, below
        # TF1 session loader (TF Serving) needs the variables tracked by the module itself.
        self.vars = [v.value for v in model.variables]
        self.graph_tokenizer = tokenizer.graph_tokenizer()
        self.labels = NoDependency([str(x) for x in labels])
        self.block_size = int(model.backbone.config.block_size)
        self.pad_id = int(model.pad_id)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT)])
    def serving_default(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        cleaned = tf.strings.unicode_transcode(
            texts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD, replace_control_characters=False)
        check = tf.debugging.assert_equal(
            tf.reduce_all(tf.equal(cleaned, texts)), True, message="a text is not valid UTF-8")
        with tf.control_dependencies([check]):
            ids = self.graph_tokenizer.tokenize(tf.identity(texts))[:, : self.block_size]  # [batch, (<= block)]
        width = tf.maximum(tf.cast(ids.bounding_shape(axis=1), tf.int32), 1)  # an all-empty batch: one pad column
        dense = ids.to_tensor(default_value=self.pad_id, shape=tf.stack([-1, width]))  # [batch, width]
        logits = tf.cast(self.model(dense), tf.float32)  # [batch, num_classes]
        probs = tf.nn.softmax(logits, axis=-1)
        chosen = tf.argmax(probs, axis=-1, output_type=tf.int32)  # [batch]
        return {"labels": tf.gather(tf.constant(self.labels), chosen), "label_ids": chosen,
                "probability": tf.reduce_max(probs, axis=-1), "probabilities": probs}


def write_warmup(sm_dir: Path, name: str, texts: list[str]) -> Path:
    """``assets.extra/tf_serving_warmup_requests``: one ``serving_default`` request on ``texts``."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    extra = sm_dir / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    path = extra / WARMUP_FILE
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=name, signature_name="serving_default"),
        inputs={INPUT: tf.make_tensor_proto(texts, tf.string)})
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())
    return path


def save_savedmodel(model: Any, tokenizer: Any, labels: Sequence[str], export_dir: Path, name: str,
                    version: int) -> dict[str, Any]:
    """Write ``savedmodel/<name>/<version>/`` (+ warmup request); its export.json entry (less the signatures)."""
    rel = f"savedmodel/{name}/{version}"
    sm_dir = export_dir / rel
    module = ClassifierModule(model, tokenizer, labels)
    try:
        tf.saved_model.save(module, str(sm_dir), signatures={"serving_default": module.serving_default})
    except Exception as e:  # noqa: BLE001 - tracing can fail in many ways; name the step
        raise ExportError(f"saving the classifier SavedModel failed: {type(e).__name__}: {e}") from None
    write_warmup(sm_dir, name, sample_prompts(tokenizer)[:2])
    return {"path": rel, "warmup": f"assets.extra/{WARMUP_FILE}", "xla": False, "input": INPUT}


def keras_probabilities(model: Any, tokenizer: Any, texts: list[str]) -> np.ndarray:
    """``[n, num_classes]`` softmax of the Keras classifier on ``texts``, encoded as ``classify()`` does."""
    import warnings

    import keras

    from tfgpt.finetune.classify import encode_texts

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the truncation warning
        ids, _ = encode_texts(tokenizer, texts, model.backbone.config.block_size)
    return np.asarray(keras.ops.softmax(model(ids), axis=-1))


def verify(sm_dir: Path, model: Any, tokenizer: Any) -> dict[str, Any]:
    """Run the SavedModel through the TF1 session loader on sample texts; compare with the Keras model."""
    from tfgpt.export.verify import session_run

    texts = [*sample_prompts(tokenizer), ""]
    got = session_run(sm_dir, "serving_default", {INPUT: np.array(texts, dtype=object)})["probabilities"]
    diff = float(np.max(np.abs(got - keras_probabilities(model, tokenizer, texts))))
    if not diff <= PROB_TOL:
        raise ExportError(f"classifier SavedModel probabilities differ from Keras by {diff:.3g} (> {PROB_TOL})")
    return {"savedmodel": {"texts": len(texts), "probabilities_max_abs_diff": diff, "loader": "tf.compat.v1"}}


def classifier_section(run_dir: Path, labels: list[str]) -> dict[str, Any]:
    """export.json's ``source.classifier``: the run's ``classifier:`` section, without its metrics."""
    section = dict(read_yaml(run_dir / "config.yaml")["classifier"])
    return {k: v for k, v in section.items() if k != "metrics"} | {"labels": labels}
