"""Max and average 2-d pooling (csrc/pool2d.c) against float64 numpy, finite
differences and torch."""
import os

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn._native import _max_pool2d_relu_backward
from gradcheck import check_directional
from subproc import run_python, supported_isas

# (N, C, H, W, kernel_size, stride, padding): N=1, C=1, non-square, odd sizes,
# stride > kernel, stride < kernel (overlapping windows), maximal padding,
# rows wider than the backward chunk (256), and sizes above the threading threshold.
CASES = [
    (1, 1, 1, 1, 1, 1, 0),
    (1, 1, 4, 4, 2, 2, 0),
    (1, 1, 5, 7, 2, 2, 0),
    (2, 3, 7, 9, 3, 2, 1),
    (2, 3, 8, 8, 3, 2, 0),
    (1, 2, 6, 5, (2, 3), (3, 1), (1, 1)),
    (2, 2, 9, 11, 2, 3, 0),
    (1, 3, 8, 8, 3, 1, 1),
    (2, 1, 7, 6, 5, 1, 2),
    (1, 2, 9, 10, (4, 5), (2, 3), (2, 2)),
    (3, 2, 3, 3, 3, 3, 1),
    (1, 1, 2, 2, 2, 1, 1),
    (1, 1, 3, 601, 2, 2, 0),
    (1, 1, 4, 1100, 3, 1, 1),
    (4, 8, 32, 33, 3, 2, 1),
    (4, 8, 32, 34, 2, 2, 0),
]


