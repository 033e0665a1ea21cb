"""Sampling: greedy, top-k and top-p filters, seeded reproducibility."""

import numpy as np

from tfgpt.generate.sampling import NEG_INF, filter_logits, sample_next

LOGITS = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))


def test_greedy_is_argmax():
    logits = np.array([[0.1, 2.0, -1.0], [5.0, 0.0, 4.9]], np.float32)
    assert np.asarray(sample_next(logits, greedy=True)).tolist() == [1, 0]


def test_top_k_keeps_k_largest():
    out = np.asarray(filter_logits(LOGITS, top_k=2))
    assert (out[0, :2] > NEG_INF / 2).all() and (out[0, 2:] <= NEG_INF / 2).all()


def test_top_p_keeps_the_nucleus():
    # mass before each token: 0, .5, .8, .95 -> top_p=0.75 keeps the first two, 0.85 keeps three
    kept = lambda p: int((np.asarray(filter_logits(LOGITS, top_p=p)) > NEG_INF / 2).sum())  # noqa: E731
    assert kept(0.4) == 1 and kept(0.75) == 2 and kept(0.85) == 3 and kept(1.0) == 4


def test_sampling_is_reproducible_and_follows_the_distribution():
    draws = [int(np.asarray(sample_next(LOGITS, greedy=False, seed=11, step=s))[0]) for s in range(2000)]
    again = [int(np.asarray(sample_next(LOGITS, greedy=False, seed=11, step=s))[0]) for s in range(50)]
    assert draws[:50] == again
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.04)
    other = [int(np.asarray(sample_next(LOGITS, greedy=False, seed=12, step=s))[0]) for s in range(50)]
    assert other != draws[:50]


def test_temperature_sharpens():
    cold = [int(np.asarray(sample_next(LOGITS, greedy=False, temperature=0.05, seed=1, step=s))[0]) for s in range(200)]
    assert cold.count(0) > 190
