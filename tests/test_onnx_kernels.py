"""The numpy kernels of fastcnn/onnx/kernels.py (the fallbacks of the ONNX
importer): every backward against finite differences, in float64, for every
input; forwards against plain loops where numpy itself is not the definition.
(They need numpy only; the ONNX conformance tests are in test_onnx_backend.py.)"""
import numpy as np
import pytest

from fastcnn.onnx import kernels as K
from gradcheck import check_directional


def _check_all_inputs(kernel, inputs, seed=0):
    """For each float input: <backward(dy), v> == d<forward, dy>/dv."""
    rng = np.random.default_rng(seed)
    inputs = [np.asarray(a, np.float64) if np.asarray(a).dtype.kind == "f" else a
              for a in inputs]
    y, saved = kernel.forward(*inputs)
    dy = rng.standard_normal(np.shape(y))
    grads = kernel.backward(saved, dy)
    assert len(grads) == len(inputs)
    for k, (a, g) in enumerate(zip(inputs, grads)):
        if g is None:
            continue
        assert np.shape(g) == np.shape(a), (k, np.shape(g), np.shape(a))

        def f(v, k=k):
            args = list(inputs)
            args[k] = v
            return kernel.forward(*args)[0]
        check_directional(f, a, dy, g, rng, eps=1e-6, rtol=1e-5, atol=1e-7)


def _rand(*shape, seed=1):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape)


@pytest.mark.parametrize("stride,pads,dilation,groups", [
    ((1, 1), (1, 1, 1, 1), (1, 1), 1), ((2, 1), (0, 1, 2, 0), (1, 1), 1),
    ((1, 2), (2, 2, 2, 2), (2, 2), 2), ((2, 2), (1, 0, 0, 1), (1, 2), 4),
    ((1, 1), (1, 1, 1, 1), (1, 1), 8), ((2, 1), (0, 2, 1, 0), (2, 1), 8)])   # depthwise
def test_conv_matches_loops_and_finite_differences(stride, pads, dilation, groups):
    C = 8 if groups == 8 else 4
    x, w, b = _rand(2, C, 7, 6), _rand(8, C // groups, 3, 2), _rand(8)
    kernel = K.Conv(stride, pads, dilation, groups)
    y = kernel.forward(x, w, b)[0]
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    ref = np.zeros_like(y)
    cg, kg = C // groups, 8 // groups
    for n, k, p, q in np.ndindex(*y.shape):
        g = k // kg
        for c, r, s in np.ndindex(cg, 3, 2):
            ref[n, k, p, q] += w[k, c, r, s] * xp[n, g * cg + c, p * stride[0] + r * dilation[0],
                                                  q * stride[1] + s * dilation[1]]
        ref[n, k, p, q] += b[k]
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)
    _check_all_inputs(kernel, [x, w, b])


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("ceil,include,pads,dilation", [
    (False, False, (0, 0, 0, 0), (1, 1)), (True, False, (1, 0, 0, 1), (1, 1)),
    (True, True, (1, 1, 1, 1), (1, 1)), (False, True, (0, 1, 1, 0), (2, 1))])
def test_pool_matches_loops_and_finite_differences(mode, ceil, include, pads, dilation):
    x = _rand(2, 3, 8, 7)
    kernel = K.Pool(mode, (3, 2), (2, 2), pads, dilation, ceil, include)
    y = kernel.forward(x)[0]
    H, W = x.shape[2:]
    for n, c, p, q in np.ndindex(*y.shape):
        rows = [p * 2 - pads[0] + r * dilation[0] for r in range(3)]
        cols = [q * 2 - pads[1] + s * dilation[1] for s in range(2)]
        inside = [x[n, c, h, w] for h in rows for w in cols if 0 <= h < H and 0 <= w < W]
        if mode == "max":
            assert y[n, c, p, q] == max(inside)
        else:
            padded = [(h, w) for h in rows for w in cols
                      if -pads[0] <= h < H + pads[2] and -pads[1] <= w < W + pads[3]]
            count = len(padded) if include else len(inside)
            assert np.isclose(y[n, c, p, q], sum(inside) / count)
    _check_all_inputs(kernel, [x])