def random_cases(count, seed=7):
    """A seeded grid of random shapes and pooling geometries."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        R, S = (int(v) for v in rng.integers(1, 6, 2))
        sh, sw = (int(v) for v in rng.integers(1, 5, 2))
        ph, pw = int(rng.integers(0, R // 2 + 1)), int(rng.integers(0, S // 2 + 1))
        H = int(rng.integers(max(1, R - 2 * ph), 20))
        W = int(rng.integers(max(1, S - 2 * pw), 20))
        N, C = (int(v) for v in rng.integers(1, 4, 2))
        cases.append((N, C, H, W, (R, S), (sh, sw), (ph, pw)))
    return cases


ALL_CASES = CASES + random_cases(24)


def pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def windows(H, W, k, stride, pad):
    """Every output (p, q) with its clipped window and the window's sizes
    within the padded image and within the image, in float64-reference form."""
    (R, S), (sh, sw), (ph, pw) = pair(k), pair(stride), pair(pad)
    P, Q = (H + 2 * ph - R) // sh + 1, (W + 2 * pw - S) // sw + 1
    for p in range(P):
        for q in range(Q):
            a, b = p * sh - ph, q * sw - pw
            h0, h1, w0, w1 = max(a, 0), min(a + R, H), max(b, 0), min(b + S, W)
            padded = (min(a + R, H + ph) - a) * (min(b + S, W + pw) - b)
            yield p, q, P, Q, (h0, h1, w0, w1), padded, (h1 - h0) * (w1 - w0)


def max_pool64(x, k, stride, pad):
    """y and indices; for tie-free inputs the first maximum is the only one."""
    N, C, H, W = x.shape
    x64 = x.astype(np.float64)
    out = idx = None
    for p, q, P, Q, (h0, h1, w0, w1), _, _ in windows(H, W, k, stride, pad):
        if out is None:
            out, idx = np.empty((N, C, P, Q)), np.empty((N, C, P, Q), np.int64)
        win = x64[:, :, h0:h1, w0:w1].reshape(N, C, -1)
        local = np.argmax(win, axis=2)
        out[:, :, p, q] = np.max(win, axis=2)
        idx[:, :, p, q] = (h0 + local // (w1 - w0)) * W + w0 + local % (w1 - w0)
    return out, idx


def max_pool_backward64(dy, idx, shape):
    N, C, H, W = shape
    dx = np.zeros((N * C, H * W))
    rows = np.repeat(np.arange(N * C), dy[0, 0].size)
    np.add.at(dx, (rows, idx.reshape(-1)), dy.astype(np.float64).reshape(-1))
    return dx.reshape(shape)


def avg_pool64(x, k, stride, pad, count_include_pad):
    N, C, H, W = x.shape
    x64 = x.astype(np.float64)
    out = None
    for p, q, P, Q, (h0, h1, w0, w1), padded, inside in windows(H, W, k, stride, pad):
        if out is None:
            out = np.empty((N, C, P, Q))
        div = padded if count_include_pad else inside
        out[:, :, p, q] = x64[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / div
    return out


def avg_pool_backward64(dy, shape, k, stride, pad, count_include_pad):
    N, C, H, W = shape
    dx = np.zeros(shape)
    for p, q, P, Q, (h0, h1, w0, w1), padded, inside in windows(H, W, k, stride, pad):
        div = padded if count_include_pad else inside
        dx[:, :, h0:h1, w0:w1] += dy[:, :, p, q, None, None].astype(np.float64) / div
    return dx


def distinct(shape, rng):
    """float32 values without ties, far apart (0.1) so small steps keep every argmax."""
    n = int(np.prod(shape))
    return (0.1 * rng.permutation(n) - 0.05 * n).astype(np.float32).reshape(shape)


# ---- forward and backward against float64 numpy ------------------------------

@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("case", ALL_CASES, ids=str)
def test_max_pool_matches_numpy(case, reference, num_threads, rng):
    N, C, H, W, k, s, p = case
    x = distinct((N, C, H, W), rng)
    y, idx = F.max_pool2d(x, k, s, p, return_indices=True, reference=reference)
    want, want_idx = max_pool64(x, k, s, p)
    assert y.dtype == np.float32 and idx.dtype == np.int32
    np.testing.assert_array_equal(y, want.astype(np.float32))
    np.testing.assert_array_equal(idx, want_idx)
    # without indices: the values-only loops
    np.testing.assert_array_equal(F.max_pool2d(x, k, s, p, reference=reference), y)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = F.max_pool2d_backward(dy, idx, x.shape, reference=reference)
    assert dx.dtype == np.float32 and dx.shape == x.shape
    np.testing.assert_allclose(dx, max_pool_backward64(dy, want_idx, x.shape), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("count_include_pad", [True, False], ids=["incl_pad", "excl_pad"])
@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("case", ALL_CASES, ids=str)
def test_avg_pool_matches_numpy(case, reference, count_include_pad, num_threads, rng):
    N, C, H, W, k, s, p = case
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    y = F.avg_pool2d(x, k, s, p, count_include_pad=count_include_pad, reference=reference)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, avg_pool64(x, k, s, p, count_include_pad), rtol=1e-5, atol=1e-6)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = F.avg_pool2d_backward(dy, x.shape, k, s, p, count_include_pad=count_include_pad, reference=reference)
    assert dx.dtype == np.float32 and dx.shape == x.shape
    np.testing.assert_allclose(dx, avg_pool_backward64(dy, x.shape, k, s, p, count_include_pad),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 3, 5), (1, 70, 7, 7), (3, 50, 14, 9)],
                         ids=str)
def test_global_average_window_matches_numpy(shape, num_threads, rng):
    """A window covering the whole plane (the global average's own loop),
    over planes of fewer and more than 8 values and more than a work item's
    64 planes."""
    N, C, H, W = shape
    x = rng.standard_normal(shape).astype(np.float32)
    for count_include_pad in (True, False):
        y = F.avg_pool2d(x, (H, W), count_include_pad=count_include_pad)
        assert y.shape == (N, C, 1, 1)
        np.testing.assert_allclose(y[:, :, 0, 0], x.astype(np.float64).mean(axis=(2, 3)),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 50, 1, 1), (1, 70, 7, 7), (2, 65, 2, 3)],
                         ids=str)
def test_global_average_backward_is_the_reference_bit_for_bit(shape, rng):
    """The global average's gradient (its own loop over work items of 64
    planes) on 16 threads: dy / (H W) over every plane, -0 giving +0."""
    N, C, H, W = shape
    dy = rng.standard_normal((N, C, 1, 1)).astype(np.float32)
    dy.flat[0] = -0.0
    old = fastcnn.get_num_threads()
    try:
        fastcnn.set_num_threads(16)
        dx = F.avg_pool2d_backward(dy, shape, (H, W))
    finally:
        fastcnn.set_num_threads(old)
    np.testing.assert_array_equal(dx, F.avg_pool2d_backward(dy, shape, (H, W), reference=True))
    np.testing.assert_array_equal(dx, np.broadcast_to(dy / np.float32(H * W), shape))
    assert not np.any(np.signbit(dx[0, 0]))


def test_stride_defaults_to_kernel_size(rng):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    np.testing.assert_array_equal(F.max_pool2d(x, (3, 2)), F.max_pool2d(x, (3, 2), (3, 2)))
    np.testing.assert_array_equal(F.avg_pool2d(x, 3), F.avg_pool2d(x, 3, 3))
    y = F.avg_pool2d(x, 3)
    np.testing.assert_array_equal(F.avg_pool2d_backward(y, x.shape, 3),
                                  F.avg_pool2d_backward(y, x.shape, 3, 3))


def test_other_dtypes_and_orders_are_converted(rng):
    x = rng.standard_normal((2, 3, 8, 10))
    xf = np.asfortranarray(x)
    np.testing.assert_array_equal(F.max_pool2d(xf, 2), F.max_pool2d(x.astype(np.float32), 2))
    np.testing.assert_allclose(F.avg_pool2d(xf, 3, 2, 1), avg_pool64(x.astype(np.float32), 3, 2, 1, True),
                               rtol=1e-5, atol=1e-6)


def test_one_and_two_threads_agree(rng):
    x = rng.standard_normal((8, 32, 30, 29)).astype(np.float32)
    runs = []
    old = fastcnn.get_num_threads()
    try:
        for n in (1, 2):
            fastcnn.set_num_threads(n)
            y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
            a = F.avg_pool2d(x, 3, 2, 1)
            runs.append((y, idx, F.max_pool2d_backward(y, idx, x.shape), a,
                         F.avg_pool2d_backward(a, x.shape, 3, 2, 1)))
    finally:
        fastcnn.set_num_threads(old)
    for one, two in zip(*runs):
        np.testing.assert_array_equal(one, two)


# ---- finite differences ------------------------------------------------------

@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", [(2, 3, 7, 9, 3, 2, 1), (1, 2, 6, 5, (2, 3), (1, 2), (1, 1))], ids=str)
def test_avg_pool_backward_matches_finite_differences(case, count_include_pad, rng):
    N, C, H, W, k, s, p = case
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    f = lambda z: F.avg_pool2d(z, k, s, p, count_include_pad=count_include_pad)
    u = rng.standard_normal(f(x).shape).astype(np.float32)
    grad = F.avg_pool2d_backward(u, x.shape, k, s, p, count_include_pad=count_include_pad)
    check_directional(f, x, u, grad, rng, eps=1e-2)


@pytest.mark.parametrize("case", [(2, 3, 7, 9, 3, 2, 1), (1, 2, 8, 8, 3, 1, 1), (2, 2, 6, 8, 2, 2, 0)], ids=str)
def test_max_pool_backward_matches_finite_differences(case, rng):
    N, C, H, W, k, s, p = case
    x = distinct((N, C, H, W), rng)
    y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    u = rng.standard_normal(y.shape).astype(np.float32)
    grad = F.max_pool2d_backward(u, idx, x.shape)
    # steps of 1e-3 * N(0, 1) cannot reorder values 0.1 apart: argmax stays put
    check_directional(lambda z: F.max_pool2d(z, k, s, p), x, u, grad, rng, eps=1e-3)


# ---- PyTorch parity ------------------------------------------------------------

TORCH_CASES = [(2, 3, 7, 9, 3, 2, 1), (3, 4, 16, 15, 2, 2, 0), (2, 2, 9, 11, (3, 2), (1, 3), (1, 1)),
               (1, 3, 8, 8, 3, 1, 1), (4, 8, 32, 33, 3, 2, 1), (2, 5, 13, 12, 5, 2, 2)]


@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
def test_max_pool_matches_torch(case, torch, num_threads, rng):
    N, C, H, W, k, s, p = case
    # rounded values make ties, exercising torch's first-maximum rule
    x = np.round(rng.standard_normal((N, C, H, W)), 1).astype(np.float32)
    dy = None
    xt = torch.tensor(x, requires_grad=True)
    yt, it = torch.nn.functional.max_pool2d(xt, k, s, p, return_indices=True)
    y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    dy = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.tensor(dy))
    dx = F.max_pool2d_backward(dy, idx, x.shape)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-7)
    # torch's own int64 indices are accepted too
    np.testing.assert_array_equal(F.max_pool2d_backward(dy, it.numpy(), x.shape), dx)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
def test_avg_pool_matches_torch(case, count_include_pad, torch, num_threads, rng):
    N, C, H, W, k, s, p = case
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.avg_pool2d(xt, k, s, p, count_include_pad=count_include_pad)
    y = F.avg_pool2d(x, k, s, p, count_include_pad=count_include_pad)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-7)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.tensor(dy))
    dx = F.avg_pool2d_backward(dy, x.shape, k, s, p, count_include_pad=count_include_pad)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_ties_nan_and_inf_like_torch(reference, torch):
    nan, inf = np.nan, np.inf
    x = np.array([[[[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]],
                   [[1, nan, 2, 3], [nan, 1, 3, nan], [0, 0, 5, 5], [0, nan, 5, 5]],
                   [[-inf] * 4] * 4]], np.float32)
    for k, s, p in [(2, 2, 0), (3, 1, 1), (3, 2, 1), (2, 1, 0)]:
        y, idx = F.max_pool2d(x, k, s, p, return_indices=True, reference=reference)
        yt, it = torch.nn.functional.max_pool2d(torch.tensor(x), k, s, p, return_indices=True)
        np.testing.assert_array_equal(y, yt.numpy())  # NaN compares equal to NaN here
        np.testing.assert_array_equal(idx, it.numpy())
        np.testing.assert_array_equal(F.max_pool2d(x, k, s, p, reference=reference), y)
    # the stated rules, spelled out: first maximum, last NaN, first clipped position
    y, idx = F.max_pool2d(x, 2, return_indices=True, reference=reference)
    assert idx[0, 0, 0, 0] == 0
    assert np.isnan(y[0, 1, 0, 0]) and idx[0, 1, 0, 0] == 4
    assert y[0, 1, 1, 1] == 5 and idx[0, 1, 1, 1] == 10
    assert y[0, 2, 0, 0] == -inf and idx[0, 2, 0, 0] == 0
    _, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True, reference=reference)
    assert idx[0, 2, 1, 1] == 5


def test_padding_never_wins(rng):
    x = -1.0 - rng.random((1, 2, 5, 5)).astype(np.float32)  # all below the zero padding
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert np.all(y < 0)
    want, want_idx = max_pool64(x, 3, 2, 1)
    np.testing.assert_array_equal(y, want.astype(np.float32))
    np.testing.assert_array_equal(idx, want_idx)


def test_return_indices_false_returns_only_y(rng):
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    y = F.max_pool2d(x, 2)
    assert isinstance(y, np.ndarray) and y.shape == (1, 1, 2, 2)


def test_docstring_examples():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(idx[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(F.avg_pool2d(x, 2)[0, 0], [[2.5, 4.5], [10.5, 12.5]])


# ---- bad inputs -------------------------------------------------------------------

X = np.zeros((2, 3, 8, 8), np.float32)
BAD_FORWARD = [
    (dict(x=np.zeros((3, 8, 8), np.float32)), ValueError, r"x must be 4-dimensional.*x.shape=\(3, 8, 8\)"),
    (dict(x=np.zeros((0, 3, 8, 8), np.float32)), ValueError, r"x must not be empty.*\(0, 3, 8, 8\)"),
    (dict(x=np.array([[[["a"]]]])), TypeError, r"x must be an array of real numbers.*dtype=<U1"),
    (dict(kernel_size=0), ValueError, r"kernel_size must be positive. Received: kernel_size=0"),
    (dict(kernel_size=(2, -1)), ValueError, r"kernel_size must be positive. Received: kernel_size=\(2, -1\)"),
    (dict(kernel_size=2.5), TypeError, r"kernel_size must be an integer. Received: kernel_size=2.5"),
    (dict(kernel_size=(2, 2, 2)), ValueError, r"kernel_size must be an int or a pair.*\(2, 2, 2\)"),
    (dict(stride=0), ValueError, r"stride must be positive. Received: stride=0"),
    (dict(padding=-1), ValueError, r"padding must be non-negative. Received: padding=-1"),
    (dict(kernel_size=3, padding=2), ValueError,
     r"padding must be at most half of kernel_size. Received: padding=2 with kernel_size=3"),
    (dict(kernel_size=(2, 4), padding=(1, 3)), ValueError, r"at most half.*padding=\(1, 3\)"),
    (dict(kernel_size=11, padding=1), ValueError,
     r"kernel_size must fit in the padded input.*\(10, 10\). Received: kernel_size=11"),
    (dict(x=np.broadcast_to(np.float32(0), (1, 1, 46341, 46341))), ValueError,
     r"H \* W must be below 2\*\*31.*x.shape=\(1, 1, 46341, 46341\)"),
]


@pytest.mark.parametrize("fn", ["max", "avg"])
@pytest.mark.parametrize("bad,error,match", BAD_FORWARD, ids=lambda v: str(v)[:40])
def test_bad_forward_arguments_raise(fn, bad, error, match):
    args = dict(x=X, kernel_size=2, stride=None, padding=0)
    args.update(bad)
    with pytest.raises(error, match=match):
        if fn == "max":
            F.max_pool2d(**args)
        else:
            F.avg_pool2d(**args)
    if fn == "avg" and "x" not in bad:  # the backward checks its sizes the same way
        shape = args.pop("x").shape
        with pytest.raises(error, match=match):
            F.avg_pool2d_backward(np.zeros((2, 3, 4, 4), np.float32), shape, **args)


def test_count_include_pad_must_be_bool():
    with pytest.raises(TypeError, match=r"count_include_pad must be a bool. Received: count_include_pad='no'"):
        F.avg_pool2d(X, 2, count_include_pad="no")
    with pytest.raises(TypeError, match=r"count_include_pad must be a bool"):
        F.avg_pool2d_backward(np.zeros((2, 3, 4, 4), np.float32), X.shape, 2, count_include_pad=None)


@pytest.mark.parametrize("input_shape,error,match", [
    ((2, 3, 8), ValueError, r"input_shape must be 4 positive integers.*\(2, 3, 8\)"),
    ((2, 0, 8, 8), ValueError, r"input_shape must be 4 positive integers.*\(2, 0, 8, 8\)"),
    ((2, 3, 8.5, 8), TypeError, r"input_shape must be 4 positive integers.*8.5"),
    (5, TypeError, r"input_shape must be 4 positive integers.*input_shape=5"),
    ((1, 1, 65536, 65536), ValueError, r"H \* W must be below 2\*\*31.*\(1, 1, 65536, 65536\)"),
])
def test_bad_input_shape_raises(input_shape, error, match):
    dy = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(error, match=match):
        F.max_pool2d_backward(dy, np.zeros(dy.shape, np.int32), input_shape)
    with pytest.raises(error, match=match):
        F.avg_pool2d_backward(dy, input_shape, 2)


def test_bad_grad_y_raises():
    with pytest.raises(ValueError, match=r"grad_y must have shape \(2, 3, 4, 4\). Received: grad_y.shape=\(2, 3, 4, 5\)"):
        F.avg_pool2d_backward(np.zeros((2, 3, 4, 5), np.float32), X.shape, 2)
    with pytest.raises(ValueError, match=r"grad_y must have shape \(2, 3, P, Q\).*grad_y.shape=\(2, 4, 4, 4\)"):
        F.max_pool2d_backward(np.zeros((2, 4, 4, 4), np.float32), np.zeros((2, 4, 4, 4), np.int32), X.shape)
    with pytest.raises(ValueError, match=r"grad_y must have shape \(2, 3, P, Q\).*grad_y.shape=\(6, 4, 4\)"):
        F.max_pool2d_backward(np.zeros((6, 4, 4), np.float32), np.zeros((6, 4, 4), np.int32), X.shape)
    with pytest.raises(TypeError, match=r"grad_y must be an array of real numbers"):
        F.max_pool2d_backward(np.full((2, 3, 4, 4), None), np.zeros((2, 3, 4, 4), np.int32), X.shape)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_bad_indices_raise(reference):
    dy = np.ones((2, 3, 4, 4), np.float32)
    idx = np.zeros(dy.shape, np.int32)
    with pytest.raises(ValueError, match=r"indices must have shape \(2, 3, 4, 4\). Received: indices.shape=\(2, 3, 4\)"):
        F.max_pool2d_backward(dy, idx[..., 0], X.shape, reference=reference)
    with pytest.raises(TypeError, match=r"indices must be integers.*dtype=float32"):
        F.max_pool2d_backward(dy, idx.astype(np.float32), X.shape, reference=reference)
    for bad in (64, -1, 2**31 - 1, -2**31):
        wrong = idx.copy()
        wrong[1, 2, 3, 3] = bad
        with pytest.raises(ValueError, match=rf"indices must be in \[0, H \* W\) = \[0, 64\). Received: an index {bad}"):
            F.max_pool2d_backward(dy, wrong, X.shape, reference=reference)
    for bad in (2**40, -2**40, 64):  # int64 values are checked before the int32 conversion
        wrong = idx.astype(np.int64)
        wrong[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match=rf"Received: an index {bad}"):
            F.max_pool2d_backward(dy, wrong, X.shape, reference=reference)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("shape,out", [((2, 3, 8, 6), (4, 3)), ((2, 3, 9, 6), (4, 3)), ((1, 2, 6, 9), (2, 3))],
                         ids=["tiles_2x2", "no_tiles", "tiles_3x3"])
def test_max_backward_scatters_any_index_in_the_plane(shape, out, reference, num_threads, rng):
    """Indices need not lie in their window (torch scatters them anywhere in
    the plane): the tiled fast path must notice and fall back."""
    N, C, H, W = shape
    dy = rng.standard_normal((N, C) + out).astype(np.float32)
    for idx in (np.zeros(dy.shape, np.int64), rng.integers(0, H * W, dy.shape)):
        if shape == (2, 3, 8, 6):  # one stray index among window-true ones
            _, idx = F.max_pool2d(distinct(shape, rng), 2, return_indices=True)
            idx[1, 2, 3, 1] = 0
        dx = F.max_pool2d_backward(dy, idx.astype(np.int32), shape, reference=reference)
        np.testing.assert_allclose(dx, max_pool_backward64(dy, idx, shape), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_negative_zero_gradient_gives_positive_zero_like_torch(reference, rng):
    x = distinct((1, 2, 4, 6), rng)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    dx = F.max_pool2d_backward(np.full(y.shape, -0.0, np.float32), idx, x.shape, reference=reference)
    assert np.all(dx == 0) and not np.any(np.signbit(dx))


@pytest.mark.parametrize("at", ["first", "middle", "last"])
@pytest.mark.parametrize("shape", [(2, 3, 14, 10), (2, 3, 10, 10)], ids=["7x5", "5x5"])
def test_max_backward_overlapping_windows_on_tile_sized_planes(shape, at, num_threads, rng):
    """3x3 stride 2 padding 1 on H = 2P, W = 2Q (odd P, Q): the planes look
    tiled, but indices leave their tiles; the fast path stops routing at the
    first row of tiles with a miss (here forced into the first, middle or
    last row of plane (1, 2); 5x5 tiles are routed as one flat plane) and
    scatters, with or without the fused ReLU mask."""
    x = distinct(shape, rng)
    _, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    P, Q, W = shape[2] // 2, shape[3] // 2, shape[3]
    assert idx.shape[2:] == (P, Q)
    row = {"first": 0, "middle": P // 2, "last": P - 1}[at]
    idx[:, :, :, :] = 2 * np.arange(P)[:, None] * W + 2 * np.arange(Q)  # all in their tiles
    idx[1, 2, row, Q - 1] = 2 * row * W + 2 * Q - 3  # one index left of its tile
    dy = rng.standard_normal(idx.shape).astype(np.float32)
    _, real = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    for i in (idx, real):
        dx = F.max_pool2d_backward(dy, i, shape)
        np.testing.assert_array_equal(dx, F.max_pool2d_backward(dy, i, shape, reference=True))
        np.testing.assert_allclose(dx, max_pool_backward64(dy, i, shape), rtol=1e-6, atol=1e-6)
        y = np.maximum(x, 0)
        fused = _max_pool2d_relu_backward(dy, i, y)
        np.testing.assert_array_equal(fused, _max_pool2d_relu_backward(dy, i, y, reference=True))


# ------------------------------------------------- fused ReLU + max-pool backward

@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("shape,k,s,p", [((2, 3, 8, 6), 2, 2, 0), ((1, 1, 7, 5), 2, 2, 0),
                                         ((3, 2, 9, 9), 3, 2, 1), ((1, 2, 4, 4), 2, 1, 0)])
def test_max_pool2d_relu_backward_is_relu_backward_of_max_pool2d_backward(
        shape, k, s, p, reference, num_threads, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    x[x < -1] = 0.0                 # ties at zero after relu
    y = F.relu(x)
    out, idx = F.max_pool2d(y, k, s, p, return_indices=True)
    g = rng.standard_normal(out.shape).astype(np.float32)
    expected = F.relu_backward(F.max_pool2d_backward(g, idx, y.shape), y)
    np.testing.assert_array_equal(_max_pool2d_relu_backward(g, idx, y, reference=reference),
                                  expected)


def test_max_pool2d_relu_backward_indices_outside_their_tile(rng, num_threads):
    y = np.abs(rng.standard_normal((1, 1, 4, 4))).astype(np.float32) + 0.5
    idx = np.array([[[[5, 0], [15, 10]]]], np.int32)     # (0,0)->5 is in tile; (0,1)->0 is not
    g = np.ones((1, 1, 2, 2), np.float32)
    expected = F.relu_backward(F.max_pool2d_backward(g, idx, y.shape), y)
    np.testing.assert_array_equal(_max_pool2d_relu_backward(g, idx, y), expected)
    with pytest.raises(ValueError, match=r"indices must be in \[0, H \* W\) = \[0, 16\)"):
        _max_pool2d_relu_backward(g, np.full((1, 1, 2, 2), 16, np.int32), y)


# ---- ceil_mode and dilation -----------------------------------------------------------

def out_len(n, k, stride, pad, dil, ceil):
    """torch's output length, spelled out: the last window must start in the
    image or its left padding."""
    span = n + 2 * pad - dil * (k - 1) - 1
    out = -(-span // stride) + 1 if ceil else span // stride + 1
    return out - 1 if ceil and (out - 1) * stride >= n + pad else out


def taps(o, n, k, stride, pad, dil):
    return [t for t in range(o * stride - pad, o * stride - pad + dil * (k - 1) + 1, dil)
            if 0 <= t < n]


def pool64(x, k, stride, pad, dil=1, ceil=False, avg=False, count_include_pad=True):
    """float64 max (with the first maximum's index) or average pooling over explicit taps."""
    N, C, H, W = x.shape
    (R, S), (sh, sw), (ph, pw), (dh, dw) = pair(k), pair(stride), pair(pad), pair(dil)
    P, Q = out_len(H, R, sh, ph, dh, ceil), out_len(W, S, sw, pw, dw, ceil)
    y, idx = np.empty((N, C, P, Q)), np.empty((N, C, P, Q), np.int64)
    for p in range(P):
        for q in range(Q):
            hs, ws = taps(p, H, R, sh, ph, dh), taps(q, W, S, sw, pw, dw)
            flat = [h * W + w for h in hs for w in ws]
            win = x.reshape(N, C, H * W)[:, :, flat].astype(np.float64)
            if avg:
                a, b = p * sh - ph, q * sw - pw
                div = (min(a + R, H + ph) - a) * (min(b + S, W + pw) - b) if count_include_pad \
                    else len(flat)
                y[:, :, p, q] = win.sum(axis=2) / div
            else:
                y[:, :, p, q] = win.max(axis=2)
                idx[:, :, p, q] = np.asarray(flat)[win.argmax(axis=2)]
    return y, idx


# (N, C, H, W, kernel_size, stride, padding, dilation, ceil_mode): 1x1 images,
# ceil-mode windows that start in the padding or hang over the right edge,
# dilation > 1 with stride > 1, odd and tiny planes, channels not a multiple
# of a vector, a wide row (interior columns), 2x2/s2 on odd planes in ceil
# mode (the tile path must step aside).
CEIL_CASES = [
    (1, 1, 1, 1, 2, 2, 0, 1, True), (2, 3, 1, 1, 3, 1, 1, 1, True),
    (1, 2, 5, 5, 2, 2, 0, 1, True), (2, 3, 7, 9, 3, 2, 1, 1, True),
    (1, 3, 6, 6, 3, 3, 1, 1, True), (2, 5, 7, 7, 2, 2, 1, 1, True),
    (1, 2, 9, 10, (4, 3), (3, 2), (2, 1), 1, True), (3, 7, 15, 17, 2, 2, 0, 1, True),
    (2, 3, 9, 9, 3, 2, 1, 2, False), (2, 3, 9, 9, 3, 2, 1, 2, True),
    (1, 5, 11, 13, (3, 2), (2, 3), (1, 1), (2, 3), True), (2, 2, 8, 8, 2, 1, 0, 3, False),
    (1, 3, 10, 300, 3, 2, 1, 2, True), (1, 2, 12, 11, (2, 3), 3, (1, 1), (4, 2), False),
    (4, 9, 33, 31, 3, 2, 1, 1, True), (1, 1, 3, 3, 3, 2, 1, 2, True),
]
ceil_ids = [f"{c[:4]}-k{c[4]}-s{c[5]}-p{c[6]}-d{c[7]}-{'ceil' if c[8] else 'floor'}"
            for c in CEIL_CASES]


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("case", CEIL_CASES, ids=ceil_ids)
def test_ceil_mode_and_dilation_match_numpy(case, reference, num_threads, rng):
    N, C, H, W, k, s, p, d, ceil = case
    x = distinct((N, C, H, W), rng)
    want, want_idx = pool64(x, k, s, p, d, ceil)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True, reference=reference)
    np.testing.assert_array_equal(y, want.astype(np.float32))
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(F.max_pool2d(x, k, s, p, d, ceil, reference=reference), y)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_allclose(F.max_pool2d_backward(dy, idx, x.shape, reference=reference),
                               max_pool_backward64(dy, want_idx, x.shape), rtol=1e-6, atol=1e-6)
    if d != 1:
        return
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    for incl in (True, False):
        want, _ = pool64(x, k, s, p, 1, ceil, avg=True, count_include_pad=incl)
        y = F.avg_pool2d(x, k, s, p, ceil, incl, reference=reference)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        dx = F.avg_pool2d_backward(dy, x.shape, k, s, p, ceil, incl, reference=reference)
        f = lambda z: pool64(z, k, s, p, 1, ceil, avg=True, count_include_pad=incl)[0]
        # the average is linear: <f(v), dy> = <v, dx> for every v
        for v in rng.standard_normal((2,) + x.shape):
            assert np.sum(f(v) * dy) == pytest.approx(np.sum(dx * v), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("case", CEIL_CASES, ids=ceil_ids)
def test_ceil_mode_and_dilation_match_torch(case, torch, num_threads, rng):
    N, C, H, W, k, s, p, d, ceil = case
    x = np.round(rng.standard_normal((N, C, H, W)), 1).astype(np.float32)  # ties
    xt = torch.tensor(x, requires_grad=True)
    yt, it = torch.nn.functional.max_pool2d(xt, k, s, p, d, ceil, return_indices=True)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    dy = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(F.max_pool2d_backward(dy, idx, x.shape), xt.grad.numpy(),
                               rtol=1e-6, atol=1e-7)
    if d != 1:
        return
    for incl in (True, False):
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.nn.functional.avg_pool2d(xt, k, s, p, ceil, incl)
        y = F.avg_pool2d(x, k, s, p, ceil, incl)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-6)
        yt.backward(torch.tensor(dy))
        np.testing.assert_allclose(F.avg_pool2d_backward(dy, x.shape, k, s, p, ceil, incl),
                                   xt.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", [c for c in CEIL_CASES if c[2] * c[3] > 1][:8], ids=str)
def test_ceil_mode_and_dilation_backward_match_finite_differences(case, rng):
    N, C, H, W, k, s, p, d, ceil = case
    x = distinct((N, C, H, W), rng)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    u = rng.standard_normal(y.shape).astype(np.float32)
    check_directional(lambda z: F.max_pool2d(z, k, s, p, d, ceil), x, u,
                      F.max_pool2d_backward(u, idx, x.shape), rng, eps=1e-3)
    if d == 1:
        f = lambda z: F.avg_pool2d(z, k, s, p, ceil, False)
        check_directional(f, x, u, F.avg_pool2d_backward(u, x.shape, k, s, p, ceil, False), rng)


def test_ceil_mode_output_sizes_follow_torch():
    # 5 with 2x2/s2: floor 2, ceil 3; the extra window starts inside the image
    assert F.max_pool2d(np.zeros((1, 1, 5, 5)), 2).shape == (1, 1, 2, 2)
    assert F.max_pool2d(np.zeros((1, 1, 5, 5)), 2, ceil_mode=True).shape == (1, 1, 3, 3)
    # 5 with 2/s2 pad 1: rounding up gives 4, but that window would start in the right padding
    assert F.avg_pool2d(np.zeros((1, 1, 5, 5)), 2, 2, 1, ceil_mode=True).shape == (1, 1, 3, 3)
    # a 1x1 image pooled 2x2 in ceil mode: one clipped window (floor mode: no window)
    y, idx = F.max_pool2d(np.full((1, 1, 1, 1), 7.0), 2, ceil_mode=True, return_indices=True)
    assert y.tolist() == [[[[7.0]]]] and idx.tolist() == [[[[0]]]]
    # the ceil-mode divisor with count_include_pad counts the padded image, not the overhang
    x = np.ones((1, 1, 5, 5), np.float32)
    y = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
    np.testing.assert_allclose(y[0, 0, 0], [4 / 9, 6 / 9, 4 / 9], rtol=1e-6)


BAD_GEOMETRY = [
    (dict(dilation=0), ValueError, r"dilation must be positive. Received: dilation=0"),
    (dict(dilation=(1, -2)), ValueError, r"dilation must be positive. Received: dilation=\(1, -2\)"),
    (dict(dilation=1.5), TypeError, r"dilation must be an integer. Received: dilation=1.5"),
    (dict(ceil_mode=1), TypeError, r"ceil_mode must be a bool. Received: ceil_mode=1"),
    (dict(ceil_mode="yes"), TypeError, r"ceil_mode must be a bool. Received: ceil_mode='yes'"),
    (dict(kernel_size=3, dilation=4), ValueError,
     r"kernel_size must fit in the padded input.*\(8, 8\). Received: kernel_size=3, "
     r"dilation=4, ceil_mode=False"),
    # dilation 3 over a 2-wide plane with padding 1: window 0's taps are -1 and 2
    (dict(x=np.zeros((1, 1, 4, 2), np.float32), kernel_size=2, stride=1, padding=1,
          dilation=3), ValueError,
     r"every window must cover part of the input, but output column 0 covers only padding. "
     r"Received: kernel_size=2, stride=1, padding=1, dilation=3 for input shape \(1, 1, 4, 2\)"),
]


@pytest.mark.parametrize("bad,error,match", BAD_GEOMETRY, ids=lambda v: str(v)[:40])
def test_bad_dilation_and_ceil_mode_raise(bad, error, match):
    args = dict(x=X, kernel_size=2, stride=None, padding=0)
    args.update(bad)
    with pytest.raises(error, match=match):
        F.max_pool2d(**args)
    if "dilation" not in bad:
        with pytest.raises(error, match=match):
            F.avg_pool2d(**args)
    if "ceil_mode" in bad:
        with pytest.raises(error, match=match):
            fastcnn.MaxPool2d(2, ceil_mode=bad["ceil_mode"])
        with pytest.raises(error, match=match):
            fastcnn.AvgPool2d(2, ceil_mode=bad["ceil_mode"])
        with pytest.raises(error, match=match):
            F.avg_pool2d_backward(np.zeros((2, 3, 4, 4), np.float32), X.shape, 2,
                                  ceil_mode=bad["ceil_mode"])


# ---- the layers, in models ------------------------------------------------------------

LAYER_CASES = [
    (dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True), (2, 3, 9, 10)),
    (dict(kernel_size=2, ceil_mode=True), (2, 5, 7, 7)),
    (dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), dilation=(2, 1)), (1, 2, 11, 13)),
    (dict(kernel_size=2, ceil_mode=True), (1, 3, 1, 1)),
]


