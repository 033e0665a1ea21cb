"""What the fine-tuning drivers tell a user while they work: one line per message or epoch, on stderr.

Standard output is left to the result (the ``tfgpt finetune`` commands print one JSON object
there, as ``tfgpt train`` does), so the drivers fit with ``verbose=0`` (Keras's ``verbose=2``
line goes to stdout) and :class:`EpochLine` writes each epoch's summary to stderr instead.

Example:
    >>> import contextlib, io
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err):
    ...     say("trainable parameters: 66 of 100 (head)")
    >>> err.getvalue()
    'trainable parameters: 66 of 100 (head)\\n'
"""

from __future__ import annotations

import sys
import time
from typing import Any

import keras


def say(message: str) -> None:
    """Print ``message`` as one line on stderr (never stdout, which holds the result)."""
    print(message, file=sys.stderr, flush=True)


def epoch_line(epoch: int, epochs: int, seconds: float, logs: dict[str, Any]) -> str:
    """``epoch E/N - Ts - name: value - ...`` for epoch ``epoch`` (0-based) of ``epochs``.

    Example:
        >>> epoch_line(0, 2, 7.04, {"loss": 0.69314, "accuracy": 0.5, "val_loss": 0.7})
        'epoch 1/2 - 7.0s - loss: 0.6931 - accuracy: 0.5000 - val_loss: 0.7000'
    """
    values = " - ".join(f"{k}: {float(v):.4f}" for k, v in logs.items() if isinstance(v, int | float))
    return f"epoch {epoch + 1}/{epochs} - {seconds:.1f}s" + (f" - {values}" if values else "")


class EpochLine(keras.callbacks.Callback):
    """One :func:`epoch_line` on stderr at each epoch end; place it after the callbacks that add to the logs.

    ``epochs`` is the run's total (each driver fits one epoch per ``fit`` call, so Keras's own
    count would be the current epoch).
    """

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        say(epoch_line(epoch, self.epochs, time.perf_counter() - self.start, logs or {}))
