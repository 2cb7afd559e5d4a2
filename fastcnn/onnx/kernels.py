"""Plain numpy kernels for the ONNX ops that fastcnn has no native op kind
for yet (grouped or dilated convolution, pooling with asymmetric pads or
ceil_mode, LRN, broadcasting arithmetic, concatenation, ...).

Each kernel is a small class built from the node's attributes, with
``forward(*arrays) -> (y, saved)`` and ``backward(saved, dy) -> [grad per
input]`` (None for inputs without a gradient). The importer runs them as
Python layers of the graph (the "layer" op kind), so models using them train
too, and it folds constant sub-graphs with the same ``forward``.
"""
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import functional as F

__all__ = []


def unbroadcast(g, shape):
    """Sum the broadcast gradient ``g`` back to an operand of ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axes, keepdims=True) if axes else g


class Kernel:
    """Base: ``forward`` returns (y, saved); ``backward`` one gradient per input."""

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, saved, dy):
        raise NotImplementedError(f"{type(self).__name__} has no backward")


# -- element-wise --------------------------------------------------------------------

def erf(x):
    """The error function in float64 (Abramowitz and Stegun 7.1.26, absolute
    error below 1.5e-7: float32's precision; numpy has no erf)."""
    x = np.asarray(x, np.float64)
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                         + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


class Unary(Kernel):
    """y = f(x) element-wise; ``name`` one of FUNCS (forward, derivative from x and y)."""
    FUNCS = {
        "relu": (lambda x, a, b: np.maximum(x, 0), lambda x, y, a, b: x > 0),
        "sigmoid": (lambda x, a, b: 1 / (1 + np.exp(-x)), lambda x, y, a, b: y * (1 - y)),
        "tanh": (lambda x, a, b: np.tanh(x), lambda x, y, a, b: 1 - y * y),
        "leaky_relu": (lambda x, a, b: np.where(x > 0, x, a * x),
                       lambda x, y, a, b: np.where(x > 0, 1.0, a)),
        "elu": (lambda x, a, b: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))),
                lambda x, y, a, b: np.where(x > 0, 1.0, y + a)),
        "clip": (lambda x, a, b: np.clip(x, a, b), lambda x, y, a, b: (x >= a) & (x <= b)),
        "hard_sigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1),
                         lambda x, y, a, b: np.where((a * x + b > 0) & (a * x + b < 1), a, 0.0)),
        "hard_swish": (lambda x, a, b: x * np.clip(x / 6 + 0.5, 0, 1),
                       lambda x, y, a, b: np.where(x < -3, 0.0, np.where(x > 3, 1.0,
                                                                         x / 3 + 0.5))),
        "sqrt": (lambda x, a, b: np.sqrt(x), lambda x, y, a, b: 0.5 / y),
        "erf": (lambda x, a, b: erf(x),
                lambda x, y, a, b: 2 / np.sqrt(np.pi) * np.exp(-np.square(x))),
        "gelu": (lambda x, a, b: F.gelu(x), lambda x, y, a, b: F.gelu_backward(np.ones_like(x), x)),
        "gelu_tanh": (lambda x, a, b: F.gelu(x, "tanh"),
                      lambda x, y, a, b: F.gelu_backward(np.ones_like(x), x, "tanh")),
    }

    def __init__(self, name, a=0.0, b=0.0):
        self.name, self.a, self.b = name, a, b

    def forward(self, x):
        y = self.FUNCS[self.name][0](x, self.a, self.b).astype(x.dtype, copy=False)
        return y, (x, y)

    def backward(self, saved, dy):
        x, y = saved
        return [dy * self.FUNCS[self.name][1](x, y, self.a, self.b)]


class PRelu(Kernel):
    """y = x where x > 0, else slope * x (slope broadcast to x)."""

    def forward(self, x, slope):
        return np.where(x > 0, x, slope * x), (x, slope)

    def backward(self, saved, dy):
        x, slope = saved
        return [np.where(x > 0, dy, dy * slope),
                unbroadcast(np.where(x > 0, 0, dy * x), slope.shape)]


