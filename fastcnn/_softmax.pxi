# Bindings of csrc/softmax.c: softmax and log-softmax along one axis, forward and backward.
import math

import numpy as np
from libc.stdint cimport int64_t

from . cimport _fastcnn as c
from ._fastcnn cimport fptr
from ._checks import as_float32, as_int, check_shape
from ._config import get_num_threads


def softmax(x, dim, *, reference=False):
    """Softmax along ``dim`` (torch.nn.functional.softmax): ``exp(x - max) / sum``.

    Numerically stable for any magnitude (exp of non-positive numbers only).
    A NaN makes its whole line along ``dim`` NaN, as does a line of all -inf
    or one holding +inf, as in PyTorch; a -inf among finite values gives 0.

    Args:
        x: array of any shape with at least one dimension, any real dtype
            (converted once to float32).
        dim: the axis to normalize over; negative counts from the end.
        reference: use the plain reference kernel (the test oracle).

    Returns:
        float32 array of x's shape whose lines along ``dim`` sum to 1.

    Raises:
        ValueError: x 0-dimensional or empty, or dim outside [-x.ndim, x.ndim).
        TypeError: non-numeric x or non-integer dim.

    Example:
        >>> fastcnn.functional.softmax(np.array([[0.0, np.log(3.0)]]), dim=1)
        array([[0.25, 0.75]], dtype=float32)
    """
    return _softmax_forward(x, dim, False, reference)


def log_softmax(x, dim, *, reference=False):
    """Log-softmax along ``dim`` (torch.nn.functional.log_softmax):
    ``(x - max) - log(sum(exp(x - max)))``.

    Stable for any magnitude; a -inf among finite values gives -inf, NaN
    rules as :func:`softmax`.

    Args:
        x: array of any shape with at least one dimension, any real dtype.
        dim: the axis to normalize over; negative counts from the end.
        reference: use the plain reference kernel (the test oracle).

    Returns:
        float32 array of x's shape.

    Raises:
        ValueError: x 0-dimensional or empty, or dim outside [-x.ndim, x.ndim).
        TypeError: non-numeric x or non-integer dim.

    Example:
        >>> fastcnn.functional.log_softmax(np.array([0.0, 0.0]), dim=0)
        array([-0.6931472, -0.6931472], dtype=float32)
    """
    return _softmax_forward(x, dim, True, reference)


def softmax_backward(grad_y, y, dim, *, reference=False):
    """Gradient of softmax from its output ``y``: ``y * (grad_y - sum(grad_y * y))``
    with the sum along ``dim``.

    Args:
        grad_y: gradient of the loss with respect to softmax's output.
        y: softmax's output, same shape.
        dim: the axis softmax normalized over.
        reference: use the plain reference kernel (the test oracle).

    Returns:
        float32 array: the gradient with respect to softmax's input.

    Raises:
        ValueError: shapes that differ, empty arrays, or a bad dim (as softmax).
        TypeError: non-numeric arrays or non-integer dim.
    """
    return _softmax_backward(grad_y, y, dim, False, reference)


def log_softmax_backward(grad_y, y, dim, *, reference=False):
    """Gradient of log_softmax from its output ``y``:
    ``grad_y - exp(y) * sum(grad_y)`` with the sum along ``dim``.

    Args:
        grad_y: gradient of the loss with respect to log_softmax's output.
        y: log_softmax's output, same shape.
        dim: the axis log_softmax normalized over.
        reference: use the plain reference kernel (the test oracle).

    Returns:
        float32 array: the gradient with respect to log_softmax's input.

    Raises:
        ValueError: shapes that differ, empty arrays, or a bad dim (as softmax).
        TypeError: non-numeric arrays or non-integer dim.
    """
    return _softmax_backward(grad_y, y, dim, True, reference)


def _softmax_dims(shape, dim, what="x"):
    """(outer, D, inner) of normalizing an array of `shape` along `dim`."""
    d = as_int(dim, "dim")
    nd = len(shape)
    if nd == 0:
        raise ValueError(f"{what} must have at least one dimension. Received: {what}.shape=()")
    if not -nd <= d < nd:
        raise ValueError(f"dim must be in [{-nd}, {nd}) for {what}.shape={tuple(shape)}. "
                         f"Received: dim={dim!r}")
    d %= nd
    return math.prod(shape[:d]), shape[d], math.prod(shape[d + 1:])


def _softmax_forward(x, dim, bint is_log, bint reference):
    arr = np.asarray(x)
    outer, D, inner = _softmax_dims(arr.shape, dim)
    xa = as_float32(arr, "x")
    y = _empty(xa.shape)
    cdef float *py = fptr(y)
    cdef const float *px = fptr(xa)
    cdef int64_t o = outer, n = D, i = inner
    cdef int nt = get_num_threads()
    with nogil:
        if reference:
            c.softmax_forward_ref(py, px, o, n, i, is_log)
        else:
            c.softmax_forward(py, px, o, n, i, is_log, nt)
    return y


def _softmax_backward(grad_y, y, dim, bint is_log, bint reference):
    dy = as_float32(grad_y, "grad_y")
    ya = as_float32(y, "y")
    check_shape(ya, dy.shape, "y")
    outer, D, inner = _softmax_dims(dy.shape, dim, "grad_y")
    dx = _empty(dy.shape)
    cdef float *pdx = fptr(dx)
    cdef const float *pdy = fptr(dy)
    cdef const float *pya = fptr(ya)
    cdef int64_t o = outer, n = D, i = inner
    cdef int nt = get_num_threads()
    with nogil:
        if reference:
            c.softmax_backward_ref(pdx, pdy, pya, o, n, i, is_log)
        else:
            c.softmax_backward(pdx, pdy, pya, o, n, i, is_log, nt)
    return dx


# ---- the executor's step (fastcnn/_executor.pxi) ---------------------------------

ctypedef struct softmax_step_args:
    int x, y, dx, dy            # step_slots
    int64_t outer, D, inner
    int is_log


cdef int softmax_step_forward(const void *a, void **ptr, float **par, int need_dx,
                              int nt) noexcept nogil:
    cdef const softmax_step_args *p = <const softmax_step_args *> a
    c.softmax_forward(<float *> ptr[p.y], <float *> ptr[p.x], p.outer, p.D, p.inner, p.is_log, nt)
    return c.FASTCNN_OK


cdef int softmax_step_backward(const void *a, void **ptr, float **par, int need_dx,
                               int nt) noexcept nogil:
    cdef const softmax_step_args *p = <const softmax_step_args *> a
    if not need_dx:
        return c.FASTCNN_OK
    c.softmax_backward(<float *> ptr[p.dx], <float *> ptr[p.dy], <float *> ptr[p.y], p.outer,
                       p.D, p.inner, p.is_log, nt)
    return c.FASTCNN_OK


cdef class SoftmaxStep(Step):
    """softmax or log_softmax along one axis; the gradient comes from the output y."""
    cdef softmax_step_args a

    def __init__(self, node, slots, tuple shape):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        self.a.outer, self.a.D, self.a.inner = _softmax_dims(shape, node.attrs["dim"])
        self.a.is_log = bool(node.attrs["log"])
        self.args, self.fwd, self.bwd = &self.a, softmax_step_forward, softmax_step_backward
