"""Grouped, depthwise and dilated 2-d convolution (csrc/conv2d.c,
csrc/conv2d_depthwise*.c, the dilated im2col) against float64 numpy, finite
differences and torch, and the errors of bad groups and dilation."""
import os

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import fastcnn
import fastcnn.functional as F
from gradcheck import check_directional
from subproc import run_python_args, supported_isas

# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
CASES = [
    (2, 6, 9, 11, 12, 3, 3, 1, 1, 1, 6),            # depthwise, multiplier 2
    (2, 6, 9, 11, 6, 3, 3, 2, 1, 1, 6),             # depthwise, stride 2
    (3, 5, 8, 7, 5, 3, 3, (2, 1), (1, 0), 1, 5),    # depthwise, asymmetric stride and padding
    (2, 8, 7, 7, 8, 3, 3, 2, 2, 2, 8),              # depthwise, dilation 2 with stride 2
    (2, 7, 10, 9, 7, 3, 3, 1, 4, (2, 3), 7),        # depthwise, padding larger than the kernel
    (1, 4, 1, 1, 8, 3, 3, 1, 1, 1, 4),              # 1x1 image, depthwise multiplier 2
    (1, 3, 1, 1, 6, 1, 1, 1, 0, 1, 3),              # 1x1 image and kernel
    (2, 17, 20, 19, 34, 5, 5, 2, 2, 1, 17),         # 17 channels (no vector multiple), 5x5
    (2, 19, 37, 35, 19, 3, 3, 1, 1, 1, 19),         # rows longer than two vectors
    (2, 16, 15, 15, 16, 3, 3, 1, "same", 3, 16),    # 'same' with dilation 3
    (2, 8, 10, 9, 16, 3, 5, 1, 2, 1, 2),            # groups 2
    (2, 8, 10, 9, 16, 3, 3, 2, 1, 2, 4),            # groups 4, dilation 2, stride 2
    (3, 12, 6, 7, 8, 1, 1, 1, 0, 1, 4),             # grouped pointwise
    (2, 6, 5, 6, 9, 2, 3, 1, "same", (2, 1), 3),    # grouped, even kernel 'same', dilation
    (2, 5, 12, 13, 7, 3, 3, 2, 3, 2, 1),            # dilation 2 with stride 2, ungrouped
    (1, 3, 9, 9, 4, 3, 2, (1, 2), 0, (3, 2), 1),    # dilation per axis
    (4, 16, 12, 12, 32, 3, 3, 1, 1, 2, 1),          # dilated, K a vector multiple (no kvec)
]


def case_id(case):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    return (f"{N}x{C}x{H}x{W}-k{K}x{R}x{S}-s{stride}-p{padding}-d{dilation}-g{groups}"
            .replace(" ", ""))


def pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def pads(R, S, padding, dilation):
    """(top, bottom, left, right), PyTorch's meaning of padding."""
    dh, dw = pair(dilation)
    if padding == "same":
        rows, cols = dh * (R - 1), dw * (S - 1)
        return rows // 2, rows - rows // 2, cols // 2, cols - cols // 2
    ph, pw = pair(padding)
    return ph, ph, pw, pw


def windows(x, R, S, stride, pad, dilation):
    """(N, C, P, Q, R, S) float64 view of every dilated receptive field."""
    top, bottom, left, right = pad
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    view = sliding_window_view(xp, (dh * (R - 1) + 1, dw * (S - 1) + 1), axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw]


def conv64(x, w, b, stride, pad, dilation, groups):
    K, Cg, R, S = w.shape
    Kg = K // groups
    y = np.concatenate([
        np.einsum("ncpqrs,kcrs->nkpq",
                  windows(x[:, g * Cg:(g + 1) * Cg], R, S, stride, pad, dilation),
                  w[g * Kg:(g + 1) * Kg].astype(np.float64)) for g in range(groups)], axis=1)
    return y + b.astype(np.float64)[None, :, None, None]


