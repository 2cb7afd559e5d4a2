"""2-d convolution (csrc/conv2d.c) against float64 numpy, finite differences and torch."""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import contextlib
import os
import threading

import fastcnn
import fastcnn.functional as F
from fastcnn import _native
from gradcheck import check_directional
from subproc import run_python, run_python_args, supported_isas

# (N, C, H, W, K, R, S, stride, padding)
EDGE_CASES = [
    (1, 1, 5, 5, 1, 3, 3, 1, 0),              # N = C = K = 1
    (2, 3, 7, 5, 4, 3, 2, 1, 1),              # non-square image and kernel
    (3, 2, 9, 11, 5, 2, 3, (2, 1), (1, 0)),   # asymmetric stride and padding
    (2, 2, 6, 7, 3, 2, 2, 3, 0),              # stride larger than the kernel
    (1, 1, 3, 3, 1, 2, 2, 5, 0),              # stride larger than the input
    (2, 2, 5, 4, 3, 3, 2, 1, (2, 1)),         # maximal padding, pad = kernel - 1
    (2, 2, 3, 4, 2, 2, 2, (1, 2), 3),         # padding larger than the kernel
    (2, 3, 4, 5, 2, 6, 7, 1, 1),              # kernel == padded input: P = Q = 1
    (2, 3, 4, 5, 2, 4, 5, 1, 0),              # kernel == input
    (2, 3, 8, 7, 4, 4, 2, 1, "same"),         # 'same', even kernels
    (1, 2, 7, 6, 3, 3, 5, 1, "same"),         # 'same', odd kernels
    (2, 3, 7, 7, 2, 3, 3, 1, "valid"),
    (3, 4, 5, 6, 5, 1, 1, 1, 0),              # pointwise: direct GEMM
    (2, 3, 5, 5, 2, 1, 1, 2, 0),              # 1x1 with stride
    (2, 3, 5, 4, 2, 1, 1, 1, 1),              # 1x1 with padding
    (4, 8, 12, 12, 16, 3, 3, 1, 1),           # threads split the images
    (3, 8, 10, 9, 8, 3, 3, 2, 1),             # an uneven split of 3 images
    (1, 16, 20, 18, 16, 3, 3, 1, 1),          # batch 1: threads inside the GEMM
    (1, 32, 9, 9, 24, 1, 1, 1, 0),            # batch 1, pointwise
]


def random_cases(count, seed=20240607):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        N, C, K = rng.integers(1, 5), rng.integers(1, 6), rng.integers(1, 7)
        H, W = rng.integers(1, 13), rng.integers(1, 13)
        R, S = rng.integers(1, 6), rng.integers(1, 6)
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        padding = (int(rng.integers(0, R + 1)), int(rng.integers(0, S + 1)))
        if R <= H + 2 * padding[0] and S <= W + 2 * padding[1]:
            cases.append((int(N), int(C), int(H), int(W), int(K), int(R), int(S),
                          stride, padding))
    return cases


CASES = EDGE_CASES + random_cases(16)


def case_id(case):
    N, C, H, W, K, R, S, stride, padding = case
    return f"{N}x{C}x{H}x{W}-k{K}x{R}x{S}-s{stride}-p{padding}".replace(" ", "")


