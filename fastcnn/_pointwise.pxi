# Bindings of csrc/pointwise.c: tanh, leaky ReLU, hardtanh (ReLU6),
# hardsigmoid, hardswish, SiLU and GELU, forward and backward (from the
# forward's input), and the executor's step for them.
import numpy as np

from . cimport _fastcnn as c
from ._fastcnn cimport fptr
from ._checks import as_float, as_float32, check_shape
from ._config import get_num_threads

# kind name -> (C kind, parameter names)
POINTWISE_KINDS = {
    "tanh": (c.POINTWISE_TANH, ()),
    "leaky_relu": (c.POINTWISE_LEAKY_RELU, ("negative_slope",)),
    "hardtanh": (c.POINTWISE_HARDTANH, ("min_val", "max_val")),
    "hardsigmoid": (c.POINTWISE_HARDSIGMOID, ()),
    "hardswish": (c.POINTWISE_HARDSWISH, ()),
    "silu": (c.POINTWISE_SILU, ()),
    "gelu": (c.POINTWISE_GELU, ()),
    "gelu_tanh": (c.POINTWISE_GELU_TANH, ()),
}


def pointwise(kind, x, a=0.0, b=0.0):
    """``kind`` (a key of POINTWISE_KINDS) applied to x element-wise; a, b its parameters."""
    xa = as_float32(x, "x")
    y = _empty(xa.shape)
    _pointwise_run(kind, y, xa, None, a, b)
    return y


def pointwise_backward(kind, grad_y, x, a=0.0, b=0.0):
    """The gradient of ``pointwise(kind, x, a, b)`` with respect to x, from grad_y."""
    xa = as_float32(x, "x")
    dy = as_float32(grad_y, "grad_y")
    check_shape(dy, xa.shape, "grad_y")
    dx = _empty(xa.shape)
    _pointwise_run(kind, dx, xa, dy, a, b)
    return dx


def _pointwise_run(kind, out, x, dy, a, b):
    cdef int k = POINTWISE_KINDS[kind][0]
    cdef float fa = as_float(a, "a"), fb = as_float(b, "b")
    cdef float *po = fptr(out)
    cdef const float *px = fptr(x)
    cdef const float *pdy = NULL if dy is None else fptr(dy)
    cdef int64_t n = out.size
    cdef int nt = get_num_threads()
    with nogil:
        if pdy == NULL:
            c.pointwise_forward(k, po, px, n, fa, fb, nt)
        else:
            c.pointwise_backward(k, po, pdy, px, n, fa, fb, nt)


def tanh(x):
    """Hyperbolic tangent, element-wise (float32)."""
    return pointwise("tanh", x)


def leaky_relu(x, negative_slope=0.01):
    """``x`` where x > 0, else ``negative_slope * x``."""
    return pointwise("leaky_relu", x, as_float(negative_slope, "negative_slope"))


def hardtanh(x, min_val=-1.0, max_val=1.0):
    """x clamped to [min_val, max_val] (min_val <= max_val, as in torch)."""
    return pointwise("hardtanh", x, *_hardtanh_bounds(min_val, max_val))


def relu6(x):
    """x clamped to [0, 6]."""
    return pointwise("hardtanh", x, 0.0, 6.0)


def hardsigmoid(x):
    """0 below -3, 1 above 3, x / 6 + 1/2 between."""
    return pointwise("hardsigmoid", x)


def hardswish(x):
    """``x * hardsigmoid(x)``."""
    return pointwise("hardswish", x)


def silu(x):
    """``x * sigmoid(x)`` (swish)."""
    return pointwise("silu", x)


def gelu(x, approximate="none"):
    """Gaussian error linear unit: exact (``approximate='none'``) or its tanh form."""
    return pointwise(_gelu_kind(approximate), x)


def tanh_backward(grad_y, x):
    """Gradient of tanh at its input x."""
    return pointwise_backward("tanh", grad_y, x)


def leaky_relu_backward(grad_y, x, negative_slope=0.01):
    """Gradient of leaky_relu at its input x."""
    return pointwise_backward("leaky_relu", grad_y, x, as_float(negative_slope, "negative_slope"))


def hardtanh_backward(grad_y, x, min_val=-1.0, max_val=1.0):
    """Gradient of hardtanh at its input x (0 at and beyond the bounds, as in torch)."""
    return pointwise_backward("hardtanh", grad_y, x, *_hardtanh_bounds(min_val, max_val))


def _hardtanh_bounds(min_val, max_val):
    lo, hi = as_float(min_val, "min_val"), as_float(max_val, "max_val")
    if lo > hi:
        raise ValueError(f"min_val must not be greater than max_val. "
                         f"Received: min_val={min_val!r}, max_val={max_val!r}")
    return lo, hi


def relu6_backward(grad_y, x):
    """Gradient of relu6 at its input x."""
    return pointwise_backward("hardtanh", grad_y, x, 0.0, 6.0)


def hardsigmoid_backward(grad_y, x):
    """Gradient of hardsigmoid at its input x."""
    return pointwise_backward("hardsigmoid", grad_y, x)


def hardswish_backward(grad_y, x):
    """Gradient of hardswish at its input x."""
    return pointwise_backward("hardswish", grad_y, x)


def silu_backward(grad_y, x):
    """Gradient of silu at its input x."""
    return pointwise_backward("silu", grad_y, x)


def gelu_backward(grad_y, x, approximate="none"):
    """Gradient of gelu at its input x."""
    return pointwise_backward(_gelu_kind(approximate), grad_y, x)


def _gelu_kind(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh'. "
                         f"Received: approximate={approximate!r}")
    return "gelu" if approximate == "none" else "gelu_tanh"


# ---- the executor's step (fastcnn/_executor.pxi) ---------------------------------

ctypedef struct pointwise_step_args:
    int x, y, dx, dy            # step_slots
    int kind
    int64_t n
    float a, b


cdef int pointwise_step_forward(const void *a, void **ptr, float **par, int need_dx,
                                int nt) noexcept nogil:
    cdef const pointwise_step_args *p = <const pointwise_step_args *> a
    c.pointwise_forward(p.kind, <float *> ptr[p.y], <float *> ptr[p.x], p.n, p.a, p.b, nt)
    return c.FASTCNN_OK


cdef int pointwise_step_backward(const void *a, void **ptr, float **par, int need_dx,
                                 int nt) noexcept nogil:
    cdef const pointwise_step_args *p = <const pointwise_step_args *> a
    if need_dx:
        c.pointwise_backward(p.kind, <float *> ptr[p.dx], <float *> ptr[p.dy],
                             <float *> ptr[p.x], p.n, p.a, p.b, nt)
    return c.FASTCNN_OK


cdef class PointwiseStep(Step):
    """An element-wise activation of csrc/pointwise.c (kind and parameters in attrs)."""
    cdef pointwise_step_args a

    def __init__(self, node, slots, int64_t n):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        self.a.kind = POINTWISE_KINDS[node.attrs["kind"]][0]
        self.a.n, self.a.a, self.a.b = n, node.attrs.get("a", 0.0), node.attrs.get("b", 0.0)
        self.args, self.fwd = &self.a, pointwise_step_forward
        self.bwd = pointwise_step_backward
