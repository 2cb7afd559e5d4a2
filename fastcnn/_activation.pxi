# Bindings of csrc/activation.c: ReLU and sigmoid, forward and backward.
import numpy as np
from libc.stdint cimport int64_t

from . cimport _fastcnn as c
from ._fastcnn cimport fptr
from ._checks import as_float32, check_shape
from ._config import get_num_threads

cdef enum Activation:
    RELU
    SIGMOID


def relu(x, *, reference=False):
    """Rectified linear unit, ``max(x, 0)``, element-wise (NaN passes through).

    Args:
        x: array of any shape, any real dtype.
        reference: use the plain reference kernel (the test oracle).

    Returns:
        float32 array of x's shape.

    Example:
        >>> fastcnn.functional.relu(np.array([-1.0, 2.0]))
        array([0., 2.], dtype=float32)
    """
    return _activation_forward(x, RELU, reference)


def sigmoid(x, *, reference=False):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, element-wise, stable for large |x|.

    Args:
        x: array of any shape, any real dtype.
        reference: use the plain reference kernel (the test oracle).

    Returns:
        float32 array of x's shape, in [0, 1].
    """
    return _activation_forward(x, SIGMOID, reference)


def relu_backward(grad_y, y, *, reference=False):
    """Gradient of relu: ``grad_y`` where relu's output ``y`` > 0, else 0.

    Args:
        grad_y: gradient of the loss with respect to relu's output.
        y: relu's output, same shape.

    Returns:
        float32 array: the gradient with respect to relu's input.
    """
    return _activation_backward(grad_y, y, RELU, reference)


def sigmoid_backward(grad_y, y, *, reference=False):
    """Gradient of sigmoid from its output ``y``: ``grad_y * y * (1 - y)``.

    Args:
        grad_y: gradient of the loss with respect to sigmoid's output.
        y: sigmoid's output, same shape.

    Returns:
        float32 array: the gradient with respect to sigmoid's input.
    """
    return _activation_backward(grad_y, y, SIGMOID, reference)


def _activation_forward(x, int which, bint reference):
    xa = as_float32(x, "x")
    y = _empty(xa.shape)
    cdef float *py = fptr(y)
    cdef const float *px = fptr(xa)
    cdef int64_t n = xa.size
    cdef int nt = get_num_threads()
    with nogil:
        if which == RELU:
            if reference:
                c.relu_forward_ref(py, px, n)
            else:
                c.relu_forward(py, px, n, nt)
        else:
            if reference:
                c.sigmoid_forward_ref(py, px, n)
            else:
                c.sigmoid_forward(py, px, n, nt)
    return y


def _activation_backward(grad_y, y, int which, bint reference):
    dy = as_float32(grad_y, "grad_y")
    ya = as_float32(y, "y")
    check_shape(ya, dy.shape, "y")
    dx = _empty(dy.shape)
    cdef float *pdx = fptr(dx)
    cdef const float *pdy = fptr(dy)
    cdef const float *pya = fptr(ya)
    cdef int64_t n = dy.size
    cdef int nt = get_num_threads()
    with nogil:
        if which == RELU:
            if reference:
                c.relu_backward_ref(pdx, pdy, pya, n)
            else:
                c.relu_backward(pdx, pdy, pya, n, nt)
        else:
            if reference:
                c.sigmoid_backward_ref(pdx, pdy, pya, n)
            else:
                c.sigmoid_backward(pdx, pdy, pya, n, nt)
    return dx


# ---- the executor's step (fastcnn/_executor.pxi) ---------------------------------

ctypedef struct activation_step_args:
    int x, y, dx, dy            # step_slots
    int64_t n
    int sigmoid


cdef int activation_step_forward(const void *a, void **ptr, float **par, int need_dx,
                                 int nt) noexcept nogil:
    cdef const activation_step_args *p = <const activation_step_args *> a
    if p.sigmoid:
        c.sigmoid_forward(<float *> ptr[p.y], <float *> ptr[p.x], p.n, nt)
    else:
        c.relu_forward(<float *> ptr[p.y], <float *> ptr[p.x], p.n, nt)
    return c.FASTCNN_OK


cdef int activation_step_backward(const void *a, void **ptr, float **par, int need_dx,
                                  int nt) noexcept nogil:
    cdef const activation_step_args *p = <const activation_step_args *> a
    if not need_dx:
        return c.FASTCNN_OK
    if p.sigmoid:
        c.sigmoid_backward(<float *> ptr[p.dx], <float *> ptr[p.dy], <float *> ptr[p.y], p.n, nt)
    else:
        c.relu_backward(<float *> ptr[p.dx], <float *> ptr[p.dy], <float *> ptr[p.y], p.n, nt)
    return c.FASTCNN_OK


cdef class ActivationStep(Step):
    """relu or sigmoid, element-wise; the gradient comes from the output y."""
    cdef activation_step_args a

    def __init__(self, node, slots, int64_t n, bint sigmoid):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        self.a.n, self.a.sigmoid = n, sigmoid
        self.args, self.fwd, self.bwd = &self.a, activation_step_forward, activation_step_backward
