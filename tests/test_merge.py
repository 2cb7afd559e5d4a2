"""The merge family (csrc/merge.c, fastcnn/_merge.pxi): the element-wise sum
of two branches, forward and backward, against float64 numpy."""
import numpy as np
import pytest

import fastcnn.functional as F


@pytest.mark.parametrize("shape", [(1,), (7,), (2, 3, 5, 4), (4, 16, 33, 31)])
@pytest.mark.parametrize("reference", [False, True])
def test_add_matches_float64(shape, reference, num_threads, rng):
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape).astype(np.float32)
    y = F.add(a, b, reference=reference)
    assert y.dtype == np.float32 and y.shape == shape
    np.testing.assert_array_equal(y, (a.astype(np.float64) + b).astype(np.float32))


def test_add_converts_and_checks(rng):
    np.testing.assert_array_equal(F.add([1, 2], np.array([0.5, 0.25])), [1.5, 2.25])
    with pytest.raises(ValueError, match=r"Received: a.shape=\(2, 3\), b.shape=\(3, 2\)"):
        F.add(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(TypeError, match="b must be an array of real numbers"):
        F.add(np.ones(2), np.array(["x", "y"]))


def test_add_backward_gives_two_fresh_copies(rng):
    g = rng.standard_normal((3, 4)).astype(np.float32)
    ga, gb = F.add_backward(g)
    np.testing.assert_array_equal(ga, g)
    np.testing.assert_array_equal(gb, g)
    assert not np.shares_memory(ga, g) and not np.shares_memory(ga, gb)