def pads(H, W, R, S, stride, padding):
    """(top, bottom, left, right), PyTorch's meaning of padding."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        return (R - 1) // 2, R // 2, (S - 1) // 2, S // 2
    ph, pw = (padding, padding) if np.isscalar(padding) else padding
    return ph, ph, pw, pw


def pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def windows(x, R, S, stride, pad):
    """(N, C, P, Q, R, S) float64 view of every receptive field of the padded x."""
    top, bottom, left, right = pad
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    sh, sw = pair(stride)
    return sliding_window_view(xp, (R, S), axis=(2, 3))[:, :, ::sh, ::sw]


def conv64(x, w, b, stride, pad):
    y = np.einsum("ncpqrs,kcrs->nkpq", windows(x, w.shape[2], w.shape[3], stride, pad),
                  w.astype(np.float64))
    return y if b is None else y + b.astype(np.float64)[None, :, None, None]


def conv64_backward(dy, x, w, stride, pad):
    """(grad_x, grad_w, grad_b) in float64."""
    K, C, R, S = w.shape
    top, bottom, left, right = pad
    sh, sw = pair(stride)
    dy = dy.astype(np.float64)
    P, Q = dy.shape[2:]
    gw = np.einsum("nkpq,ncpqrs->kcrs", dy, windows(x, R, S, stride, pad))
    gxp = np.zeros((x.shape[0], C, x.shape[2] + top + bottom, x.shape[3] + left + right))
    for r in range(R):
        for s in range(S):
            gxp[:, :, r:r + sh * (P - 1) + 1:sh, s:s + sw * (Q - 1) + 1:sw] += \
                np.einsum("nkpq,kc->ncpq", dy, w[:, :, r, s].astype(np.float64))
    gx = gxp[:, :, top:top + x.shape[2], left:left + x.shape[3]]
    return gx, gw, dy.sum(axis=(0, 2, 3))


def make(case, rng):
    N, C, H, W, K, R, S, stride, padding = case
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, R, S)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    return x, w, b, stride, padding


def close(actual, expected, length, rtol=1e-4, scale=1.0):
    """float32 sums of `length` O(1) terms: relative error 1e-4 of their typical size
    (times `scale` for a method that scales the rounding, as F(4x4, 3x3) does)."""
    np.testing.assert_allclose(actual, expected, rtol=scale * rtol,
                               atol=scale * 3e-5 * np.sqrt(length))


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_numpy(case, reference, num_threads, rng):
    x, w, b, stride, padding = make(case, rng)
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    pad = pads(H, W, R, S, stride, padding)
    expected = conv64(x, w, b, stride, pad)
    y = F.conv2d(x, w, b, stride, padding, reference=reference)
    assert y.dtype == np.float32 and y.shape == expected.shape and y.flags.c_contiguous
    close(y, expected, C * R * S)

    dy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = F.conv2d_backward(dy, x, w, stride, padding, reference=reference)
    ex, ew, eb = conv64_backward(dy, x, w, stride, pad)
    P, Q = y.shape[2:]
    close(gx, ex, K * R * S)
    close(gw, ew, N * P * Q)
    close(gb, eb, N * P * Q)
    assert gx.dtype == gw.dtype == gb.dtype == np.float32


def test_output_shape_follows_pytorch_formula():
    x = np.zeros((2, 3, 11, 8), np.float32)
    w = np.zeros((5, 3, 3, 2), np.float32)
    assert F.conv2d(x, w, stride=(2, 3), padding=(1, 2)).shape == (2, 5, 6, 4)
    assert F.conv2d(x, w, padding="same").shape == (2, 5, 11, 8)
    assert F.conv2d(x, w, padding="valid").shape == (2, 5, 9, 7)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_without_bias_and_without_grad_input(reference, num_threads, rng):
    x, w, b, stride, padding = make((3, 4, 9, 8, 5, 3, 3, 2, 1), rng)
    pad = pads(9, 8, 3, 3, stride, padding)
    y = F.conv2d(x, w, None, stride, padding, reference=reference)
    close(y, conv64(x, w, None, stride, pad), 36)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = F.conv2d_backward(dy, x, w, stride, padding, has_bias=False,
                                   need_grad_input=False, reference=reference)
    assert gx is None and gb is None
    close(gw, conv64_backward(dy, x, w, stride, pad)[1], dy[0, 0].size * 3)


@pytest.mark.parametrize("K", [1, 7, 64, 130, 300])
def test_bias_gradient_over_blocks_of_channels(K, rng):
    """db sums each channel over the images in order, in blocks of channels
    per work item: it matches float64 and is the same bits on 1 and 2
    threads, with K below, at and past a block, and not a multiple of it."""
    N, P = 5, 6
    dy = (rng.standard_normal((N, K, P, P)) + 3.0).astype(np.float32)
    x = rng.standard_normal((N, 2, P, P)).astype(np.float32)
    w = rng.standard_normal((K, 2, 1, 1)).astype(np.float32)
    old = fastcnn.get_num_threads()
    try:
        got = []
        for n in (1, 2):
            fastcnn.set_num_threads(n)
            got.append(F.conv2d_backward(dy, x, w, need_grad_input=False)[2])
    finally:
        fastcnn.set_num_threads(old)
    np.testing.assert_array_equal(got[0], got[1])
    close(got[0], dy.astype(np.float64).sum(axis=(0, 2, 3)), N * P * P)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_accumulates_into_given_buffers(reference, num_threads, rng):
    x, w, b, stride, padding = make((4, 3, 10, 10, 6, 3, 3, 1, 1), rng)
    dy = rng.standard_normal((4, 6, 10, 10)).astype(np.float32)
    gw0 = rng.standard_normal(w.shape).astype(np.float32)
    gb0 = rng.standard_normal(6).astype(np.float32)
    gw, gb = gw0.copy(), gb0.copy()
    _, fresh_w, fresh_b = F.conv2d_backward(dy, x, w, stride, padding, reference=reference)
    _, out_w, out_b = F.conv2d_backward(dy, x, w, stride, padding, grad_weight=gw,
                                        grad_bias=gb, reference=reference)
    assert out_w is gw and out_b is gb
    np.testing.assert_allclose(gw, gw0 + fresh_w, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gb, gb0 + fresh_b, rtol=1e-5, atol=1e-4)


def test_converts_other_dtypes_and_layouts(rng):
    x = rng.standard_normal((2, 3, 6, 7))
    w = rng.standard_normal((4, 3, 3, 3))
    xt = np.asfortranarray(x)
    expected = conv64(x.astype(np.float32), w.astype(np.float32), None, 1, (1, 1, 1, 1))
    close(F.conv2d(xt, w, padding=1), expected, 27)
    close(F.conv2d(x.astype(np.int32), w.astype(np.int64), padding=1),
          conv64(x.astype(np.int32), w.astype(np.int64), None, 1, (1, 1, 1, 1)), 27)


GRAD_CASES = [(2, 3, 7, 6, 4, 3, 2, (2, 1), 1), (2, 2, 6, 6, 3, 4, 4, 1, "same"),
              (1, 4, 5, 5, 3, 1, 1, 1, 0)]


@pytest.mark.parametrize("case", GRAD_CASES, ids=case_id)
def test_backward_matches_finite_differences(case, rng):
    x, w, b, stride, padding = make(case, rng)
    y = F.conv2d(x, w, b, stride, padding)
    u = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = F.conv2d_backward(u, x, w, stride, padding)
    check_directional(lambda t: F.conv2d(t, w, b, stride, padding), x, u, gx, rng)
    check_directional(lambda t: F.conv2d(x, t, b, stride, padding), w, u, gw, rng)
    check_directional(lambda t: F.conv2d(x, w, t, stride, padding), b, u, gb, rng)


TORCH_CASES = [
    (4, 3, 12, 10, 8, 3, 3, 1, 1),
    (3, 5, 11, 9, 6, 4, 2, 1, "same"),       # even kernel: asymmetric padding
    (2, 4, 13, 12, 5, 3, 5, (2, 3), (1, 2)),
    (2, 6, 7, 7, 4, 1, 1, 1, 0),
    (1, 16, 14, 14, 32, 3, 3, 2, 1),
    (8, 1, 28, 28, 6, 5, 5, 1, 2),
]


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_matches_torch(case, torch, num_threads, rng):
    x, w, b, stride, padding = make(case, rng)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)
    dy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(dy))
    y = F.conv2d(x, w, b, stride, padding)
    gx, gw, gb = F.conv2d_backward(dy, x, w, stride, padding)
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = y.shape[2:]
    close(y, ty.detach().numpy(), C * R * S)
    close(gx, tx.grad.numpy(), K * R * S)
    close(gw, tw.grad.numpy(), N * P * Q)
    close(gb, tb.grad.numpy(), N * P * Q)


def test_one_and_two_threads_agree(rng):
    import fastcnn
    x, w, b, stride, padding = make((6, 16, 16, 16, 16, 3, 3, 1, 1), rng)
    dy = rng.standard_normal((6, 16, 16, 16)).astype(np.float32)
    old = fastcnn.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            fastcnn.set_num_threads(n)
            out.append((F.conv2d(x, w, b, stride, padding),)
                       + F.conv2d_backward(dy, x, w, stride, padding))
    finally:
        fastcnn.set_num_threads(old)
    for one, two in zip(*out):
        np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-4)


X = np.zeros((2, 3, 5, 5), np.float32)
Wt = np.zeros((4, 3, 3, 3), np.float32)
DY = np.zeros((2, 4, 3, 3), np.float32)

BAD_FORWARD = [
    (dict(x=np.zeros((3, 5, 5), np.float32)), ValueError,
     r"x must be 4-dimensional \(N, C, H, W\). Received: x.shape=\(3, 5, 5\)"),
    (dict(weight=np.zeros((4, 3, 3), np.float32)), ValueError,
     r"weight must be 4-dimensional \(K, C, R, S\). Received: weight.shape=\(4, 3, 3\)"),
    (dict(bias=np.zeros((4, 1), np.float32)), ValueError,
     r"bias must have shape \(4,\).*Received: bias.shape=\(4, 1\)"),
    (dict(bias=np.zeros(5, np.float32)), ValueError,
     r"bias must have shape \(4,\).*Received: bias.shape=\(5,\)"),
    (dict(weight=np.zeros((4, 2, 3, 3), np.float32)), ValueError,
     r"weight must have 3 input channels.*weight.shape=\(4, 2, 3, 3\)"),
    (dict(weight=np.zeros((4, 3, 6, 3), np.float32)), ValueError,
     r"kernel \(6, 3\) is larger than the padded input \(5, 5\)"),
    (dict(weight=np.zeros((4, 3, 8, 3), np.float32), padding=1), ValueError,
     r"kernel \(8, 3\) is larger than the padded input \(7, 7\)"),
    (dict(stride=0), ValueError, r"stride must be positive. Received: stride=0"),
    (dict(stride=(1, -1)), ValueError, r"stride must be positive. Received: stride=\(1, -1\)"),
    (dict(stride=(1, 2, 3)), ValueError, r"stride must be an int or a pair of ints"),
    (dict(stride=1.5), TypeError, r"stride must be an integer. Received: stride=1.5"),
    (dict(stride=2**40), ValueError, r"stride must be at most 2147483647"),
    (dict(padding=-1), ValueError, r"padding must be non-negative. Received: padding=-1"),
    (dict(padding=(0, -2)), ValueError, r"padding must be non-negative"),
    (dict(padding=1.5), TypeError, r"padding must be an integer. Received: padding=1.5"),
    (dict(padding="full"), ValueError,
     r"padding must be an int, a pair of ints, 'same' or 'valid'. Received: padding='full'"),
    (dict(padding="same", stride=2), ValueError,
     r"padding='same' requires stride 1. Received: stride=\(2, 2\)"),
    (dict(x=np.zeros((0, 3, 5, 5), np.float32)), ValueError,
     r"x must not be empty. Received: x.shape=\(0, 3, 5, 5\)"),
    (dict(x=np.zeros((2, 3, 0, 5), np.float32)), ValueError, r"x must not be empty"),
    (dict(weight=np.zeros((0, 3, 3, 3), np.float32)), ValueError,
     r"weight must not be empty. Received: weight.shape=\(0, 3, 3, 3\)"),
    (dict(bias=np.zeros(0, np.float32)), ValueError, r"bias must not be empty"),
    (dict(x=np.full((2, 3, 5, 5), "a")), TypeError,
     r"x must be an array of real numbers. Received: x with dtype=<U1"),
    (dict(weight=np.zeros((4, 3, 3, 3), complex)), TypeError,
     r"weight must be an array of real numbers"),
    (dict(padding=2**31 - 1), ValueError,
     r"the convolution is too large: its output would have \d+ elements"),
    (dict(padding=2**40), ValueError, r"padding must be at most 2147483647"),
    (dict(x=np.zeros((1, 64, 1, 1), np.float32), weight=np.zeros((64, 64, 1, 1), np.float32),
          bias=None, padding=12_000_000), ValueError,
     r"the convolution is too large: \d+ multiply-adds"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD_FORWARD)
def test_forward_rejects_bad_input(kwargs, error, match):
    args = dict(x=X, weight=Wt, bias=np.zeros(4, np.float32), stride=1, padding=0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        F.conv2d(**args)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(grad_y=np.zeros((2, 4, 9), np.float32)), ValueError,
     r"grad_y must be 4-dimensional \(N, K, P, Q\). Received: grad_y.shape=\(2, 4, 9\)"),
    (dict(grad_y=np.zeros((2, 4, 5, 5), np.float32)), ValueError,
     r"grad_y must have shape \(2, 4, 3, 3\). Received: grad_y.shape=\(2, 4, 5, 5\)"),
    (dict(weight=np.zeros((4, 2, 3, 3), np.float32)), ValueError,
     r"weight must have 3 input channels"),
    (dict(padding="same", stride=(1, 2)), ValueError, r"padding='same' requires stride 1"),
    (dict(grad_weight=np.zeros((4, 3, 3, 3))), TypeError,
     r"grad_weight must be a writeable C-contiguous float32 numpy array.*dtype=float64"),
    (dict(grad_weight=np.zeros((4, 3, 3, 2), np.float32)), ValueError,
     r"grad_weight must have shape \(4, 3, 3, 3\)"),
    (dict(grad_bias=np.zeros(3, np.float32)), ValueError, r"grad_bias must have shape \(4,\)"),
    (dict(grad_bias=np.zeros(4, np.float32), has_bias=False), ValueError,
     r"grad_bias was given but has_bias=False"),
    (dict(grad_y=[["a"]]), TypeError, r"grad_y must be an array of real numbers"),
])
def test_backward_rejects_bad_input(kwargs, error, match):
    args = dict(grad_y=DY, x=X, weight=Wt, stride=1, padding=0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        F.conv2d_backward(**args)


# Image grouping: 1 = one image per GEMM, 10**9 = every image of a thread in one GEMM.
GROUP_CASES = [
    (5, 3, 7, 6, 4, 3, 3, 1, 1),
    (7, 2, 9, 5, 3, 2, 3, (2, 1), (1, 2)),
    (3, 4, 6, 6, 5, 1, 1, 1, 0),      # pointwise: gathered input
    (4, 3, 5, 7, 2, 1, 1, 2, 0),      # 1x1 with stride
    (3, 1, 11, 10, 6, 5, 5, 1, 2),    # one input channel
]


@pytest.fixture(params=[1, 150, 10**9], ids=["single", "some", "all"])
def group_columns(request):
    from fastcnn import _native
    old = _native._set_group_columns(request.param)
    yield request.param
    _native._set_group_columns(old)


@pytest.mark.parametrize("case", GROUP_CASES, ids=case_id)
def test_image_groups_match_numpy(case, group_columns, num_threads, rng):
    x, w, b, stride, padding = make(case, rng)
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    pad = pads(H, W, R, S, stride, padding)
    y = F.conv2d(x, w, b, stride, padding)
    close(y, conv64(x, w, b, stride, pad), C * R * S)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = F.conv2d_backward(dy, x, w, stride, padding)
    ex, ew, eb = conv64_backward(dy, x, w, stride, pad)
    close(gx, ex, K * R * S)
    close(gw, ew, N * y.shape[2] * y.shape[3])
    close(gb, eb, N * y.shape[2] * y.shape[3])


def test_repeated_calls_reuse_scratch_and_agree(rng):
    """The cached scratch buffer is reused across shapes without stale data."""
    big = make((2, 8, 20, 20, 8, 3, 3, 1, 1), rng)
    small = make((3, 2, 5, 6, 3, 3, 3, 1, 1), rng)
    first = F.conv2d(*small)
    F.conv2d(*big)
    np.testing.assert_array_equal(F.conv2d(*small), first)


# The forward's direct kernel (stride 1 or 2, few input channels; forced on
# here for every such case): channel blocks of 8 (AVX-512) or 4, row
# segments of up to 3 vectors, a zero-padded copy of each image (at stride
# 2 each row split into its even and odd columns).
DIRECT_CASES = [
    (3, 1, 28, 28, 6, 5, 5, 1, 2),            # lenet_c1
    (2, 1, 9, 13, 11, 3, 3, 1, 1),            # K = 11: a full and a partial block
    (2, 3, 33, 50, 9, 3, 3, 1, 1),            # Q = 50: more than one row segment
    (1, 4, 5, 3, 2, 2, 4, 1, "same"),         # even kernel, bottom/right padding
    (2, 2, 7, 6, 3, 1, 1, 1, 0),              # 1x1
    (2, 1, 4, 4, 3, 5, 5, 1, 3),              # padding wider than the image
    (1, 3, 6, 40, 17, 3, 3, 1, (0, 2)),       # K = 17, Q = 42
    (2, 6, 14, 14, 16, 5, 5, 1, 0),           # lenet_c2: C R S = 150
    (2, 40, 9, 11, 3, 5, 5, 1, 2),            # few outputs, C R S = 1000 (an RGB head)
    (2, 2, 5, 9, 3, 2, 7, 1, (1, 3)),         # S = 7: the generic tap loop
    (1, 2, 13, 14, 5, 3, 11, 1, (1, 5)),      # S = 11: weight gradient rows in two pieces
    (3, 1, 1, 1, 5, 1, 1, 1, 0),              # 1x1 image
    (2, 3, 37, 41, 32, 3, 3, 2, 1),           # stride 2: a MobileNet stem, odd sizes
    (1, 3, 30, 29, 10, 7, 7, 2, 3),           # a ResNet stem, K = 10
    (2, 1, 9, 8, 5, 5, 5, 2, 2),              # stride 2, S = 5: the generic tap loop
    (1, 2, 6, 70, 9, 3, 3, 2, (0, 1)),        # stride 2, Q = 35: three vectors
    (1, 4, 5, 6, 3, 2, 2, 2, 0),              # stride 2, even kernel
    (3, 1, 1, 1, 5, 3, 3, 2, 1),              # stride 2, 1x1 image
    (1, 2, 9, 10, 4, 3, 3, (2, 1), 1),        # mixed strides: other paths
]


@pytest.fixture(params=[0, 1, -1], ids=["by-shape", "forced", "never"])
def direct_mode(request):
    old = _native._set_direct(request.param)
    yield request.param
    _native._set_direct(old)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", DIRECT_CASES, ids=case_id)
def test_direct_forward_matches_numpy(case, bias, direct_mode, num_threads, rng):
    x, w, b, stride, padding = make(case, rng)
    b = b if bias else None
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    y = F.conv2d(x, w, b, stride, padding)
    close(y, conv64(x, w, b, stride, pads(H, W, R, S, stride, padding)), C * R * S)


@pytest.mark.parametrize("case", DIRECT_CASES, ids=case_id)
def test_direct_backward_matches_numpy(case, direct_mode, num_threads, rng):
    """Backward data as the direct forward of dy with the flipped kernel
    (forced where the padding is below the kernel size; else other paths),
    and the position-vector weight gradient (forced: every tap's sums in
    vectors along the rows, a row's last vector masked)."""
    x, w, b, stride, padding = make(case, rng)
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    pad = pads(H, W, R, S, stride, padding)
    y = F.conv2d(x, w, b, stride, padding)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gw0 = rng.standard_normal(w.shape).astype(np.float32)
    gw = gw0.copy()
    gx = F.conv2d_backward(dy, x, w, stride, padding, grad_weight=gw)[0]
    ex, ew, _ = conv64_backward(dy, x, w, stride, pad)
    close(gx, ex, K * R * S)
    close(gw - gw0, ew, N * y.shape[2] * y.shape[3])     # added to the caller's gradient


def test_position_vector_weight_gradient_agrees_with_gemm_on_nan_and_inf(rng):
    """A NaN in dy reaches every tap whose window covers it, padding
    included (0 x NaN is NaN, as torch gives and the GEMM path too), an
    infinity in x the taps that read it; past a row's end nothing leaks in
    (the next row's dy, x beyond the output columns)."""
    x, w, b, stride, padding = make((2, 3, 9, 21, 5, 3, 3, 1, 1), rng)
    dy = rng.standard_normal((2, 5, 9, 21)).astype(np.float32)
    dy[1, 2, 0, 0] = np.nan          # top-left corner: 5 of its taps read padding
    dy[0, 4, 3, 0] = np.nan          # first column: right after a row's end in memory
    x[0, 1, 4, 20] = np.inf          # last column
    grads = []
    for mode in (1, -1):             # position-vector kernel forced, then GEMM
        old = _native._set_direct(mode), _native._set_kvec(-1), _native._set_winograd(-1)
        try:
            grads.append(F.conv2d_backward(dy, x, w, stride, padding)[1])
        finally:
            _native._set_direct(old[0])
            _native._set_kvec(old[1])
            _native._set_winograd(old[2])
    gw, want = grads
    np.testing.assert_array_equal(np.isnan(gw), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(gw), np.isinf(want))
    finite = np.isfinite(want)
    assert 0 < finite.sum() < finite.size
    np.testing.assert_allclose(gw[finite], want[finite], rtol=1e-4, atol=1e-4)


def test_direct_and_gemm_forward_agree(rng):
    """The direct kernel and im2col + GEMM give the same outputs (up to rounding)."""
    x, w, b, stride, padding = make((4, 3, 17, 19, 10, 3, 3, 1, 1), rng)
    old, old_kvec = _native._set_direct(1), _native._set_kvec(-1)
    try:
        direct = F.conv2d(x, w, b, stride, padding)
        _native._set_direct(-1)
        gemm = F.conv2d(x, w, b, stride, padding)
    finally:
        _native._set_direct(old)
        _native._set_kvec(old_kvec)
    np.testing.assert_allclose(direct, gemm, rtol=1e-5, atol=1e-5)


# Planes of at most one vector (16 floats on AVX-512, 8 on AVX2) in and out:
# the stride-1 im2col permutes each image's plane in one step (padding lanes
# zeroed) instead of copying rows of a few floats, and col2im (backward data)
# permutes it back, any stride. The GEMM path forced.
SMALL_PLANE_CASES = [
    (3, 5, 2, 2, 4, 3, 3, 1, 1),              # ResNet's 2x2 stage
    (2, 3, 4, 4, 5, 3, 3, 1, 1),              # 4x4: one AVX-512 vector, two AVX2
    (2, 3, 2, 3, 4, 2, 2, 1, (1, 0)),         # unequal padding
    (2, 3, 4, 2, 3, 3, 3, (2, 1), 1),         # row stride 2
    (3, 4, 4, 4, 5, 3, 3, 2, 1),              # stride 2 (col2im: any stride)
    (2, 3, 2, 2, 4, 2, 2, 1, 0),              # P = Q = 1
    (2, 3, 3, 3, 4, 3, 3, 1, 2),              # 3x3 in, 5x5 out: past a vector
    (5, 4, 1, 3, 6, 1, 3, 1, (0, 1)),         # one row
]


@contextlib.contextmanager
def gemm_only():
    """Every op on the im2col + GEMM path: no timing, no direct, channel-vector
    or Winograd path."""
    old = (_native._set_tune(False), _native._set_direct(-1), _native._set_kvec(-1),
           _native._set_winograd(-1))
    try:
        yield
    finally:
        _native._set_tune(old[0])
        _native._set_direct(old[1])
        _native._set_kvec(old[2])
        _native._set_winograd(old[3])


# col2im at column stride 1 adds whole vectors of each output row's run of
# columns that land inside the input (a scalar tail after them): rows longer
# than a vector, with and without padding, row strides; and the other cases.
# Column stride 2 (the portable loops): rows of 35 and 21 outputs, padding
# on either side.
WIDE_COL2IM_CASES = [
    (4, 6, 14, 14, 16, 5, 5, 1, 0),           # LeNet's second convolution
    (2, 3, 9, 37, 4, 3, 5, (2, 1), (1, 2)),   # 33 and 35 columns: vectors and a tail
    (2, 2, 6, 20, 3, 2, 7, 1, 3),             # padding wider than the tail
    (2, 3, 9, 70, 4, 3, 3, 2, 1),             # stride 2: 35 outputs a row
    (2, 2, 7, 41, 3, 3, 5, (1, 2), (1, 2)),   # column stride 2 only, 21 outputs a row
    (1, 2, 5, 34, 2, 2, 4, 2, (0, 3)),        # even kernel, padding past the row end
]


# Column stride 2 with AVX-512: each channel's planes summed 16 columns at a
# time from every tap; where its rows of col are larger than a block, the
# backward data runs by blocks of channels (GEMM, then col2im): several
# blocks and a shorter last one, a 1x1 kernel, 5x5 over rows of 45 (three
# vectors), an even kernel, column stride 2 only, and 17 columns of taps
# (by taps, one at a time).
STRIDE2_COL2IM_CASES = [
    (4, 40, 30, 30, 16, 3, 3, 2, 1),
    (3, 24, 21, 37, 8, 1, 1, 2, 0),
    (2, 16, 19, 45, 8, 5, 5, 2, 2),
    (2, 8, 12, 12, 4, 4, 4, 2, (1, 2)),
    (1, 8, 9, 33, 4, 3, 3, (1, 2), (1, 0)),
    (1, 2, 5, 40, 2, 1, 17, 2, (0, 8)),
]


@pytest.mark.parametrize("case", SMALL_PLANE_CASES + WIDE_COL2IM_CASES + STRIDE2_COL2IM_CASES
                         + CASES, ids=case_id)
def test_gemm_matches_numpy(case, num_threads, rng):
    x, w, b, stride, padding = make(case, rng)
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    pad = pads(H, W, R, S, stride, padding)
    with gemm_only():
        y = F.conv2d(x, w, b, stride, padding)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        gx, gw, gb = F.conv2d_backward(dy, x, w, stride, padding)
    close(y, conv64(x, w, b, stride, pad), C * R * S)
    ex, ew, eb = conv64_backward(dy, x, w, stride, pad)
    P, Q = y.shape[2:]
    close(gx, ex, K * R * S)
    close(gw, ew, N * P * Q)


@pytest.mark.parametrize("stride", [1, 2])
def test_gemm_backward_data_dilated(stride, num_threads, rng):
    x, w, _, _, _ = make((2, 3, 11, 23, 4, 3, 3, 1, 0), rng)
    with gemm_only():
        y = F.conv2d(x, w, None, stride, (2, 3), dilation=(2, 3))
        dy = rng.standard_normal(y.shape).astype(np.float32)
        gx = F.conv2d_backward(dy, x, w, stride, (2, 3), dilation=(2, 3))[0]
    tx = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (2, 2), (3, 3)))
    want = np.zeros_like(tx)
    P, Q = y.shape[2:]
    for r in range(3):
        for t in range(3):
            want[:, :, 2 * r:2 * r + stride * (P - 1) + 1:stride,
                 3 * t:3 * t + stride * (Q - 1) + 1:stride] += np.einsum(
                "nkpq,kc->ncpq", dy.astype(np.float64), w[:, :, r, t].astype(np.float64))
    close(gx, want[:, :, 2:-2, 3:-3], 4 * 9)