@pytest.mark.parametrize("kwargs,shape,avg",
                         [(k, s, False) for k, s in LAYER_CASES] +
                         [(k, s, True) for k, s in LAYER_CASES if "dilation" not in k], ids=str)
def test_layers_match_torch(kwargs, shape, avg, torch, num_threads, rng):
    if avg:
        kwargs = dict(kwargs, count_include_pad=False)
    layer = (fastcnn.AvgPool2d if avg else fastcnn.MaxPool2d)(**kwargs)
    ref = (torch.nn.AvgPool2d if avg else torch.nn.MaxPool2d)(**kwargs)
    x = rng.standard_normal(shape).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    np.testing.assert_allclose(layer(x), yt.detach().numpy(), rtol=1e-6, atol=1e-6)
    dy = rng.standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-5, atol=1e-6)
    clone = type(layer)(**layer.get_config())
    assert clone.get_config() == layer.get_config() and repr(clone) == repr(layer)


def _fused_model():
    return fastcnn.Sequential(fastcnn.Conv2d(2, 4, 3, padding=1), fastcnn.ReLU(),
                              fastcnn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True),
                              fastcnn.Conv2d(4, 4, 3, padding=1), fastcnn.ReLU(),
                              fastcnn.MaxPool2d(2, ceil_mode=True),
                              fastcnn.AvgPool2d(2, 1, 1, ceil_mode=True, count_include_pad=False),
                              fastcnn.Flatten(), fastcnn.Linear(4 * 3 * 3, 3), seed=0)