@pytest.mark.parametrize("kernel,inputs", [
    (K.LRN(3, 1e-2, 0.75, 1.0), [_rand(2, 5, 3, 3)]),
    (K.LRN(4, 2e-2, 0.6, 2.0), [_rand(1, 6, 2, 2)]),
    (K.Softmax(1, False, True), [_rand(2, 3, 4)]),
    (K.Softmax(-1, True, False), [_rand(2, 3, 4)]),
    (K.Softmax(0, False, False), [_rand(3, 4)]),
    (K.Binary("Add"), [_rand(2, 3, 4), _rand(3, 1)]),
    (K.Binary("Sub"), [_rand(3, 1), _rand(2, 3, 4)]),
    (K.Binary("Mul"), [_rand(2, 3, 4), _rand(1, 4)]),
    (K.Binary("Div"), [_rand(2, 3, 4), np.abs(_rand(3, 4)) + 1]),
    (K.Sum(), [_rand(2, 3), _rand(3), _rand(2, 1)]),
    (K.PRelu(), [_rand(2, 3, 2, 2), _rand(3, 1, 1)]),
    (K.MatMul(), [_rand(2, 3, 4), _rand(4, 5)]),
    (K.MatMul(), [_rand(4), _rand(2, 4, 5)]),
    (K.Gemm(0.5, 2.0, 1, 0), [_rand(4, 3), _rand(4, 5), _rand(5)]),
    (K.Gemm(1.0, 1.0, 0, 1), [_rand(3, 4), _rand(5, 4)]),
    (K.Concat(1), [_rand(2, 3, 2), _rand(2, 1, 2), _rand(2, 2, 2)]),
    (K.Transpose((0, 2, 1, 3)), [_rand(2, 3, 4, 5)]),
    (K.Pad([(0, 0), (1, 2), (-1, 1)], 0.5), [_rand(2, 3, 4)]),
    (K.Slice((slice(None), slice(3, 0, -2), slice(1, None))), [_rand(2, 5, 4)]),
    (K.Gather(1), [_rand(2, 5, 3), np.array([[0, -1], [4, 0]])]),
    (K.ReduceMean((1, 3), False), [_rand(2, 3, 4, 5)]),
    (K.ReduceMean(None, True), [_rand(2, 3)]),
    (K.BatchNormInference(1e-3), [_rand(2, 3, 4), _rand(3), _rand(3), _rand(3),
                                  np.abs(_rand(3)) + 0.5]),
    (K.Reshape((3, 8)), [_rand(2, 3, 4)]),
] + [(K.Unary(name, a, b), [_rand(3, 7) * 4]) for name, a, b in [
    ("relu", 0, 0), ("sigmoid", 0, 0), ("tanh", 0, 0), ("leaky_relu", 0.1, 0),
    ("elu", 0.7, 0), ("clip", -1.5, 2.0), ("hard_sigmoid", 0.2, 0.5), ("hard_swish", 0, 0)]],
    ids=lambda v: type(v).__name__ if isinstance(v, K.Kernel) else "")
def test_backward_matches_finite_differences(kernel, inputs):
    _check_all_inputs(kernel, inputs)


def test_lrn_matches_its_definition():
    x, size, alpha, beta, bias = _rand(2, 6, 2, 3), 3, 1e-1, 0.75, 2.0
    y = K.LRN(size, alpha, beta, bias).forward(x)[0]
    for c in range(6):
        lo, hi = max(0, c - (size - 1) // 2), min(5, c + size // 2)
        square = (x[:, lo:hi + 1] ** 2).sum(1)
        np.testing.assert_allclose(y[:, c], x[:, c] / (bias + alpha / size * square) ** beta)


def test_pool_output_size_follows_the_ceil_rule():
    assert K.pool_out(5, 2, 2, 1, 0, 0, False) == 2
    assert K.pool_out(5, 2, 2, 1, 0, 0, True) == 3
    assert K.pool_out(4, 2, 2, 1, 1, 1, True) == 3       # the last window starts in the input
    assert K.pool_out(6, 3, 3, 1, 0, 1, True) == 2       # it would start in the end pad: dropped
