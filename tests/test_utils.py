"""Small argument helpers of ``crossmodalnet._utils``."""

from __future__ import annotations

import numpy as np
import pytest

from crossmodalnet._utils import is_nonnegative_number


@pytest.mark.parametrize("value", [0, 0.0, 5e-4, 3, np.float32(0.1), np.int64(2), np.float64(1e9)])
def test_nonnegative_numbers_are_accepted(value):
    assert is_nonnegative_number(value)


@pytest.mark.parametrize(
    "value", [-1e-12, -1, float("nan"), float("inf"), np.float32("nan"), True, False, np.True_, "0.1", None, [0.1]]
)
def test_anything_else_is_refused(value):
    assert not is_nonnegative_number(value)