def test_fused_relu_max_pool_with_ceil_mode_and_dilation(rng):
    from fastcnn.compiler import compile_graph, fuse_relu_max_pool, reference_run
    from fastcnn.runner import trace
    model = _fused_model()
    x = rng.standard_normal((3, 2, 9, 9)).astype(np.float32)
    dy = rng.standard_normal((3, 3)).astype(np.float32)
    graph = trace(model, x.shape)
    fused = fuse_relu_max_pool(graph)
    assert [n.op for n in fused.nodes].count("relu") == 0
    for training in (True, False):
        model.zero_grad()
        want, want_dx = reference_run(graph, x, dy if training else None, training)
        want_grads = [p.grad.copy() for p in model.parameters()]
        model.zero_grad()
        prog = compile_graph(graph, training)   # the passes on, fuse_relu_max_pool included
        out, frame = prog.forward(x)
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
        if training:
            np.testing.assert_allclose(prog.backward(frame, dy, True), want_dx,
                                       rtol=1e-6, atol=1e-6)
            for p, g in zip(model.parameters(), want_grads):
                np.testing.assert_allclose(p.grad, g, rtol=1e-5, atol=1e-6)


def test_models_with_ceil_mode_and_dilation_train_and_round_trip(tmp_path, rng):
    model = _fused_model()
    x = rng.standard_normal((48, 2, 9, 9)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, seed=0,
                        optimizer=fastcnn.Adam(model.parameters(), lr=0.01))
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(tmp_path / "pool.fcnn")
    loaded = fastcnn.load(tmp_path / "pool.fcnn")
    assert loaded.layers[2].get_config() == {"kernel_size": 3, "stride": 2, "padding": 1,
                                             "dilation": 2, "ceil_mode": True}
    assert loaded.layers[6].ceil_mode is True and loaded.layers[6].count_include_pad is False
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("shape, k, s, p", [
    ((3, 4, 8, 10), 2, 2, 0),          # 2x2 tiles: the values-only loop
    ((2, 3, 9, 7), 2, 2, 0),           # odd rows and columns: floor mode drops them
    ((2, 3, 6, 40), 2, 2, 0),          # rows of 20 outputs: a full vector and a tail
    ((1, 2, 4, 67), 2, 2, 0),          # 33 outputs and a dropped column
    ((2, 3, 9, 7), 3, 2, 1),           # overlapping windows: the general planes
])
def test_inference_max_pooling_equals_the_functional_values(shape, k, s, p, num_threads, rng):
    """In inference the executor's max pooling computes no indices; its values
    are the functional forward's (NaN wins, ties keep the first, signed zeros)."""
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 0, 0, :4] = [0.0, -0.0, np.nan, 1.0]
    x[-1, -1, 1, :4] = [-0.0, 0.0, -1.0, -1.0]
    x[0, 1, 2:4, 2:4] = np.nan
    layer = fastcnn.Sequential(fastcnn.MaxPool2d(k, s, p)).eval()
    want, _ = F.max_pool2d(x, k, s, p, return_indices=True)    # the loops with indices
    for got in (layer(x), F.max_pool2d(x, k, s, p)):           # and those without
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


