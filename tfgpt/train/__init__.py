"""Training: optimizer and schedule, the strategy-safe train step, callbacks, checkpoints, ``train()``.

Import the pieces from their modules (``tfgpt.train.fit.train``, ``tfgpt.train.evaluate.evaluate_run``);
this package imports TensorFlow only when they are used.
"""
