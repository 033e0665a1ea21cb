"""tfgpt.export.warmup: the prompts exports are checked with, and TF Serving's warmup requests."""

from __future__ import annotations

import tensorflow as tf
from export_tiny_run import TEXT, sm_dir

from tfgpt.export.warmup import WARMUP_FILE, sample_prompts
from tfgpt.tokenizers import CharTokenizer


def test_warmup_requests_parse_as_prediction_logs(exported, sm_session):
    from tensorflow_serving.apis import prediction_log_pb2

    path = sm_dir(exported) / "assets.extra" / WARMUP_FILE
    assert exported[1]["savedmodel"]["warmup"] == "assets.extra/tf_serving_warmup_requests"
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    assert [r.predict_log.request.model_spec.signature_name for r in records] == [
        "serving_default", "complete", "logits", "generate_ids"
    ]
    for r in records:  # each warmup request runs as is through the session loader (one load, as TF Serving)
        req = r.predict_log.request
        feeds = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
        assert sm_session.run(req.model_spec.signature_name, feeds)


def test_sample_prompts_prefers_the_fixed_prompts_a_vocabulary_can_encode():
    assert sample_prompts(CharTokenizer.train([TEXT])) == ["ROMEO:", "The ", "Hello, world"]
    assert sample_prompts(CharTokenizer.train([TEXT]), n=1) == ["ROMEO:"]


def test_sample_prompts_tops_up_with_decoded_ids():
    # Only "Hello, world" encodes; the rest are decoded runs of plain ids (specials never used).
    tok = CharTokenizer.train(["Hello, world"], special_tokens=["<|endoftext|>"])
    assert sample_prompts(tok) == ["Hello, world", " ,H", ",Hde"]
    assert sample_prompts(CharTokenizer.train(["x"])) == ["x"]  # a one-character vocabulary yields what it can