def conv64_backward(dy, x, w, stride, pad, dilation, groups):
    """(grad_x, grad_w, grad_b) in float64, group by group."""
    K, Cg, R, S = w.shape
    Kg, (sh, sw), (dh, dw) = K // groups, pair(stride), pair(dilation)
    top, bottom, left, right = pad
    dy = dy.astype(np.float64)
    P, Q = dy.shape[2:]
    gw = np.empty(w.shape)
    gxp = np.zeros((x.shape[0], x.shape[1], x.shape[2] + top + bottom, x.shape[3] + left + right))
    for g in range(groups):
        dyg, ks, cs = dy[:, g * Kg:(g + 1) * Kg], slice(g * Kg, (g + 1) * Kg), slice(g * Cg, (g + 1) * Cg)
        gw[ks] = np.einsum("nkpq,ncpqrs->kcrs", dyg, windows(x[:, cs], R, S, stride, pad, dilation))
        for r in range(R):
            for s in range(S):
                gxp[:, cs, r * dh:r * dh + sh * (P - 1) + 1:sh, s * dw:s * dw + sw * (Q - 1) + 1:sw] += \
                    np.einsum("nkpq,kc->ncpq", dyg, w[ks, :, r, s].astype(np.float64))
    gx = gxp[:, :, top:top + x.shape[2], left:left + x.shape[3]]
    return gx, gw, dy.sum(axis=(0, 2, 3))


def make(case, rng):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C // groups, R, S)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    return x, w, b, (stride, padding, dilation, groups)