# Run in a child per instruction set (FASTCNN_ISA is read once per process):
# the 2x2 stride-2 tile loops (values and indices in training, values alone
# in inference) at every width up to a few vectors, with NaN and signed zeros,
# against a sequential scan in numpy (the first maximum, or the last NaN); and
# the backward's routing to those indices, alone and fused with a ReLU's.
TILES_EXACT = """
import numpy as np
import fastcnn, fastcnn.functional as F
from fastcnn._native import _max_pool2d_relu_backward
rng = np.random.default_rng(0)
special = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1.0, 1.0], np.float32)
for W in list(range(2, 72)) + [255]:
    x = rng.integers(-2, 3, (2, 3, 6, W)).astype(np.float32)   # many ties
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, flat.size // 5)] = rng.choice(special, flat.size // 5)
    Q = W // 2
    win = x[:, :, :, :2 * Q].reshape(2, 3, 3, 2, Q, 2).transpose(0, 1, 2, 4, 3, 5)
    win = win.reshape(2, 3, 3, Q, 4)
    rows, cols = np.divmod(np.arange(4), 2)
    m, k = win[..., 0].copy(), np.zeros(win.shape[:-1], np.int64)
    for j in range(1, 4):
        v = win[..., j]
        take = (v > m) | np.isnan(v)
        m, k = np.where(take, v, m), np.where(take, j, k)
    p, q = np.meshgrid(np.arange(3), np.arange(Q), indexing="ij")
    want_idx = (2 * p + rows[k]) * W + 2 * q + cols[k]
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert y.tobytes() == m.tobytes(), (W, y, m)
    assert (idx == want_idx).all(), (W, idx, want_idx)
    got = fastcnn.Sequential(fastcnn.MaxPool2d(2)).eval()(x)
    assert got.tobytes() == m.tobytes(), (W, got, m)
    if W % 2:
        continue        # the backward's tile loop needs W = 2 Q
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy.reshape(-1)[::7] = -0.0
    want = np.zeros_like(x)
    n, c = np.meshgrid(np.arange(2), np.arange(3), indexing="ij")
    for i in range(3 * Q):
        flat_dx = want.reshape(2, 3, -1)
        flat_dx[n, c, idx.reshape(2, 3, -1)[:, :, i]] = dy.reshape(2, 3, -1)[:, :, i] + 0.0
    dx = F.max_pool2d_backward(dy, idx, x.shape)
    assert dx.tobytes() == want.tobytes(), (W, dx, want)
    relu = np.where(rng.random(x.shape) < 0.3, -x, x)
    relu[0, 0, 0, :2] = [np.nan, -0.0]
    fused = _max_pool2d_relu_backward(dy, idx, relu)
    masked = np.where(relu > 0, want, np.float32(0))
    assert fused.tobytes() == masked.tobytes(), (W, fused, masked)
print("ok")
"""