# col2im of a whole channel at once (AVX-512: column stride 1 on planes
# wider than a vector, column stride 2) sums each dx float's taps in the
# order the tap-by-tap col2im adds them: the same bits. Images 4 at a time and
# the rest one by one (N = 6), dilation, rows of 1, 2 and 3 vectors.
WHOLE_COL2IM_CASES = WIDE_COL2IM_CASES + STRIDE2_COL2IM_CASES + [
    (6, 3, 14, 14, 5, 5, 5, 1, 2),
    (6, 2, 9, 33, 3, 3, 3, (2, 1), (0, 1)),
    (5, 2, 5, 5, 3, 3, 3, 1, 1),
]


@pytest.mark.parametrize("dilation", [1, (1, 2)])
@pytest.mark.parametrize("case", WHOLE_COL2IM_CASES, ids=case_id)
def test_col2im_whole_channels_agree_with_taps_bitwise(case, dilation, num_threads, rng):
    x, w, _, stride, padding = make(case, rng)
    with gemm_only():
        y = F.conv2d(x, w, None, stride, padding, dilation)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        whole = F.conv2d_backward(dy, x, w, stride, padding, dilation)[0]
        old = _native._set_col2im_taps(True)
        try:
            taps = F.conv2d_backward(dy, x, w, stride, padding, dilation)[0]
        finally:
            _native._set_col2im_taps(old)
    np.testing.assert_array_equal(whole.view(np.int32), taps.view(np.int32))