def close(actual, expected, length, rtol=1e-4):
    """float32 sums of `length` O(1) terms: relative error 1e-4 of their typical size."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=3e-5 * np.sqrt(length))


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_numpy(case, reference, num_threads, rng):
    x, w, b, args = make(case, rng)
    stride, padding, dilation, groups = args
    K, Cg, R, S = w.shape
    pad = pads(R, S, padding, dilation)
    expected = conv64(x, w, b, stride, pad, dilation, groups)
    y = F.conv2d(x, w, b, *args, reference=reference)
    assert y.dtype == np.float32 and y.shape == expected.shape and y.flags.c_contiguous
    close(y, expected, Cg * R * S)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = F.conv2d_backward(dy, x, w, *args, reference=reference)
    ex, ew, eb = conv64_backward(dy, x, w, stride, pad, dilation, groups)
    N, P, Q = x.shape[0], y.shape[2], y.shape[3]
    close(gx, ex, K // groups * R * S)
    close(gw, ew, N * P * Q)
    close(gb, eb, N * P * Q)


# The depthwise kernel's row paths (csrc/conv2d_depthwise_kernel.h), for
# vectors of 4, 8 and 16 floats: rows shorter than a vector, exactly one, a
# few with an overlapping last vector; 1-3 rows left after the blocks of 4;
# 3x3 (unrolled) and other filters; stride 3; at strides 1 and 2 along
# rows, 3x3 filters read the plane itself (loads inside the row, the first
# vector's and at stride 1 the last vector's at padding 1, masked loads at
# either end: even and odd widths, padding 0-2, rows of 1-7 vectors, padding
# rows, row strides 1-3 and row dilation), other filters the phase split.
DEPTHWISE_PATHS = [
    (1, 2, 5, 3, 2, 3, 3, 1, 1, 1, 2),              # Q 3: below every vector
    (1, 4, 13, 8, 4, 3, 3, 1, 1, 1, 4),             # Q 8, P 13 (one row after the blocks)
    (1, 4, 6, 16, 8, 3, 3, 1, 1, 1, 4),             # Q 16, P 6, multiplier 2
    (1, 4, 7, 17, 4, 3, 3, 1, 1, 1, 4),             # Q 17: last vector overlaps, P 7
    (1, 3, 5, 33, 3, 3, 3, 1, 1, 1, 3),             # Q 33
    (1, 2, 9, 45, 2, 3, 3, 1, 3, 3, 2),             # dilation 3, wide
    (1, 2, 9, 40, 4, 3, 5, 1, (1, 2), 1, 2),        # 3x5, multiplier 2
    (1, 3, 9, 70, 3, 3, 3, 2, 1, 1, 3),             # stride 2, even width
    (1, 3, 8, 71, 6, 3, 3, 2, 0, 1, 3),             # stride 2, odd width, no padding, m 2
    (2, 2, 11, 67, 2, 3, 3, 2, 2, 1, 2),            # stride 2, padding 2
    (1, 2, 7, 66, 4, 3, 3, 2, 1, 2, 2),             # stride 2, dilation 2, m 2
    (1, 2, 3, 100, 2, 3, 3, 2, 1, 1, 2),            # stride 2, Q 50
    (1, 3, 10, 50, 3, 3, 3, 3, 1, 1, 3),            # stride 3
    (1, 2, 6, 47, 2, 5, 5, (2, 3), 2, 1, 2),        # strides 2 x 3, 5x5
    (1, 2, 9, 71, 2, 3, 3, 2, 1, 1, 2),             # stride 2, odd width, padding 1
    (1, 1, 5, 33, 1, 3, 3, 2, 1, 1, 1),             # stride 2, 33 wide
    (1, 2, 6, 32, 2, 3, 3, 2, 1, 1, 2),             # stride 2, 32 wide
    (1, 2, 10, 40, 4, 3, 3, (3, 2), 1, (2, 1), 2),  # row stride 3, row dilation 2, m 2
    (1, 2, 12, 64, 2, 3, 3, (1, 2), (2, 1), 1, 2),  # stride 1 x 2, two padding rows
    (1, 2, 9, 112, 2, 3, 3, 1, 1, 1, 2),            # stride 1, 112 wide
    (1, 2, 7, 50, 2, 3, 3, 1, 0, 1, 2),             # stride 1, no padding
    (1, 2, 6, 40, 2, 3, 3, 1, 2, 1, 2),             # stride 1, padding 2
    (1, 2, 10, 37, 4, 3, 3, (2, 1), 1, (2, 1), 2),  # row stride 2, row dilation 2, m 2
]


@pytest.mark.parametrize("case", DEPTHWISE_PATHS, ids=case_id)
def test_depthwise_paths_match_numpy(case, num_threads, rng):
    x, w, b, args = make(case, rng)
    stride, padding, dilation, groups = args
    K, Cg, R, S = w.shape
    pad = pads(R, S, padding, dilation)
    y = F.conv2d(x, w, b, *args)
    close(y, conv64(x, w, b, stride, pad, dilation, groups), R * S)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = F.conv2d_backward(dy, x, w, *args)
    ex, ew, eb = conv64_backward(dy, x, w, stride, pad, dilation, groups)
    close(gx, ex, K // groups * R * S)
    close(gw, ew, x.shape[0] * y.shape[2] * y.shape[3])
    close(gb, eb, x.shape[0] * y.shape[2] * y.shape[3])


# The depthwise forward in channel vectors (conv2d_depthwise_kernel.h
# dw_vectors_*), forced, against float64 and bit for bit against the row
# loops; the weight gradient and the strided backward data in channel
# vectors (dw_wgrad_*, dw_backward_vectors: sums in another order) against
# float64 and close to the row loops'; C a multiple of 16, so every vector
# length runs them: maps narrower
# than a vector of positions, position chunks that cross rows, blocks of 8
# positions and 1-7 left, strides 1-3, 3x3 (unrolled) and other filters,
# dilation, padding wider than the kernel, input rows and columns that no
# output reads, a 1x1 image.
DEPTHWISE_VECTORS = [
    (1, 16, 7, 7, 16, 3, 3, 1, 1, 1, 16),
    (2, 32, 14, 13, 32, 3, 3, 2, 1, 1, 32),
    (1, 16, 5, 43, 16, 3, 3, 1, 1, 1, 16),
    (2, 16, 9, 11, 16, 5, 5, 2, 2, 1, 16),
    (1, 16, 9, 9, 16, 3, 3, 1, 2, 2, 16),
    (1, 32, 1, 1, 32, 3, 3, 1, 1, 1, 32),
    (1, 16, 8, 8, 16, 3, 3, 2, 0, 1, 16),
    (1, 16, 6, 6, 16, 3, 3, 1, 4, 1, 16),
    (3, 16, 10, 10, 16, 3, 3, (2, 1), (1, 0), 1, 16),
    (1, 16, 12, 12, 16, 3, 3, 3, 1, 1, 16),
    (1, 48, 3, 5, 48, 1, 1, 1, 0, 1, 48),
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", DEPTHWISE_VECTORS, ids=case_id)
def test_depthwise_vectors_match_numpy_and_the_row_loops(case, bias, num_threads, rng):
    x, w, b, args = make(case, rng)
    stride, padding, dilation, groups = args
    K, Cg, R, S = w.shape
    b = b if bias else None
    dy = rng.standard_normal(conv64(x, w, np.zeros(K), stride, pads(R, S, padding, dilation),
                                    dilation, groups).shape).astype(np.float32)
    old = fastcnn._native._set_depthwise_vectors(1)
    try:
        y, (gx, gw, _) = F.conv2d(x, w, b, *args), F.conv2d_backward(dy, x, w, *args)
        fastcnn._native._set_depthwise_vectors(-1)
        rows, (rows_gx, rows_gw, _) = F.conv2d(x, w, b, *args), F.conv2d_backward(dy, x, w, *args)
    finally:
        fastcnn._native._set_depthwise_vectors(old)
    pad = pads(R, S, padding, dilation)
    close(y, conv64(x, w, np.zeros(K, np.float32) if b is None else b, stride, pad, dilation,
                    groups), R * S)
    expect = conv64_backward(dy, x, w, stride, pad, dilation, groups)
    close(gx, expect[0], R * S)
    close(gw, expect[1], x.shape[0] * dy.shape[2] * dy.shape[3])
    np.testing.assert_array_equal(y, rows)
    dh, dw = pair(dilation)
    if pair(stride) == (1, 1) and pad[0] <= dh * (R - 1) and pad[2] <= dw * (S - 1):
        np.testing.assert_array_equal(gx, rows_gx)      # a forward of dy either way
    close(gx, rows_gx, R * S)
    close(gw, rows_gw, x.shape[0] * dy.shape[2] * dy.shape[3])


def test_accumulates_into_given_buffers_without_bias_or_grad_input(rng):
    x, w, b, args = make(CASES[0], rng)
    y = F.conv2d(x, w, None, *args)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    _, once, _ = F.conv2d_backward(dy, x, w, *args, has_bias=False)
    acc = once.copy()
    gx, gw, gb = F.conv2d_backward(dy, x, w, *args, has_bias=False, need_grad_input=False,
                                   grad_weight=acc)
    assert gx is None and gb is None and gw is acc
    np.testing.assert_allclose(acc, 2 * once, rtol=1e-6)
    np.testing.assert_allclose(y, F.conv2d(x, w, b, *args) - b[None, :, None, None], atol=1e-5)


GRAD_CASES = [CASES[0], CASES[3], CASES[7], CASES[11], CASES[15]]


@pytest.mark.parametrize("case", GRAD_CASES, ids=case_id)
def test_backward_matches_finite_differences(case, rng):
    x, w, b, args = make(case, rng)
    y = F.conv2d(x, w, b, *args)
    u = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = F.conv2d_backward(u, x, w, *args)
    check_directional(lambda t: F.conv2d(t, w, b, *args), x, u, gx, rng)
    check_directional(lambda t: F.conv2d(x, t, b, *args), w, u, gw, rng)
    check_directional(lambda t: F.conv2d(x, w, t, *args), b, u, gb, rng)


TORCH_CASES = [CASES[i] for i in (0, 1, 3, 4, 5, 7, 9, 10, 11, 13, 14)] + [
    (2, 32, 28, 28, 32, 3, 3, 2, 1, 1, 32),         # a MobileNet depthwise layer
    (2, 64, 9, 9, 128, 3, 3, 1, 1, 1, 32),          # ResNeXt-style 32 groups
]


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_matches_torch(case, torch, num_threads, rng):
    x, w, b, args = make(case, rng)
    stride, padding, dilation, groups = args
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    dy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(dy))
    y = F.conv2d(x, w, b, *args)
    gx, gw, gb = F.conv2d_backward(dy, x, w, *args)
    N, K, Cg, R, S = x.shape[0], w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    P, Q = y.shape[2:]
    close(y, ty.detach().numpy(), Cg * R * S)
    close(gx, tx.grad.numpy(), K // groups * R * S)
    close(gw, tw.grad.numpy(), N * P * Q)
    close(gb, tb.grad.numpy(), N * P * Q)


def test_one_and_two_threads_agree(rng):
    x, w, b, args = make((5, 24, 14, 13, 48, 3, 3, 2, 1, 1, 24), rng)
    dy = rng.standard_normal((5, 48, 7, 7)).astype(np.float32)
    old = fastcnn.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            fastcnn.set_num_threads(n)
            out.append((F.conv2d(x, w, b, *args),) + F.conv2d_backward(dy, x, w, *args))
    finally:
        fastcnn.set_num_threads(old)
    for one, two in zip(*out):
        np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-4)


X = np.zeros((2, 6, 5, 5), np.float32)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(groups=4, weight=np.zeros((4, 1, 3, 3), np.float32)), ValueError,
     r"groups must divide the input channels \(6\) and the output channels \(4\). "
     r"Received: groups=4"),
    (dict(groups=3, weight=np.zeros((4, 2, 3, 3), np.float32)), ValueError,
     r"groups must divide .* output channels \(4\). Received: groups=3"),
    (dict(groups=2, weight=np.zeros((4, 6, 3, 3), np.float32)), ValueError,
     r"weight must have 3 input channels \(x's 6 / groups 2\).*weight.shape=\(4, 6, 3, 3\)"),
    (dict(groups=0), ValueError, r"groups must be positive. Received: groups=0"),
    (dict(groups=1.5), TypeError, r"groups must be an integer. Received: groups=1.5"),
    (dict(dilation=0), ValueError, r"dilation must be positive. Received: dilation=0"),
    (dict(dilation=(1, -2)), ValueError, r"dilation must be positive. Received: dilation=\(1, -2\)"),
    (dict(dilation="2"), TypeError, r"dilation must be an integer"),
    (dict(dilation=3), ValueError,
     r"kernel \(3, 3\) dilated by \(3, 3\) spans \(7, 7\) and is larger than the padded "
     r"input \(5, 5\).*dilation=3"),
    (dict(dilation=(1, 2), padding="same", stride=2), ValueError,
     r"padding='same' requires stride 1"),
])
def test_rejects_bad_groups_and_dilation(kwargs, error, match):
    args = dict(x=X, weight=np.zeros((6, 1, 3, 3), np.float32), bias=None, groups=6)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        F.conv2d(**args)
    bwd = {k: v for k, v in args.items() if k != "bias"}
    with pytest.raises(error, match=match):
        F.conv2d_backward(np.zeros((2, 6, 3, 3), np.float32), has_bias=False, **bwd)


def test_layer_matches_torch_and_saves_its_arguments(torch, rng, tmp_path):
    layer = fastcnn.Conv2d(6, 12, 3, stride=2, padding="valid", dilation=2, groups=3, bias=True)
    assert layer.weight.shape == (12, 2, 3, 3)
    tl = torch.nn.Conv2d(6, 12, 3, stride=2, padding="valid", dilation=2, groups=3)
    tl.weight.data[...] = torch.from_numpy(layer.weight.data)
    tl.bias.data[...] = torch.from_numpy(layer.bias.data)
    model = fastcnn.Sequential(layer, fastcnn.Conv2d(12, 12, 3, padding="same", dilation=2,
                                                     groups=12, bias=False))
    tm = torch.nn.Sequential(tl, torch.nn.Conv2d(12, 12, 3, padding="same", dilation=2,
                                                 groups=12, bias=False))
    tm[1].weight.data[...] = torch.from_numpy(model[1].weight.data)
    x = rng.standard_normal((2, 6, 15, 14)).astype(np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tm(tx)
    g = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(model(x), ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.backward(g), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    for p, tp in zip(model.parameters(), tm.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-4, atol=1e-3)
    path = tmp_path / "grouped.fcnn"
    model.save(path)
    loaded = fastcnn.load(path)
    assert (loaded[0].dilation, loaded[0].groups, loaded[1].groups) == (2, 3, 12)
    assert "dilation=2, groups=3" in repr(loaded[0])
    np.testing.assert_array_equal(loaded.eval()(x), model.eval()(x))


@pytest.mark.parametrize("kwargs, match", [
    (dict(groups=4), r"groups must divide in_channels \(6\) and out_channels \(12\). "
                     r"Received: groups=4"),
    (dict(groups=0), r"groups must be positive. Received: groups=0"),
    (dict(dilation=0), r"dilation must be positive. Received: dilation=0"),
    (dict(padding_mode="reflect"), r"padding_mode must be 'zeros'.*Received: "
                                   r"padding_mode='reflect'"),
])
def test_layer_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fastcnn.Conv2d(6, 12, 3, **kwargs)


def test_layer_rejects_input_with_other_channels(rng):
    model = fastcnn.Sequential(fastcnn.Conv2d(6, 6, 3, groups=6))
    with pytest.raises(ValueError, match=r"Conv2d expects input of shape \(N, 6, H, W\)"):
        model(rng.standard_normal((1, 3, 8, 8)))


@pytest.mark.skipif(os.environ.get("FASTCNN_ISA") is not None,
                    reason="already inside a forced-ISA run")
@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_every_isa_path_in_a_subprocess(isa, tmp_path):
    """The depthwise kernels of each lower instruction set (FASTCNN_ISA is
    resolved once per process) pass the numeric tests too."""
    if isa not in supported_isas():
        pytest.skip(f"this CPU does not support {isa}")
    done = run_python_args(["-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                            "matches_numpy and fast or agree or depthwise_paths"
                            " or depthwise_vectors"], cwd=tmp_path, timeout=600,
                           FASTCNN_ISA=isa)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