# In a child per instruction set: the inference max pooling of any window
# (values only: 3x3 stride 2 through its own AVX-512 loop, 3x3 stride 1 and 2
# through AVX2's, the rest through
# the vectorized rows of pool2d_kernel.h and the border windows one by one)
# (and the functional forward without indices, the same loops) against the
# functional forward with indices, byte for byte (the first maximum, the last
# NaN, signed zeros), on random windows, strides, paddings, dilations and
# ceil mode, and widths around the vector length and the row blocks.
ANY_WINDOW_EXACT = """
import numpy as np
import fastcnn, fastcnn.functional as F
rng = np.random.default_rng(1)
special = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1.0, 1.0], np.float32)
cases = [((2, 3, 9, 7), 3, 2, 1, 1, False), ((1, 2, 7, 600), 3, 2, 1, 1, False),
         ((1, 2, 5, 33), 3, 2, 0, 1, True), ((1, 1, 4, 70), 1, 2, 0, 1, False),
         ((1, 2, 6, 40), (2, 20), (1, 2), 0, 1, False), ((1, 2, 8, 45), 3, 1, 1, 1, False)]
for _ in range(60):
    k = int(rng.integers(1, 6))
    cases.append(((1, 2, int(rng.integers(k + 2, 12)), int(rng.integers(k + 2, 70))), k,
                  int(rng.integers(1, 4)), int(rng.integers(0, k // 2 + 1)),
                  int(rng.integers(1, 3)), bool(rng.integers(0, 2))))
for shape, k, s, p, d, ceil in cases:
    if min(shape[2:]) + 2 * p < d * (np.max(k) - 1) + 1:
        continue    # the window does not fit
    x = rng.integers(-2, 3, shape).astype(np.float32)    # many ties
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, flat.size // 5)] = rng.choice(special, flat.size // 5)
    want, _ = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)   # the loops with indices
    for got in (fastcnn.Sequential(fastcnn.MaxPool2d(k, s, p, d, ceil)).eval()(x),
                F.max_pool2d(x, k, s, p, d, ceil)):                     # and without
        assert got.tobytes() == want.tobytes(), (shape, k, s, p, d, ceil, got, want)
# ties that only the scan order settles: windows of -1, -0 and +0 (the first
# zero wins) and NaNs of three payloads (the last NaN wins)
nans = np.array([0x7FC00001, 0x7FC00002, 0x7FC00003], np.uint32).view(np.float32)
for shape, k, s, p in [((2, 3, 9, 45), 3, 1, 1), ((2, 3, 9, 45), 3, 2, 1), ((1, 2, 7, 37), 3, 2, 0),
                       ((1, 2, 6, 20), 2, 2, 0), ((1, 2, 8, 30), 5, 2, 2)]:
    x = rng.choice(np.array([-1.0, -0.0, 0.0], np.float32), shape)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, flat.size // 20)] = rng.choice(nans, flat.size // 20)
    want, _ = F.max_pool2d(x, k, s, p, return_indices=True)
    for got in (fastcnn.Sequential(fastcnn.MaxPool2d(k, s, p)).eval()(x), F.max_pool2d(x, k, s, p)):
        assert got.tobytes() == want.tobytes(), (shape, k, s, p, got, want)
print("ok")
"""