# The forward's channel-vector kernel (K a multiple of the vector length:
# 16, 8 or 4 floats): tiles of up to 14 positions of a row (or two rows when
# K is one vector) x 1 or 2 channel vectors; strides 1, 2 compiled in, others
# at run time.
KVEC_CASES = [
    (2, 6, 14, 14, 16, 5, 5, 1, 0),           # lenet_c2: one vector, two rows a tile
    (2, 3, 9, 11, 32, 3, 3, 1, 1),            # two vectors
    (1, 2, 30, 31, 48, 3, 3, 1, 1),           # three vectors; Q = 31: tiles of 11, 10, 10
    (2, 4, 11, 13, 16, 3, 3, 2, 1),           # stride 2
    (2, 3, 13, 12, 32, 3, 2, 3, (1, 2)),      # stride 3 (run-time stride)
    (1, 5, 7, 6, 16, 1, 1, 1, 0),             # pointwise (forced only): read in place
    (3, 6, 5, 7, 32, 1, 1, 1, 0),             # pointwise, images after the first in place
    (2, 6, 7, 7, 32, 1, 1, 2, 0),             # pointwise stride 2: a copy (rows skipped)
    (2, 2, 5, 4, 16, 2, 3, 1, "same"),        # even kernel, bottom/right padding
    (3, 1, 1, 1, 32, 1, 1, 1, 0),             # 1x1 image
    (1, 2, 7, 30, 16, 4, 4, (2, 1), 3),       # odd rows: a single-row tile at the end
    (2, 3, 6, 5, 64, 3, 3, 1, 2),             # padding = kernel - 1
    (2, 8, 7, 7, 32, 3, 3, 1, 1),             # a narrow map: tiles run on across rows
    (1, 4, 3, 9, 32, 3, 3, 1, 0),             # one output row of 7 on the wide grid
    (2, 3, 12, 13, 32, 7, 7, 1, 3),           # 7x7: weight gradient rows of 7 taps (AVX-512)
    (1, 2, 9, 10, 16, 5, 6, 2, 2),            # S = 6, stride 2
    (2, 4, 10, 6, 16, 7, 1, 1, (3, 0)),       # 7x1 (Inception): rows of one tap (forced)
    # K not a multiple of the vector length (forced): the last vector padded
    (2, 5, 9, 11, 24, 3, 3, 1, 1),            # two vectors, the second partial (AVX-512)
    (1, 3, 10, 7, 40, 5, 5, 1, 2),            # one vector a block, the last partial
    (2, 4, 8, 9, 3, 3, 3, 2, 1),              # fewer channels than a vector, stride 2
    # backward data too: C a multiple of the vector length, stride 1
    (2, 16, 9, 11, 32, 3, 3, 1, 1),
    (1, 32, 7, 30, 16, 5, 5, 1, 2),
    (2, 48, 6, 5, 16, 3, 2, 1, (0, 1)),
    (2, 16, 5, 6, 48, 3, 3, 1, 0),            # 'valid': flipped padding R - 1
    (1, 16, 6, 7, 16, 4, 4, 1, "same"),       # even kernel: unequal flipped padding
    (3, 16, 5, 5, 32, 3, 5, 1, (2, 4)),       # padding = kernel - 1
    (2, 20, 7, 9, 16, 3, 3, 1, 1),            # C not a multiple: dx's last vector padded
]


