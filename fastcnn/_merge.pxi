# Bindings of csrc/merge.c: the element-wise sum of two branches (a residual
# connection), forward and backward, and the executor's step for it.
import numpy as np
from libc.string cimport memcpy

from . cimport _fastcnn as c
from ._fastcnn cimport fptr
from ._checks import as_float32, check_shape
from ._config import get_num_threads


def add(a, b, *, reference=False):
    """Element-wise sum of two arrays of the same shape (a residual connection).

    Args:
        a, b: arrays of one shape, any real dtype (converted to float32).
        reference: use the plain reference kernel (the test oracle).

    Returns:
        float32 array ``a + b``.

    Raises:
        ValueError: the shapes differ (naming both).

    Example:
        >>> fastcnn.functional.add(np.ones(3), np.arange(3))
        array([1., 2., 3.], dtype=float32)
    """
    aa, ba = as_float32(a, "a"), as_float32(b, "b")
    if aa.shape != ba.shape:
        raise ValueError(f"add needs arrays of one shape. "
                         f"Received: a.shape={aa.shape}, b.shape={ba.shape}")
    y = np.empty_like(aa)
    cdef float *py = fptr(y)
    cdef const float *pa = fptr(aa)
    cdef const float *pb = fptr(ba)
    cdef int64_t n = y.size
    cdef int nt = get_num_threads()
    cdef bint ref = reference
    with nogil:
        if ref:
            c.add_forward_ref(py, pa, pb, n)
        else:
            c.add_forward(py, pa, pb, n, nt)
    return y


def add_backward(grad_y):
    """Gradients of ``add(a, b)``: ``(grad_y, grad_y)``, each a fresh float32 copy."""
    g = as_float32(grad_y, "grad_y")
    return g.copy(), g.copy()


# ---- the executor's step (fastcnn/_executor.pxi) ---------------------------------

ctypedef struct add_step_args:
    int x, y, dx, dy            # step_slots
    int x1, dx1                 # the second input and its gradient
    int64_t n


cdef int add_step_forward(const void *a, void **ptr, float **par, int need_dx,
                          int nt) noexcept nogil:
    cdef const add_step_args *p = <const add_step_args *> a
    c.add_forward(<float *> ptr[p.y], <float *> ptr[p.x], <float *> ptr[p.x1], p.n, nt)
    return c.FASTCNN_OK


cdef int add_step_backward(const void *a, void **ptr, float **par, int need_dx,
                           int nt) noexcept nogil:
    # both inputs get dy (copies: they may be accumulated into later)
    cdef const add_step_args *p = <const add_step_args *> a
    cdef size_t nbytes = p.n * sizeof(float)
    if not need_dx:
        return c.FASTCNN_OK
    if ptr[p.dx] != ptr[p.dy]:
        memcpy(ptr[p.dx], ptr[p.dy], nbytes)
    if ptr[p.dx1] != ptr[p.dy]:
        memcpy(ptr[p.dx1], ptr[p.dy], nbytes)
    return c.FASTCNN_OK


cdef class AddStep(Step):
    """add: y = x + x1; backward dx = dx1 = dy."""
    cdef add_step_args a

    def __init__(self, node, slots, int64_t n):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        self.a.x1, self.a.dx1, self.a.n = slots["x1"], slots["dx1"], n
        self.args, self.fwd, self.bwd = &self.a, add_step_forward, add_step_backward