class Binary(Kernel):
    """Add, Sub, Mul, Div with numpy broadcasting."""

    def __init__(self, op):
        self.op = op

    def forward(self, a, b):
        ufunc = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[self.op]
        return ufunc(a, b), (a, b)

    def backward(self, saved, dy):
        a, b = saved
        ga, gb = {"Add": lambda: (dy, dy), "Sub": lambda: (dy, -dy),
                  "Mul": lambda: (dy * b, dy * a),
                  "Div": lambda: (dy / b, -dy * a / (b * b))}[self.op]()
        return [unbroadcast(ga, np.shape(a)), unbroadcast(gb, np.shape(b))]


class Sum(Kernel):
    """The broadcast sum of any number of inputs."""

    def forward(self, *xs):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y, [np.shape(x) for x in xs]

    def backward(self, shapes, dy):
        return [unbroadcast(dy, s) for s in shapes]


class Softmax(Kernel):
    """Softmax or log-softmax over ``axis``; ``coerce`` (before opset 13): over all
    dimensions from ``axis`` on, as one."""

    def __init__(self, axis, log, coerce):
        self.axis, self.log, self.coerce = axis, log, coerce

    def forward(self, x):
        shape = x.shape
        axis = self.axis % max(x.ndim, 1)
        if self.coerce:
            x, axis = x.reshape(math.prod(shape[:axis]), -1), 1
        z = x - x.max(axis, keepdims=True)
        lse = np.log(np.exp(z).sum(axis, keepdims=True))
        y = z - lse if self.log else np.exp(z - lse)
        return y.reshape(shape), (y, axis)

    def backward(self, saved, dy):
        y, axis = saved
        g = dy.reshape(y.shape)
        if self.log:
            dx = g - np.exp(y) * g.sum(axis, keepdims=True)
        else:
            dx = y * (g - (g * y).sum(axis, keepdims=True))
        return [dx.reshape(dy.shape)]


class LRN(Kernel):
    """Local response normalization across channels (NCHW)."""

    def __init__(self, size, alpha, beta, bias):
        self.size, self.alpha, self.beta, self.bias = size, alpha, beta, bias

    def _window(self, a, lo, hi):
        """sum over channels c' in [c - lo, c + hi] for each channel c."""
        c = np.cumsum(np.pad(a, [(0, 0), (lo + 1, hi)] + [(0, 0)] * (a.ndim - 2)), axis=1)
        return c[:, lo + hi + 1:] - c[:, :a.shape[1]]

    def forward(self, x):
        lo, hi = (self.size - 1) // 2, math.ceil((self.size - 1) / 2)
        d = self.bias + self.alpha / self.size * self._window(x * x, lo, hi)
        y = x * d ** -self.beta
        return y, (x, d, lo, hi)

    def backward(self, saved, dy):
        x, d, lo, hi = saved
        t = dy * x * d ** (-self.beta - 1)
        return [dy * d ** -self.beta
                - 2 * self.alpha * self.beta / self.size * x * self._window(t, hi, lo)]


class BatchNormInference(Kernel):
    """(x - mean) / sqrt(var + eps) * scale + bias over axis 1 (any rank)."""

    def __init__(self, eps):
        self.eps = eps

    def forward(self, x, scale, bias, mean, var):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        inv = (1 / np.sqrt(var + self.eps)).reshape(shape)
        xhat = (x - mean.reshape(shape)) * inv
        return xhat * scale.reshape(shape) + bias.reshape(shape), (xhat, inv, scale, shape)

    def backward(self, saved, dy):
        xhat, inv, scale, shape = saved
        axes = (0,) + tuple(range(2, dy.ndim))
        return [dy * scale.reshape(shape) * inv, (dy * xhat).sum(axes), dy.sum(axes), None, None]


# -- layout --------------------------------------------------------------------------

class Concat(Kernel):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        return np.concatenate(xs, self.axis), [x.shape[self.axis] for x in xs]

    def backward(self, sizes, dy):
        return np.split(dy, np.cumsum(sizes)[:-1], self.axis)


class Transpose(Kernel):
    def __init__(self, perm):
        self.perm = perm

    def forward(self, x):
        perm = self.perm if self.perm is not None else tuple(range(x.ndim))[::-1]
        return np.ascontiguousarray(x.transpose(perm)), perm

    def backward(self, perm, dy):
        return [np.ascontiguousarray(dy.transpose(np.argsort(perm)))]