@pytest.mark.skipif(os.environ.get("FASTCNN_ISA") is not None,
                    reason="already inside a forced-ISA run")
@pytest.mark.parametrize("script", [TILES_EXACT, ANY_WINDOW_EXACT], ids=["tiles", "any_window"])
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_max_pooling_loops_are_exact_on_every_isa(isa, script, tmp_path):
    if isa not in supported_isas():
        pytest.skip(f"this CPU does not support {isa}")
    done = run_python(script, tmp_path, FASTCNN_ISA=isa)
    assert done.returncode == 0 and "ok" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]


# In a child per instruction set: average pooling's outputs, forward and
# backward, on random windows, strides, paddings and ceil mode and widths
# around the vector lengths, as bytes: each ISA's loops add in the same order,
# so every ISA gives the generic build's bits.
AVG_BYTES = """
import hashlib
import numpy as np
import fastcnn.functional as F
rng = np.random.default_rng(2)
digest = hashlib.sha256()
cases = [((2, 3, 56, 56), 3, 2, 1, False), ((2, 3, 57, 41), 2, 2, 0, False),
         ((1, 2, 9, 70), 3, 2, 0, True), ((1, 2, 9, 600), 3, 2, 1, False)]
for _ in range(40):
    k = int(rng.integers(1, 6))
    cases.append(((1, 2, int(rng.integers(k + 2, 12)), int(rng.integers(k + 2, 70))), k,
                  int(rng.integers(1, 4)), int(rng.integers(0, k // 2 + 1)),
                  bool(rng.integers(0, 2))))
for shape, k, s, p, ceil in cases:
    x = rng.standard_normal(shape).astype(np.float32)
    for incl in (True, False):
        y = F.avg_pool2d(x, k, s, p, ceil, incl)
        dx = F.avg_pool2d_backward(np.ones_like(y), shape, k, s, p, ceil, incl)
        digest.update(y.tobytes() + dx.tobytes())
print(digest.hexdigest())
"""


@pytest.mark.skipif(os.environ.get("FASTCNN_ISA") is not None,
                    reason="already inside a forced-ISA run")
def test_average_pooling_gives_the_same_bits_on_every_isa(tmp_path):
    digests = {}
    for isa in supported_isas():
        done = run_python(AVG_BYTES, tmp_path, FASTCNN_ISA=isa)
        assert done.returncode == 0, done.stderr[-3000:]
        digests[isa] = done.stdout.strip()
    assert len(set(digests.values())) == 1, digests
