"""Prompts an export is checked and warmed up with, and TF Serving's warmup file.

``sample_prompts`` picks a few prompts any tokenizer can encode (verification and warmup share
them); ``write_warmup`` writes ``assets.extra/tf_serving_warmup_requests``, which TF Serving
replays at load time so that the first real request does not pay for tracing.

Example:
    >>> from tfgpt.tokenizers import CharTokenizer
    >>> sample_prompts(CharTokenizer.train(["Hello, world"]))
    ['Hello, world', ' ,H', ',Hde']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WARMUP_FILE = "tf_serving_warmup_requests"


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
        ("complete", {"prompts": tf.make_tensor_proto(prompts[:1], tf.string),
                      **{k: tf.make_tensor_proto([tf.make_ndarray(v).item()]) for k, v in params.items()}}),
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
