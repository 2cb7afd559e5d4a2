"""ReLU and sigmoid (csrc/activation.c) against float64 numpy, finite differences and torch."""
import numpy as np
import pytest

import fastcnn.functional as F
from fastcnn import _native
from gradcheck import check_directional

SHAPES = [(1,), (7,), (3, 5), (2, 3, 4, 5), (64, 16, 28, 28), (100003,)]


def relu64(x):
    return np.maximum(x.astype(np.float64), 0.0)


def sigmoid64(x):
    x = x.astype(np.float64)
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("shape", SHAPES)
def test_relu_matches_numpy(shape, reference, num_threads, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    y = _native.relu(x, reference=reference)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, relu64(x).astype(np.float32))
    dy = rng.standard_normal(shape).astype(np.float32)
    dx = _native.relu_backward(dy, y, reference=reference)
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, 0).astype(np.float32))


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("shape", SHAPES)
def test_sigmoid_matches_numpy(shape, reference, num_threads, rng):
    x = (4 * rng.standard_normal(shape)).astype(np.float32)
    y = _native.sigmoid(x, reference=reference)
    np.testing.assert_allclose(y, sigmoid64(x), rtol=1e-6, atol=1e-7)
    dy = rng.standard_normal(shape).astype(np.float32)
    dx = _native.sigmoid_backward(dy, y, reference=reference)
    s = y.astype(np.float64)  # the gradient is defined from the stored float32 output
    np.testing.assert_allclose(dx, dy * s * (1 - s), rtol=1e-5, atol=1e-7)


def test_sigmoid_is_stable_for_large_inputs():
    x = np.array([-1e4, -100.0, -88.0, 0.0, 88.0, 100.0, 1e4], np.float32)
    y = F.sigmoid(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, sigmoid64(x), rtol=1e-6, atol=1e-30)


def test_relu_passes_nan_through():
    y = F.relu(np.array([np.nan, -1.0, 2.0], np.float32))
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == 2


def test_one_and_two_threads_agree(rng):
    import fastcnn
    x = rng.standard_normal((64, 32, 28, 28)).astype(np.float32)
    old = fastcnn.get_num_threads()
    try:
        fastcnn.set_num_threads(1)
        one = F.sigmoid(x)
        fastcnn.set_num_threads(2)
        two = F.sigmoid(x)
    finally:
        fastcnn.set_num_threads(old)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("name", ["relu", "sigmoid"])
def test_backward_matches_finite_differences(name, rng):
    forward, backward = getattr(F, name), getattr(F, name + "_backward")
    # keep x away from relu's kink so the central difference is exact
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    x = np.where(np.abs(x) < 0.05, 0.5, x).astype(np.float32)
    u = rng.standard_normal(x.shape).astype(np.float32)
    grad = backward(u, forward(x))
    check_directional(forward, x, u, grad, rng, eps=1e-3)


@pytest.mark.parametrize("name", ["relu", "sigmoid"])
def test_matches_torch(name, torch, rng):
    x = (3 * rng.standard_normal((4, 3, 9, 7))).astype(np.float32)
    u = rng.standard_normal(x.shape).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch, name)(xt)
    yt.backward(torch.tensor(u))
    y = getattr(F, name)(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(getattr(F, name + "_backward")(u, y), xt.grad.numpy(),
                               rtol=1e-5, atol=1e-7)


def test_converts_other_dtypes_and_orders():
    x = np.arange(-6, 6, dtype=np.float64).reshape(3, 4).T  # float64, Fortran order
    y = F.relu(x)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(F.relu(np.arange(-2, 3)), [0, 0, 0, 1, 2])


@pytest.mark.parametrize("bad, error, match", [
    (np.array(["a", "b"]), TypeError, "dtype=<U1"),
    (np.array([1 + 2j]), TypeError, "dtype=complex128"),
    (np.array([None, 1.0], dtype=object), TypeError, "dtype=object"),
    (np.zeros((0, 3), np.float32), ValueError, r"shape=\(0, 3\)"),
])
def test_bad_input_is_rejected(bad, error, match):
    with pytest.raises(error, match=match):
        F.relu(bad)


def test_backward_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match=r"y must have shape \(2, 3\). Received: y.shape=\(3, 2\)"):
        F.relu_backward(np.ones((2, 3)), np.ones((3, 2)))


def ulps(got, want):
    """|got - want| in float32 ulps of want (the denormal spacing below 2^-126)."""
    want32 = np.abs(want).astype(np.float32)
    return np.abs(got.astype(np.float64) - want) / np.spacing(want32).astype(np.float64)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_sigmoid_sweep_over_the_float_range(reference, rng):
    # The fast kernel's exp is csrc/expf_vec.h (<= 1 ulp; not libm): a million
    # inputs over [-104, 89] (denormal and zero results below -87), plus edges.
    edges = [0.0, -0.0, 1e-30, -1e-30, -87.33, -88.72, -103.27, -103.97, -103.98, -104.0,
             -1e4, 88.72, 88.73, 89.0, 1e4, np.inf, -np.inf]
    x = np.concatenate([rng.uniform(-104, 89, 1_000_000), np.linspace(-104, 0, 100_001),
                        edges]).astype(np.float32)
    y = _native.sigmoid(x, reference=reference)
    want = sigmoid64(x)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-30)
    assert ulps(y, want).max() <= (3.0 if not reference else 0.5)
    assert y[x == np.inf][0] == 1.0 and y[x == -np.inf][0] == 0.0
    assert np.isnan(_native.sigmoid(np.array([np.nan], np.float32), reference=reference)[0])
