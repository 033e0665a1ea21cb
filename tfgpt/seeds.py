"""Seeds for the stateless samplers, as the int32 TensorFlow takes (numpy only: no Keras import).

Example:
    >>> int(seed32(7)), int(seed32(2**32 + 7)), int(seed32(2**31))
    (7, 7, -2147483648)
"""

from __future__ import annotations

import numpy as np

from tfgpt.errors import GenerationError


def seed32(seed: int) -> np.int32:
    """``seed`` as the int32 the stateless sampler takes: any Python int, wrapped modulo 2**32.

    Seeds in the int32 range map to themselves; larger ones (``seed + turn`` in a chat, a
    64-bit seed from a caller) wrap instead of overflowing.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise GenerationError(f"seed must be an integer, got {seed!r}")
    return np.array(int(seed) % 2**32, np.uint32).view(np.int32)[()]