class Reshape(Kernel):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(self.shape), x.shape

    def backward(self, shape, dy):
        return [dy.reshape(shape)]


class Pad(Kernel):
    """Constant padding; ``pads``: (before, after) per dimension (negative crops)."""

    def __init__(self, pads, value):
        self.pads, self.value = pads, value

    def forward(self, x):
        grow = [(max(a, 0), max(b, 0)) for a, b in self.pads]
        y = np.pad(x, grow, constant_values=self.value)
        crop = tuple(slice(max(-a, 0), y.shape[i] - max(-b, 0))
                     for i, (a, b) in enumerate(self.pads))
        return np.ascontiguousarray(y[crop]), x.shape

    def backward(self, shape, dy):
        full = np.pad(dy, [(max(-a, 0), max(-b, 0)) for a, b in self.pads])
        inner = tuple(slice(max(a, 0), max(a, 0) + n) for (a, _), n in zip(self.pads, shape))
        return [np.ascontiguousarray(full[inner])]


class Slice(Kernel):
    """x[slices] (ONNX Slice: one slice per axis, numpy's clamping)."""

    def __init__(self, slices):
        self.slices = slices

    def forward(self, x):
        return np.ascontiguousarray(x[self.slices]), x.shape

    def backward(self, shape, dy):
        dx = np.zeros(shape, dy.dtype)
        dx[self.slices] = dy
        return [dx]


class Gather(Kernel):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, data, indices):
        idx = np.asarray(indices).astype(np.int64)
        idx = np.where(idx < 0, idx + data.shape[self.axis], idx)
        return np.take(data, idx, axis=self.axis), (data.shape, idx)

    def backward(self, saved, dy):
        shape, idx = saved
        dx = np.zeros(shape, dy.dtype)
        moved = np.moveaxis(dx, self.axis, 0)
        dmoved = np.moveaxis(dy, tuple(range(self.axis, self.axis + idx.ndim)),
                             tuple(range(idx.ndim)))
        np.add.at(moved, idx, dmoved)
        return [dx, None]


class ReduceMean(Kernel):
    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        axes = tuple(range(x.ndim)) if self.axes is None else tuple(a % x.ndim for a in self.axes)
        return x.mean(axes, keepdims=self.keepdims), (x.shape, axes)

    def backward(self, saved, dy):
        shape, axes = saved
        n = math.prod(shape[a] for a in axes)
        if not self.keepdims:
            dy = np.expand_dims(dy, axes)
        return [np.broadcast_to(dy / n, shape).copy()]


# -- matrix products -----------------------------------------------------------------

class MatMul(Kernel):
    """numpy.matmul semantics (batch dimensions broadcast; 1-d operands promoted)."""

    def forward(self, a, b):
        return np.matmul(a, b), (a, b)

    def backward(self, saved, dy):
        a, b = saved
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = dy.reshape(np.matmul(a2, b2).shape)
        ga = np.matmul(g, np.swapaxes(b2, -1, -2))
        gb = np.matmul(np.swapaxes(a2, -1, -2), g)
        ga = unbroadcast(ga, a2.shape).reshape(a.shape)
        gb = unbroadcast(gb, b2.shape).reshape(b.shape)
        return [ga, gb]


class Gemm(Kernel):
    """alpha * A' @ B' + beta * C, A' = A.T if transA, B' likewise."""

    def __init__(self, alpha, beta, trans_a, trans_b):
        self.alpha, self.beta, self.ta, self.tb = alpha, beta, trans_a, trans_b

    def forward(self, a, b, c=None):
        y = self.alpha * ((a.T if self.ta else a) @ (b.T if self.tb else b))
        if c is not None:
            y = y + self.beta * c
        return y, (a, b, None if c is None else np.shape(c))

    def backward(self, saved, dy):
        a, b, cshape = saved
        a2, b2 = (a.T if self.ta else a), (b.T if self.tb else b)
        ga2, gb2 = self.alpha * dy @ b2.T, self.alpha * a2.T @ dy
        grads = [ga2.T if self.ta else ga2, gb2.T if self.tb else gb2]
        return grads + ([] if cshape is None else [unbroadcast(self.beta * dy, cshape)])


