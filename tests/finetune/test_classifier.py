"""tfgpt.finetune.classifier: last-real-token pooling under padding, head shape, .keras round trip."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfgpt.finetune.classifier import GPTClassifier, last_token_index, pad_batch
from tfgpt.model.gpt import GPT

PAD = 9


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(0)
    backbone = GPT(vocab_size=10, block_size=16, n_layer=2, n_head=2, n_embd=16)
    clf = GPTClassifier(backbone, num_classes=3, pad_id=PAD)
    clf.build((None, None))
    return clf


def test_last_token_index():
    ids = np.array([[1, 2, PAD, PAD], [3, PAD, 4, 5], [PAD, PAD, PAD, PAD]])
    assert np.asarray(last_token_index(ids, PAD)).tolist() == [1, 3, 0]


def test_head_replaces_lm_head(classifier):
    out = classifier(np.array([[1, 2, 3], [4, 5, 6]]))
    assert tuple(out.shape) == (2, 3)
    assert tuple(classifier.head.kernel.shape) == (16, 3)
    assert classifier.head.bias is not None


def _expected(clf, row):
    """Logits from the backbone itself on the unpadded row: its last position's state, then the head."""
    hidden, _ = clf.backbone.hidden_states(np.array([row]))
    h = np.asarray(hidden)[0, -1]
    return h @ np.asarray(clf.head.kernel) + np.asarray(clf.head.bias)


def test_pooling_with_padding_equals_unpadded(classifier):
    rows = [[1, 2, 3, 4, 5], [6, 7], [8]]
    padded = pad_batch(rows, PAD)
    assert padded.tolist()[1] == [6, 7, PAD, PAD, PAD]
    by_mask = np.asarray(classifier(padded))
    by_length = np.asarray(classifier(padded, lengths=np.array([5, 2, 1])))
    for i, row in enumerate(rows):
        np.testing.assert_allclose(by_mask[i], _expected(classifier, row), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(by_length[i], _expected(classifier, row), rtol=1e-5, atol=1e-6)


def test_keras_round_trip_safe_mode(classifier, tmp_path):
    path = tmp_path / "clf.keras"
    classifier.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, GPTClassifier)
    assert (loaded.num_classes, loaded.pad_id) == (3, PAD)
    ids = pad_batch([[1, 2, 3], [4]], PAD)
    np.testing.assert_allclose(np.asarray(loaded(ids)), np.asarray(classifier(ids)), rtol=0, atol=1e-6)


def test_needs_two_classes():
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        GPTClassifier(GPT(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8), 1)