@pytest.fixture(params=[0, 1, -1], ids=["by-shape", "forced", "never"])
def kvec_mode(request):
    old = _native._set_kvec(request.param)
    old_direct = _native._set_direct(-1 if request.param == 1 else 0)
    yield request.param
    _native._set_kvec(old)
    _native._set_direct(old_direct)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", KVEC_CASES, ids=case_id)
def test_kvec_matches_numpy(case, bias, kvec_mode, num_threads, rng):
    """Forward, and backward (data through the flipped kernel, weights through
    the channel-vector gradient kernel where K fits and a kernel row of at
    most 7 taps (6 on AVX2) fits its tile; rows of one tap when forced)."""
    x, w, b, stride, padding = make(case, rng)
    b = b if bias else None
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    pad = pads(H, W, R, S, stride, padding)
    y = F.conv2d(x, w, b, stride, padding)
    close(y, conv64(x, w, b, stride, pad), C * R * S)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = F.conv2d_backward(dy, x, w, stride, padding)
    ex, ew, eb = conv64_backward(dy, x, w, stride, pad)
    close(gx, ex, K * R * S)
    close(gw, ew, N * y.shape[2] * y.shape[3])
    close(gb, eb, N * y.shape[2] * y.shape[3])


# Batch 1 on more threads than (image, channel block) items: each block's
# output rows are split into parts of at least 2 rows, from one padded copy
# of each image made beforehand (8 threads here, whatever the cores); on the
# channel-vector and the direct kernel.
MANY_THREADS_CASES = [
    (1, 3, 20, 22, 32, 3, 3, 1, 1),           # one block of two vectors: 8 parts of 2 or 3
    (1, 4, 23, 17, 16, 3, 3, 2, 1),           # one vector, stride 2: pairs of rows per part
    (1, 5, 9, 9, 32, 3, 3, 1, 1),             # a narrow map: parts of the wide grid
    (1, 6, 12, 10, 64, 5, 5, 1, 2),           # two blocks: 4 parts each
    (1, 3, 31, 29, 24, 7, 7, 2, 3),           # K padded to a vector, a stem-like 7x7 s2
    (2, 3, 5, 40, 16, 3, 3, 1, 1),            # two images: a padded copy of each
    (1, 3, 9, 12, 16, 3, 3, 1, 0),            # 'valid': read in place (channel-vector)
    (1, 8, 6, 6, 32, 1, 1, 1, 0),             # pointwise
]


@pytest.mark.parametrize("path", ["kvec", "direct"])
@pytest.mark.parametrize("case", MANY_THREADS_CASES, ids=case_id)
def test_forward_splits_rows_across_threads(case, path, rng):
    x, w, b, stride, padding = make(case, rng)
    H, W = x.shape[2:]
    R, S = w.shape[2:]
    direct = path == "direct"
    old = (fastcnn.get_num_threads(), _native._set_kvec(-1 if direct else 1),
           _native._set_direct(1 if direct else -1))
    try:
        fastcnn.set_num_threads(8)
        y = F.conv2d(x, w, b, stride, padding)
    finally:
        fastcnn.set_num_threads(old[0])
        _native._set_kvec(old[1])
        _native._set_direct(old[2])
    close(y, conv64(x, w, b, stride, pads(H, W, R, S, stride, padding)), x.shape[1] * R * S)


def test_kvec_and_gemm_forward_agree(rng):
    """The channel-vector kernel and im2col + GEMM give the same outputs."""
    x, w, b, stride, padding = make((3, 5, 15, 17, 32, 3, 3, 1, 1), rng)
    old = _native._set_kvec(1)
    try:
        kvec = F.conv2d(x, w, b, stride, padding)
        _native._set_kvec(-1)
        gemm = F.conv2d(x, w, b, stride, padding)
    finally:
        _native._set_kvec(old)
    np.testing.assert_allclose(kvec, gemm, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [(3, 96, 5, 7, 24, 1, 1, 1, 0), (2, 80, 4, 4, 33, 1, 1, 1, 0)],
                         ids=case_id)
def test_pointwise_gemm_with_fused_bias(case, num_threads, rng):
    """C R S > 75: a pointwise convolution runs one GEMM per image with the
    bias added to each finished tile (sgemm_bias)."""
    x, w, b, stride, padding = make(case, rng)
    close(F.conv2d(x, w, b, stride, padding), conv64(x, w, b, stride, (0, 0, 0, 0)),
          x.shape[1])


# The backward data of pointwise images one GEMM each, at least two on a
# thread, packs w^T once for the call: rows not a multiple of the tile
# (37), depth over several k blocks (700 output channels), 49 columns.
@pytest.mark.parametrize("case", [(4, 37, 4, 5, 700, 1, 1, 1, 0), (5, 130, 7, 7, 96, 1, 1, 1, 0)],
                         ids=case_id)
def test_pointwise_backward_data_with_weights_packed_once(case, num_threads, rng):
    """Same bits as one image per call (each GEMM packing its own w^T)."""
    x, w, _, stride, padding = make(case, rng)
    dy = rng.standard_normal((x.shape[0], w.shape[0]) + x.shape[2:]).astype(np.float32)
    with gemm_only():
        gx = F.conv2d_backward(dy, x, w, has_bias=False)[0]
        one_by_one = [F.conv2d_backward(dy[n:n + 1], x[n:n + 1], w, has_bias=False)[0]
                      for n in range(x.shape[0])]
    np.testing.assert_array_equal(gx, np.concatenate(one_by_one))
    close(gx, conv64_backward(dy, x, w, 1, (0, 0, 0, 0))[0], w.shape[0])


# The weight gradient of pointwise images that the GEMM path runs one GEMM
# each (16 positions or more) grouped into deeper products instead (timing
# chooses between the two): 7 images split unevenly between the threads,
# channels not a multiple of any tile, 49 positions, one image (nothing to
# group).
@pytest.fixture(params=[1, -1], ids=["grouped", "one-each"])
def grouped_wgrad(request):
    old = _native._set_grouped_wgrad(request.param)
    yield request.param
    _native._set_grouped_wgrad(old)


@pytest.mark.parametrize("case", [(7, 37, 4, 5, 70, 1, 1, 1, 0), (5, 300, 7, 7, 24, 1, 1, 1, 0),
                                  (1, 9, 6, 6, 40, 1, 1, 1, 0)], ids=case_id)