# -- convolution and pooling (NCHW, 2-d) -----------------------------------------------

def _windows(xp, kernel, stride, dilation, out):
    """A strided view (N, C, P, Q, R, S) of the padded input's windows."""
    sn, sc, sh, sw = xp.strides
    return as_strided(xp, xp.shape[:2] + tuple(out) + tuple(kernel),
                      (sn, sc, sh * stride[0], sw * stride[1],
                       sh * dilation[0], sw * dilation[1]), writeable=False)


def _scatter_windows(dcols, shape, stride, dilation):
    """Adjoint of _windows: add each window's gradient (N, C, P, Q, R, S) into an
    array of the padded input's ``shape``."""
    dxp = np.zeros(shape, dcols.dtype)
    P, Q, R, S = dcols.shape[2:]
    for r in range(R):
        for s in range(S):
            h0, w0 = r * dilation[0], s * dilation[1]
            dxp[:, :, h0:h0 + stride[0] * (P - 1) + 1:stride[0],
                w0:w0 + stride[1] * (Q - 1) + 1:stride[1]] += dcols[:, :, :, :, r, s]
    return dxp


def pool_out(size, k, s, d, pad_begin, pad_end, ceil_mode):
    """Output length of a pooling window (ONNX / PyTorch rule: in ceil mode
    the last window must start inside the input or the leading pad)."""
    span = size + pad_begin + pad_end - (k - 1) * d - 1
    n = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (n - 1) * s >= size + pad_begin:
        n -= 1
    return n


