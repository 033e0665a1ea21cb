"""tfgpt.seeds: any integer seed becomes the int32 the stateless samplers take, wrapping modulo 2**32."""

import numpy as np
import pytest

from tfgpt.errors import GenerationError
from tfgpt.seeds import seed32


@pytest.mark.parametrize(
    ("seed", "expected"),
    [(0, 0), (7, 7), (-1, -1), (2**31 - 1, 2**31 - 1), (2**31, -(2**31)), (2**32 + 5, 5), (-(2**31) - 1, 2**31 - 1),
     (np.int64(2**40 + 3), 3)],
)
def test_seed32_wraps_modulo_2_to_the_32(seed, expected):
    out = seed32(seed)
    assert out.dtype == np.int32
    assert int(out) == expected


@pytest.mark.parametrize("seed", [True, 1.5, "3", None])
def test_seed32_refuses_non_integers(seed):
    with pytest.raises(GenerationError, match="seed must be an integer"):
        seed32(seed)