def test_pointwise_weight_gradient_grouped_or_one_each(case, grouped_wgrad, num_threads, rng):
    x, w, b, stride, padding = make(case, rng)
    dy = rng.standard_normal((x.shape[0], w.shape[0]) + x.shape[2:]).astype(np.float32)
    with gemm_only():
        gx, gw, gb = F.conv2d_backward(dy, x, w)
    ex, ew, eb = conv64_backward(dy, x, w, 1, (0, 0, 0, 0))
    positions = x.shape[0] * x.shape[2] * x.shape[3]
    close(gw, ew, positions)
    close(gb, eb, positions)
    close(gx, ex, w.shape[0])


# A single image (alone in its group: batch 1, or an image per thread) on a
# small map whose P Q fill the GEMM tile's columns worse than K does (7x7:
# 49 of 64) runs transposed, y^T = col^T w^T, then transposed back with the
# bias (and a fused clamp); with kept weights (a frozen model), w^T is packed
# once. Which shapes turn depends on the tile (AVX2 16 columns, AVX-512 32 or
# 48): these cover turned and not turned on each.
TURNED_CASES = [
    (1, 300, 7, 7, 16, 1, 1, 1, 0),           # pointwise: x is col
    (1, 64, 7, 7, 16, 1, 1, 1, 0),            # too shallow (C R S < 256): as it is
    (3, 260, 7, 7, 32, 1, 1, 1, 0),           # images one by one (or grouped)
    (1, 300, 5, 5, 48, 1, 1, 1, 0),           # 25 positions
    (2, 270, 1, 33, 16, 1, 1, 1, 0),          # one row of 33
    (1, 300, 7, 7, 320, 1, 1, 1, 0),          # MobileNetV2's last stage
    (2, 260, 7, 7, 40, 1, 1, 1, 0),           # K not a multiple of any tile
    (1, 40, 7, 7, 64, 3, 3, 1, 1),            # ResNet's last stage, 3x3: im2col first
    (1, 30, 14, 13, 32, 3, 3, 2, 1),          # stride 2 to 7x7
    (1, 45, 6, 9, 48, 2, 3, 1, (1, 0)),       # an even kernel, unequal padding
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", TURNED_CASES, ids=case_id)
def test_transposed_gemm_matches_numpy(case, bias, num_threads, rng):
    """The GEMM path forced: a call's own weights (packed per call), and a
    frozen conv + ReLU6 (w^T packed once, the clamp fused)."""
    x, w, b, stride, padding = make(case, rng)
    b = b if bias else None
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    pad = pads(H, W, R, S, stride, padding)
    with gemm_only():
        y = F.conv2d(x, w, b, stride, padding)
        conv = fastcnn.Conv2d(C, K, (R, S), stride, padding, bias=bias)
        conv.weight.data[...] = w
        if bias:
            conv.bias.data[...] = b
        frozen = fastcnn.freeze(fastcnn.Sequential([conv, fastcnn.ReLU6()]))
        z = frozen(x)
        z2 = frozen(x)
    want = conv64(x, w, b, stride, pad)
    close(y, want, C * R * S)
    close(z, np.clip(want, 0.0, 6.0), C * R * S)
    np.testing.assert_array_equal(z, z2)


# ---- Winograd F(2x2, 3x3) and F(4x4, 3x3) (csrc/conv2d_winograd.c) ----------------

# 3x3, stride 1: tiles of 2x2 (4x4) outputs in runs of at most 64 (a row of
# tiles, or several rows of a small map), blocks of up to 512 tiles across
# images; blocks of at most 64 tiles take the transposed products, and a call
# of one such block transforms its filters inside the product. F(4x4, 3x3)
# runs forwards only (forced 4x4: backward data F(2x2, 3x3)); by timing, only
# a frozen model's (tests/test_frozen.py). Its vectors of tiles run on across
# rows of tiles where each chunk of VL / 4 tiles stays within one row (tiles
# per row a multiple of 1, 2 or 4: generic, AVX2, AVX-512), else end at the
# row's end. F(2x2, 3x3) takes two whole rows of tiles per vector where a row
# has at most half a vector of tiles (8 on AVX-512, 4 on AVX2; a lone row
# where a run starts mid-row or an odd row of tiles is left).
WINO_CASES = [
    (2, 3, 9, 11, 5, 3, 3, 1, 1),             # odd P and Q: partial last tiles
    (1, 1, 1, 1, 3, 3, 3, 1, 1),              # a 1x1 image: one tile, mostly padding
    (1, 4, 4, 4, 2, 3, 3, 1, 0),              # 'valid': backward data pads by 2
    (2, 5, 6, 7, 3, 3, 3, 1, 2),              # padding 2: the flipped padding is 0
    (1, 3, 6, 140, 4, 3, 3, 1, 1),            # a row of 70 tiles: two runs per row
    (3, 2, 8, 8, 17, 3, 3, 1, 1),             # K = 17, runs over several tile rows
    (40, 6, 10, 10, 7, 3, 3, 1, 1),           # 1000 tiles: blocks split across images
    (1, 37, 5, 5, 70, 3, 3, 1, 1),            # C, K not multiples of any vector
    (2, 3, 7, 9, 4, 3, 3, 1, (1, 0)),         # unequal padding
    (1, 2, 6, 6, 3, 3, 3, 1, "same"),
    (2, 1000, 18, 18, 30, 3, 3, 1, 1),        # C + K > 1024: three narrow blocks of 56
    (3, 5, 15, 15, 9, 3, 3, 1, 1),            # 4x4: 4 tiles a row, the last partial
    (2, 4, 16, 32, 6, 3, 3, 1, 1),            # 4x4: 8 tiles a row
    (3, 3, 13, 16, 5, 3, 3, 1, 1),            # 8 tiles a row, 7 rows: 3 pairs and one alone
    (2, 3, 16, 4, 5, 3, 3, 1, 1),             # 2 tiles a row, 8 rows: 4 pairs
    (2, 2, 21, 2, 3, 3, 3, 1, 1),             # 1 tile a row, 11 rows
]


@pytest.fixture(params=[1, 2, -1], ids=["forced", "forced-4x4", "never"])
def winograd_mode(request):
    old = _native._set_winograd(request.param)
    yield request.param
    _native._set_winograd(old)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", WINO_CASES, ids=case_id)
def test_winograd_matches_numpy(case, bias, winograd_mode, num_threads, rng):
    """Forward, backward data through the flipped kernel, and the weight
    gradient through F(3x3, 2x2)."""
    x, w, b, stride, padding = make(case, rng)
    b = b if bias else None
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    pad = pads(H, W, R, S, stride, padding)
    y = F.conv2d(x, w, b, stride, padding)
    # F(4x4, 3x3)'s transforms scale the rounding about tenfold (the test
    # below): 2x1000x18x18 on AVX-512 (Zen 5) reached 2.3 times the plain
    # tolerance, 1.7e-5 of the output's largest value
    scale = 10.0 if winograd_mode == 2 else 1.0
    close(y, conv64(x, w, b, stride, pad), C * R * S, scale=scale)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gw0 = rng.standard_normal(w.shape).astype(np.float32)
    gw = gw0.copy()
    gx, _, gb = F.conv2d_backward(dy, x, w, stride, padding, grad_weight=gw)
    ex, ew, eb = conv64_backward(dy, x, w, stride, pad)
    close(gx, ex, K * R * S, scale=scale)
    close(gw - gw0, ew, N * y.shape[2] * y.shape[3])     # added to the caller's gradient


@pytest.mark.parametrize("threads", [8, 16])
@pytest.mark.parametrize("mode", [1, 2], ids=["2x2", "4x4"])
def test_winograd_blocks_of_any_tile_count_on_many_threads(mode, threads, rng):
    """Batch 1 with as many threads as blocks of tiles but not of 8-tile
    blocks (196 tiles on 8 or 16 threads: blocks of 25 or 13): each thread
    takes whole blocks of that many tiles, forward and backward data."""
    x, w, b, stride, padding = make((1, 6, 28 * mode, 28 * mode, 10, 3, 3, 1, 1), rng)
    dy = rng.standard_normal((1, 10, 28 * mode, 28 * mode)).astype(np.float32)
    old = fastcnn.get_num_threads(), _native._set_winograd(mode)
    try:
        fastcnn.set_num_threads(threads)
        y = F.conv2d(x, w, b, stride, padding)
        gx = F.conv2d_backward(dy, x, w, stride, padding)[0]
    finally:
        fastcnn.set_num_threads(old[0])
        _native._set_winograd(old[1])
    close(y, conv64(x, w, b, stride, (1, 1, 1, 1)), 6 * 9, scale=10.0 if mode == 2 else 1.0)
    close(gx, conv64_backward(dy, x, w, stride, (1, 1, 1, 1))[0], 10 * 9,
          scale=10.0 if mode == 2 else 1.0)


@pytest.mark.parametrize("mode, bound", [(-1, 2e-6), (1, 2e-6), (2, 2e-5)],
                         ids=["other-paths", "2x2", "4x4"])
def test_winograd_error_against_a_direct_sum(mode, bound, rng):
    """F(2x2, 3x3)'s transforms add and halve, so over 576 products per
    output the error against float64 stays at float32 rounding, as the other
    paths' (4e-7 to 7e-7 of the output scale here); F(4x4, 3x3)'s (points
    0, +-1, +-2) scale by up to 8 and 1/24: about ten times that (5e-6)."""
    x, w, b, stride, padding = make((4, 64, 14, 14, 32, 3, 3, 1, 1), rng)
    expected = conv64(x, w, b, stride, (1, 1, 1, 1))
    old = _native._set_winograd(mode)
    try:
        y = F.conv2d(x, w, b, stride, padding)
    finally:
        _native._set_winograd(old)
    assert np.abs(y - expected).max() <= bound * np.abs(expected).max()


def test_forced_winograd_leaves_other_shapes_to_other_paths(rng):
    """Forced, Winograd still leaves 5x5, stride-2 and dilated convolutions,
    and the backward data of padding over 2, to the other paths."""
    old = _native._set_winograd(1)
    try:
        for case, dilation in [((1, 3, 9, 9, 4, 5, 5, 1, 2), 1), ((1, 3, 9, 9, 4, 3, 3, 2, 1), 1),
                               ((1, 3, 9, 9, 4, 3, 3, 1, 2), 2), ((1, 3, 5, 5, 4, 3, 3, 1, 3), 1)]:
            x, w, b, stride, padding = make(case, rng)
            y = F.conv2d(x, w, b, stride, padding, dilation)
            ref = F.conv2d(x, w, b, stride, padding, dilation, reference=True)
            np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
            dy = rng.standard_normal(y.shape).astype(np.float32)
            gx = F.conv2d_backward(dy, x, w, stride, padding, dilation)[0]
            rx = F.conv2d_backward(dy, x, w, stride, padding, dilation, reference=True)[0]
            np.testing.assert_allclose(gx, rx, rtol=1e-4, atol=1e-4)
    finally:
        _native._set_winograd(old)


# ---- taps that read only padding (csrc/conv2d.c, "taps that only read padding") ---

# The kernel is cut to the taps that read the input for some output; the cut
# taps' weight gradient is zero.
CROP_CASES = [
    ((3, 8, 1, 1, 5, 3, 3, 1, 1), 1),         # ResNet's last stage at 32x32: the centre only
    ((2, 4, 2, 2, 6, 3, 3, 2, 1), 1),         # stride 2 on 2x2: the first row and column cut
    ((2, 3, 3, 3, 4, 5, 5, 1, 2), 1),         # 5x5 on 3x3: the outer ring cut
    ((1, 2, 4, 5, 3, 3, 3, 1, 1), 2),         # dilated
    ((2, 3, 1, 4, 2, 3, 3, (1, 2), 1), 1),    # rows cut, columns kept
    ((1, 2, 4, 4, 3, 7, 7, 2, 3), 1),
    ((4, 300, 1, 1, 40, 3, 3, 1, 1), 1),      # a 1x1 map at batch 4: a grouped GEMM
]


@pytest.mark.parametrize("case, dilation", CROP_CASES,
                         ids=[f"{case_id(c)}-d{d}" for c, d in CROP_CASES])
def test_taps_reading_only_padding_are_cut(case, dilation, num_threads, rng):
    x, w, b, stride, padding = make(case, rng)
    y = F.conv2d(x, w, b, stride, padding, dilation)
    np.testing.assert_allclose(y, F.conv2d(x, w, b, stride, padding, dilation, reference=True),
                               rtol=1e-4, atol=1e-4)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gw0 = rng.standard_normal(w.shape).astype(np.float32)
    gw = gw0.copy()
    gx, _, gb = F.conv2d_backward(dy, x, w, stride, padding, dilation, grad_weight=gw)
    rx, rw, rb = F.conv2d_backward(dy, x, w, stride, padding, dilation, reference=True)
    np.testing.assert_allclose(gx, rx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw - gw0, rw, rtol=1e-4, atol=1e-4)    # added; cut taps + 0


@pytest.mark.parametrize("case", [(2, 3, 1, 1, 4, 3, 3, 1, 1), (2, 300, 1, 1, 40, 3, 3, 1, 1)],
                         ids=["few-filters", "12000-filters"])
def test_cut_taps_still_carry_nan_and_inf(case, num_threads, rng):
    """A tap that reads only padding multiplies zeros: a NaN or infinite
    weight there makes every output of its channel NaN, and an infinite dy
    makes that tap's weight gradient NaN, as in float64 with zero padding
    (and PyTorch). (The reference kernels skip padding instead.) The weights
    are checked in chunks of filters, on every thread: the last filter's
    NaN counts too."""
    x, w, b, stride, padding = make(case, rng)
    K, C = w.shape[:2]
    w[1, 2, 0, 0] = np.nan
    w[3, 0, 2, 1] = np.inf
    w[K - 1, C - 1, 2, 2] = np.nan
    y = F.conv2d(x, w, b, stride, padding)
    with np.errstate(invalid="ignore"):
        expected = conv64(x, w, b, stride, (1, 1, 1, 1))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    bad = [1, 3, K - 1]
    assert np.isnan(y[:, bad]).all()
    assert np.isfinite(np.delete(y, bad, axis=1)).all()
    w = np.nan_to_num(w, posinf=1.0)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy[0, 2, 0, 0] = np.inf
    gw = F.conv2d_backward(dy, x, w, stride, padding)[1]
    with np.errstate(invalid="ignore"):
        ew = conv64_backward(dy, x, w, stride, (1, 1, 1, 1))[1]
    np.testing.assert_array_equal(np.isnan(gw), np.isnan(ew))
    assert np.isnan(gw[2, :, 0, 0]).all()


# ---- the dense path (csrc/conv2d_dense.c) -----------------------------------------

# Maps no larger than the kernel, as one GEMM over whole images through the
# dense matrix that maps an image's input to its output.
DENSE_CASES = [
    ((4, 5, 2, 2, 6, 3, 3, 1, 1), 1),         # ResNet's 2x2 maps under 3x3 kernels
    ((3, 4, 3, 3, 5, 3, 3, 2, 1), 1),         # stride 2: 3x3 -> 2x2
    ((2, 3, 2, 3, 4, 3, 3, 1, 2), 2),         # dilated, padding 2
    ((5, 2, 1, 3, 3, 1, 3, 1, (0, 1)), 1),    # one row
    ((3, 8, 2, 2, 8, 2, 2, 1, 0), 1),         # the kernel covers the map: 1x1 outputs
    ((1, 3, 1, 1, 4, 3, 3, 1, 1), 1),         # a 1x1 map: cut to the centre, then dense
    ((2, 300, 2, 2, 40, 3, 3, 1, 1), 1),      # many channels
]


@pytest.fixture
def dense_forced():
    old = _native._set_dense(1)
    yield
    _native._set_dense(old)


@pytest.mark.parametrize("case, dilation", DENSE_CASES,
                         ids=[f"{case_id(c)}-d{d}" for c, d in DENSE_CASES])
def test_dense_matches_the_reference(case, dilation, dense_forced, num_threads, rng):
    x, w, b, stride, padding = make(case, rng)
    C, R, S = w.shape[1:]
    y = F.conv2d(x, w, b, stride, padding, dilation)
    close(y, F.conv2d(x, w, b, stride, padding, dilation, reference=True), C * R * S)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gw0 = rng.standard_normal(w.shape).astype(np.float32)
    gw = gw0.copy()
    gx, _, gb = F.conv2d_backward(dy, x, w, stride, padding, dilation, grad_weight=gw)
    rx, rw, rb = F.conv2d_backward(dy, x, w, stride, padding, dilation, reference=True)
    close(gx, rx, w.shape[0] * R * S)
    close(gw - gw0, rw, x.shape[0] * y.shape[2] * y.shape[3])     # added to the caller's
    close(gb, rb, x.shape[0] * y.shape[2] * y.shape[3])


def test_dense_leaves_values_that_are_not_finite_to_the_gemm_path(dense_forced, rng):
    """The dense matrix's zeros would turn an infinite input, dy or weight
    into NaN where the convolution adds nothing (or, for a weight on a tap
    that reads padding, where PyTorch's zero padding gives NaN): such calls
    run the GEMM path, and the results are finite exactly where float64 says."""
    x, w, b, stride, padding = make((3, 4, 2, 2, 5, 3, 3, 1, 1), rng)
    pad = (1, 1, 1, 1)
    x[1, 2, 0, 0] = np.inf
    y = F.conv2d(x, w, b, stride, padding)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(np.isfinite(y), np.isfinite(conv64(x, w, b, stride, pad)))
    assert np.isfinite(y[[0, 2]]).all()
    x[1, 2, 0, 0] = 1.0
    w[2, 1, 0, 0] = np.nan          # reads padding for three of the four outputs
    y = F.conv2d(x, w, b, stride, padding)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(np.isnan(y), np.isnan(conv64(x, w, b, stride, pad)))
    assert np.isnan(y[:, 2]).all()
    w[2, 1, 0, 0] = 0.5
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy[0, 3, 1, 1] = np.inf
    gx, gw, _ = F.conv2d_backward(dy, x, w, stride, padding)
    with np.errstate(invalid="ignore"):
        ex, ew, _ = conv64_backward(dy, x, w, stride, pad)
    np.testing.assert_array_equal(np.isfinite(gx), np.isfinite(ex))
    np.testing.assert_array_equal(np.isfinite(gw), np.isfinite(ew))
    assert np.isfinite(gx[1:]).all()


# ---- paths chosen by timing (csrc/conv2d.c, csrc/conv2d_tune.c) ----------------

# Large enough to be timed (at least 4 MFLOP), each with several paths to time.
TIMED_CASES = [
    (2, 16, 24, 24, 16, 3, 3, 1, 1),          # forward: direct, channel-vector, GEMM
    (1, 128, 7, 7, 64, 3, 3, 1, 1),           # a small map, many channels
    (3, 8, 30, 30, 24, 5, 5, 2, 2),           # stride 2, S = 5
    (4, 128, 6, 6, 256, 1, 1, 1, 0),          # pointwise: weight gradient grouped or not
]


@pytest.fixture
def tuning():
    old = _native._set_tune(True)       # also forgets the choices kept so far
    yield
    _native._set_tune(old)


@pytest.mark.parametrize("case", TIMED_CASES, ids=case_id)
def test_timed_choice_matches_numpy_and_is_kept(case, tuning, num_threads, rng):
    x, w, b, stride, padding = make(case, rng)
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    pad = pads(H, W, R, S, stride, padding)
    first = F.conv2d(x, w, b, stride, padding)             # timed now
    close(first, conv64(x, w, b, stride, pad), C * R * S)
    np.testing.assert_array_equal(F.conv2d(x, w, b, stride, padding), first)   # kept
    dy = rng.standard_normal(first.shape).astype(np.float32)
    gw0 = rng.standard_normal(w.shape).astype(np.float32)
    gw = gw0.copy()
    gx, _, gb = F.conv2d_backward(dy, x, w, stride, padding, grad_weight=gw)   # timed now
    ex, ew, eb = conv64_backward(dy, x, w, stride, pad)
    P, Q = first.shape[2:]
    close(gx, ex, K * R * S)
    close(gw - gw0, ew, N * P * Q)      # the timed runs did not add into the caller's dw
    again = F.conv2d_backward(dy, x, w, stride, padding)
    np.testing.assert_array_equal(again[0], gx)
    np.testing.assert_allclose(again[1], gw - gw0, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", TIMED_CASES, ids=case_id)
def test_timed_forward_does_not_depend_on_the_thread_count(case, tuning, rng):
    """The path is kept per shape (threads per count): 1, 2 and 4 threads run
    the same path, whose outputs are each computed by one thread."""
    x, w, b, stride, padding = make(case, rng)
    old = fastcnn.get_num_threads()
    try:
        results = []
        for n in (2, 1, 4):
            fastcnn.set_num_threads(n)
            results.append(F.conv2d(x, w, b, stride, padding))
    finally:
        fastcnn.set_num_threads(old)
    for y in results[1:]:
        np.testing.assert_array_equal(y, results[0])


def test_fewer_threads_kept_for_a_shape_are_probed(tuning, rng):
    """Threads fewer than asked for (here taken from the test hook, as a
    timing disturbed by another process would leave them) are probed on the
    shape's uses after its first call that are powers of two from 4 to 1024:
    such a call runs on the threads asked for, and only if it beats the
    fastest call on the kept threads by 5% (planted here before every call;
    not for the 4th) are they chosen again, on the same path; as many
    threads as asked for are never probed."""
    x, w, b, stride, padding = make(TIMED_CASES[0], rng)
    old = fastcnn.get_num_threads()
    old_taken = _native._set_tune_threads(1)
    conv = lambda: F.conv2d(x, w, b, stride, padding)
    try:
        fastcnn.set_num_threads(2)
        first = conv()                                  # timed: threads taken as 1
        chosen = _native._tune_threads_chosen()
        timed_again = []
        for use in range(1, 65):
            if use == 64:
                _native._set_tune_threads(2)            # its timing keeps 2 threads
            _native._set_tune_best(0.0 if use == 4 else 1e9)    # a probe: slower / faster
            np.testing.assert_array_equal(conv(), first)
            if _native._tune_threads_chosen() > chosen:
                timed_again.append(use)
                chosen = _native._tune_threads_chosen()
        assert timed_again == [8, 16, 32, 64]
        for _ in range(1000):                           # 2 threads kept: not probed
            _native._set_tune_best(1e9)
            conv()
        assert _native._tune_threads_chosen() == chosen
    finally:
        _native._set_tune_threads(old_taken)
        fastcnn.set_num_threads(old)


def test_a_weight_gradient_keeps_its_threads(tuning, rng):
    """The weight gradient splits its sums by thread, so its bits follow the
    threads it runs on: threads fewer than asked for kept for it are never
    probed, and every call gives the first call's bits. Backward data, the
    same bits on any threads, is still probed (its threads timed again)."""
    x = rng.standard_normal((8, 16, 24, 24)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((8, 16, 24, 24)).astype(np.float32)
    old = fastcnn.get_num_threads()
    old_taken = _native._set_tune_threads(1)
    backward = lambda: F.conv2d_backward(dy, x, w, 1, 1)
    try:
        fastcnn.set_num_threads(2)
        first = backward()                      # timed: threads taken as 1
        chosen = _native._tune_threads_chosen()
        for use in range(1, 40):
            _native._set_tune_best(1e9 if use == 8 else 0.0)    # only use 8's probe is faster
            gx, gw, gb = backward()
            np.testing.assert_array_equal(gw, first[1], err_msg=f"use {use}")
            np.testing.assert_array_equal(gx, first[0], err_msg=f"use {use}")
        assert _native._tune_threads_chosen() == chosen + 1    # backward data's, on use 8
    finally:
        _native._set_tune_threads(old_taken)
        fastcnn.set_num_threads(old)


def test_threads_timing_one_shape_at_once_agree(tuning, rng):
    """Threads whose first calls of a shape time it at once each end on the
    choice kept first: their results are the bits of every later call."""
    x, w, b, stride, padding = make(TIMED_CASES[0], rng)
    expected = conv64(x, w, b, stride, pads(24, 24, 3, 3, stride, padding))
    dy = rng.standard_normal(expected.shape).astype(np.float32)
    call = lambda: (F.conv2d(x, w, b, stride, padding),
                    *F.conv2d_backward(dy, x, w, stride, padding))
    results, errors = [None] * 6, []

    def run(i):
        try:
            results[i] = call()
        except Exception as e:          # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    later = call()
    for got in results:
        close(got[0], expected, 16 * 9)
        for g, want in zip(got, later):
            np.testing.assert_array_equal(g, want)


def test_timing_turned_off_by_the_environment(tmp_path):
    done = run_python("from fastcnn import _native; print(_native._set_tune(True))", tmp_path,
                      FASTCNN_CONV_TUNE="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    done = run_python("from fastcnn import _native; print(_native._set_tune(True))", tmp_path,
                      FASTCNN_CONV_TUNE="1")
    assert done.stdout.strip() == "True"


@pytest.mark.skipif(os.environ.get("FASTCNN_ISA") is not None,
                    reason="already inside a forced-ISA run")
@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_every_isa_path_in_a_subprocess(isa, tmp_path):
    """FASTCNN_ISA is resolved once per process: the numeric tests of this file
    (the best path already ran here) run again on each lower path."""
    if isa not in supported_isas():
        pytest.skip(f"this CPU does not support {isa}")
    done = run_python_args(["-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                            "matches_numpy or agree"], cwd=tmp_path, timeout=600,
                           FASTCNN_ISA=isa)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
