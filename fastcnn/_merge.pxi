# Bindings of csrc/merge.c: the element-wise sum of two branches (a residual
# connection), forward and backward; dropout (a product with a random mask);
# and the executor's steps for them.
import numpy as np
from libc.string cimport memcpy

from . cimport _fastcnn as c
from ._fastcnn cimport fptr
from ._checks import as_float, as_float32, check_shape
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


def dropout(x, p=0.5, training=True, *, generator=None, return_mask=False):
    """Dropout (torch.nn.functional.dropout): in training, each element is
    zeroed with probability p and the others scaled by 1 / (1 - p); the
    identity otherwise.

    Args:
        x: array of any shape, any real dtype.
        p: the probability of zeroing, in [0, 1).
        training: apply it. Default True.
        generator: a numpy Generator for the mask; default fastcnn's seeded
            generator (fastcnn.manual_seed).
        return_mask: also return the mask (for dropout_backward).

    Returns:
        float32 array of x's shape (and the float32 mask: 0 or 1 / (1 - p)).
    """
    xa = as_float32(x, "x")
    p = _dropout_p(p)           # checked in eval mode too, as torch does
    mask = dropout_mask(xa.shape, p, generator) if training else np.ones_like(xa)
    y = np.empty_like(xa)
    _merge_mul(y, xa, mask)
    return (y, mask) if return_mask else y


def dropout_backward(grad_y, mask):
    """Gradient of dropout: ``grad_y * mask``."""
    dy = as_float32(grad_y, "grad_y")
    m = as_float32(mask, "mask")
    check_shape(m, dy.shape, "mask")
    dx = np.empty_like(dy)
    _merge_mul(dx, dy, m)
    return dx


def dropout_mask(shape, p, generator=None):
    """A float32 dropout mask of ``shape``: 0 with probability p, else 1 / (1 - p)."""
    p = _dropout_p(p)
    if generator is None:
        from . import layers
        generator = layers._generator
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"generator must be a numpy.random.Generator or None. "
                        f"Received: generator={generator!r}")
    # an array even for shape (): a numpy scalar here would reach C as a bad pointer
    mask = np.asarray(generator.random(shape, dtype=np.float32) >= p).astype(np.float32)
    mask *= np.float32(1.0 / (1.0 - p))
    return mask


def _dropout_p(p):
    p = as_float(p, "p")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1). Received: p={p!r}")
    return p


cdef _merge_mul(out, a, b):
    cdef float *po = fptr(out)
    cdef const float *pa = fptr(a)
    cdef const float *pb = fptr(b)
    cdef int64_t n = out.size
    cdef int nt = get_num_threads()
    with nogil:
        c.mul_forward(po, pa, pb, n, nt)


# ---- the executor's steps (fastcnn/_executor.pxi) --------------------------------

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


ctypedef struct dropout_step_args:
    int x, y, dx, dy            # step_slots
    int64_t n


cdef int dropout_step_forward(const void *a, void **ptr, float **par, int need_dx,
                              int nt) noexcept nogil:
    # par: the mask drawn for this pass
    cdef const dropout_step_args *p = <const dropout_step_args *> a
    c.mul_forward(<float *> ptr[p.y], <float *> ptr[p.x], par[0], p.n, nt)
    return c.FASTCNN_OK


cdef int dropout_step_backward(const void *a, void **ptr, float **par, int need_dx,
                               int nt) noexcept nogil:
    cdef const dropout_step_args *p = <const dropout_step_args *> a
    if need_dx:
        c.mul_forward(<float *> ptr[p.dx], <float *> ptr[p.dy], par[0], p.n, nt)
    return c.FASTCNN_OK


cdef class DropoutStep(Step):
    """dropout in training: each forward draws a new mask from fastcnn's seeded
    generator (training holds the model, so the step may keep it) and its
    backward reuses it."""
    cdef dropout_step_args a
    cdef object mask, shape
    cdef double p

    def __init__(self, node, slots, tuple shape):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        self.a.n = 1
        for d in shape:
            self.a.n *= d
        self.shape, self.p = shape, node.attrs["p"]
        self.mask = np.ones(shape, np.float32)
        self.args, self.fwd, self.bwd = &self.a, dropout_step_forward, dropout_step_backward
        self.npar = 1

    cdef int fetch(self, float **par, bint backward) except -1:
        if not backward:
            self.mask = dropout_mask(self.shape, self.p)
        par[0] = fptr(self.mask)
        return 0
