"""Time interpolation as pure functions, without a model."""

from __future__ import annotations

import numpy as np
import pytest

from crossmodalnet.model._time import numeric_times, time_code, time_weights

CATS = np.array(["0", "2", "4"])


def test_time_code_matches_names_and_numbers():
    assert time_code(CATS, "2") == 1
    assert time_code(CATS, 4.0) == 2
    with pytest.raises(ValueError, match="not one of the registered"):
        time_code(CATS, 3)
    assert numeric_times(np.array(["a", "b"])) is None


def test_time_weights_interpolate_between_trained_points():
    np.testing.assert_array_equal(time_weights(CATS, [0, 1, 2], "2"), [0, 1, 0])
    # the middle point held out: 2 is halfway between the trained 0 and 4
    np.testing.assert_allclose(time_weights(CATS, [0, 2], 2), [0.5, 0, 0.5])
    np.testing.assert_allclose(time_weights(CATS, [0, 2], 1), [0.75, 0, 0.25])
    with pytest.raises(ValueError, match="outside the trained range"):
        time_weights(CATS, [0, 1], 4)
    np.testing.assert_allclose(time_weights(CATS, [0, 1], 4, allow_extrapolation=True), [-1, 2, 0])
    with pytest.raises(ValueError, match="not numeric"):
        time_weights(np.array(["a", "b"]), [0], "b")