class Conv(Kernel):
    """2-d convolution with groups, dilation, stride and (asymmetric) zero pads
    ``pads`` = (top, left, bottom, right). Inputs x, w (K, C/groups, R, S), bias.
    A depthwise convolution (one channel per group) runs as R*S shifted
    multiply-adds; the others as one einsum over the windows."""

    def __init__(self, stride, pads, dilation, groups):
        self.stride, self.pads, self.dilation, self.groups = stride, pads, dilation, groups

    def _shifted(self, xp, r, s, out):
        """The input values tap (r, s) meets at every output position: (N, C, P, Q)."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        return xp[:, :, r * dh:r * dh + sh * (out[0] - 1) + 1:sh,
                  s * dw:s * dw + sw * (out[1] - 1) + 1:sw]

    def forward(self, x, w, b=None):
        t, l, bo, r = self.pads
        xp = np.pad(x, [(0, 0), (0, 0), (t, bo), (l, r)])
        R, S = w.shape[2:]
        out = [(xp.shape[2 + i] - self.dilation[i] * ((R, S)[i] - 1) - 1) // self.stride[i] + 1
               for i in range(2)]
        N, G, K = x.shape[0], self.groups, w.shape[0]
        if G == K == x.shape[1]:
            y = np.zeros((N, K, *out), np.result_type(x, w))
            for r, s in np.ndindex(R, S):
                y += self._shifted(xp, r, s, out) * w[:, 0, r, s].reshape(1, -1, 1, 1)
        else:
            cols = _windows(xp, (R, S), self.stride, self.dilation, out)
            cg = cols.reshape(N, G, x.shape[1] // G, *cols.shape[2:])
            wg = w.reshape(G, K // G, *w.shape[1:])
            y = np.einsum("ngcpqrs,gkcrs->ngkpq", cg, wg, optimize=True).reshape(N, K, *out)
        if b is not None:
            y = y + b.reshape(1, -1, 1, 1)
        return y.astype(x.dtype, copy=False), (x, xp, w, b is not None)

    def backward(self, saved, dy):
        x, xp, w, has_bias = saved
        N, K, P, Q = dy.shape
        G, (R, S) = self.groups, w.shape[2:]
        if G == K == x.shape[1]:
            dw, dxp = np.zeros_like(w), np.zeros_like(xp, dtype=dy.dtype)
            for r, s in np.ndindex(R, S):
                dw[:, 0, r, s] = (dy * self._shifted(xp, r, s, (P, Q))).sum((0, 2, 3))
                self._shifted(dxp, r, s, (P, Q))[...] += dy * w[:, 0, r, s].reshape(1, -1, 1, 1)
        else:
            cols = _windows(xp, (R, S), self.stride, self.dilation, (P, Q))
            cg = cols.reshape(N, G, x.shape[1] // G, *cols.shape[2:])
            wg = w.reshape(G, K // G, *w.shape[1:])
            dyg = dy.reshape(N, G, K // G, P, Q)
            dw = np.einsum("ngkpq,ngcpqrs->gkcrs", dyg, cg, optimize=True).reshape(w.shape)
            dcols = np.einsum("ngkpq,gkcrs->ngcpqrs", dyg, wg, optimize=True)
            dxp = _scatter_windows(dcols.reshape(N, x.shape[1], P, Q, R, S), xp.shape,
                                   self.stride, self.dilation)
        t, l = self.pads[:2]
        dx = np.ascontiguousarray(dxp[:, :, t:t + x.shape[2], l:l + x.shape[3]])
        return [dx, dw] + ([dy.sum((0, 2, 3))] if has_bias else [])


class Pool(Kernel):
    """Max or average pooling; ``pads`` = (top, left, bottom, right)."""

    def __init__(self, mode, kernel, stride, pads, dilation=(1, 1), ceil_mode=False,
                 count_include_pad=False):
        self.mode, self.kernel, self.stride, self.pads = mode, kernel, stride, pads
        self.dilation, self.ceil_mode = dilation, ceil_mode
        self.count_include_pad = count_include_pad

    def _geometry(self, shape):
        t, l, b, r = self.pads
        out = [pool_out(shape[2 + i], self.kernel[i], self.stride[i], self.dilation[i],
                        (t, l)[i], (b, r)[i], self.ceil_mode) for i in range(2)]
        need = [(out[i] - 1) * self.stride[i] + (self.kernel[i] - 1) * self.dilation[i] + 1
                for i in range(2)]
        extra = [max(0, need[i] - (shape[2 + i] + (t, l)[i] + (b, r)[i])) for i in range(2)]
        return out, [(0, 0), (0, 0), (t, b + extra[0]), (l, r + extra[1])]

    def forward(self, x):
        out, padding = self._geometry(x.shape)
        fill = -np.inf if self.mode == "max" else 0.0
        xp = np.pad(x, padding, constant_values=fill)
        cols = _windows(xp, self.kernel, self.stride, self.dilation, out)
        if self.mode == "max":
            flat = cols.reshape(*cols.shape[:4], -1)
            arg = flat.argmax(-1)
            y = np.take_along_axis(flat, arg[..., None], -1)[..., 0]
            return y.astype(x.dtype), (x.shape, xp.shape, arg, None)
        count = self._count(x.shape, padding, out)
        y = cols.sum((-2, -1)) / count
        return y.astype(x.dtype), (x.shape, xp.shape, None, count)

    def _count(self, shape, padding, out):
        """The divisor of each window: its cells inside the input (or inside the
        declared pads, with count_include_pad)."""
        t, l, b, r = self.pads
        ones = np.ones((1, 1) + tuple(shape[2:]), np.float32)
        if self.count_include_pad:
            ones = np.pad(ones, [(0, 0), (0, 0), (t, b), (l, r)], constant_values=1.0)
            padding = [(0, 0), (0, 0), (0, padding[2][1] - b), (0, padding[3][1] - r)]
        mask = np.pad(ones, padding)
        return _windows(mask, self.kernel, self.stride, self.dilation, out).sum((-2, -1))

    def backward(self, saved, dy):
        shape, padded, arg, count = saved
        R, S = self.kernel
        if self.mode == "max":
            dcols = np.zeros(dy.shape + (R * S,), dy.dtype)
            np.put_along_axis(dcols, arg[..., None], dy[..., None], -1)
            dcols = dcols.reshape(*dy.shape, R, S)
        else:
            dcols = np.broadcast_to((dy / count)[..., None, None], dy.shape + (R, S))
        dxp = _scatter_windows(dcols, padded, self.stride, self.dilation)
        t, l = self.pads[:2]
        return [np.ascontiguousarray(dxp[:, :, t:t + shape[2], l:l + shape[3]])]
