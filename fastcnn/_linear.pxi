# Bindings of csrc/linear.c: the fully connected layer, forward and backward.
import numpy as np
from libc.stdint cimport int64_t

from . cimport _fastcnn as c
from ._fastcnn cimport fptr
from ._checks import as_float32, check_shape, out_buffer
from ._config import get_num_threads


def linear(x, weight, bias=None, *, reference=False):
    """Fully connected layer ``y = x weight^T + bias``, as torch.nn.functional.linear.

    Args:
        x: input features, any real dtype (converted once to float32).
        weight: (out_features, in_features), PyTorch's layout.
        bias: (out_features,) or None.
        reference: use the plain reference kernel (the test oracle).

    Input shape:
        x: (..., in_features): any number of leading dimensions, or none.

    Output shape:
        (..., out_features): x's leading dimensions kept.

    Returns:
        float32 array y.

    Raises:
        TypeError: non-numeric input.
        ValueError: empty arrays, a weight that is not 2-D, x.shape[-1] !=
            weight.shape[1], or a bias that is not (out_features,).

    Example:
        >>> w = np.ones((2, 3), np.float32)
        >>> fastcnn.functional.linear(np.ones((4, 3)), w, np.zeros(2)).shape
        (4, 2)
    """
    xa, w = _linear_inputs(x, weight)
    cdef int64_t O = w.shape[0], F = w.shape[1], N = xa.size // F
    b = None
    if bias is not None:
        b = as_float32(bias, "bias")
        check_shape(b, (O,), "bias")
    y = _empty(_linear_lead(xa) + (O,))
    cdef float *py = fptr(y)
    cdef const float *px = fptr(xa)
    cdef const float *pw = fptr(w)
    cdef const float *pb = fptr(b) if b is not None else NULL
    cdef int nt = get_num_threads()
    cdef int rc = c.FASTCNN_OK
    cdef bint ref = reference
    with nogil:
        if ref:
            c.linear_forward_ref(py, px, pw, pb, N, F, O)
        else:
            rc = c.linear_forward(py, px, pw, pb, N, F, O, nt)
    if rc != c.FASTCNN_OK:
        raise MemoryError("linear: out of memory for the matrix-multiply buffers")
    return y


def linear_backward(grad_y, x, weight, *, has_bias=True, need_grad_input=True,
                    grad_weight=None, grad_bias=None, reference=False):
    """Gradients of ``linear``: input, weight and bias.

    Args:
        grad_y: gradient of the loss with respect to linear's output.
        x: linear's input (..., in_features).
        weight: (out_features, in_features).
        has_bias: compute the bias gradient.
        need_grad_input: compute the input gradient (skip it for a first layer).
        grad_weight: optional writeable C-contiguous float32 (out_features,
            in_features) buffer; the weight gradient is added to it in place.
        grad_bias: likewise, (out_features,), for the bias gradient.
        reference: use the plain reference kernels (the test oracle).

    Input shape:
        grad_y: (..., out_features), x's leading dimensions.

    Returns:
        (grad_x or None, grad_weight, grad_bias or None): grad_x has x's shape;
        grad_weight and grad_bias are the given buffers (accumulated into) or
        fresh arrays.

    Raises:
        TypeError: non-numeric input, or a gradient buffer that is not a
            writeable C-contiguous float32 array.
        ValueError: inconsistent shapes (named with the received values), or
            grad_bias given with has_bias=False.

    Example:
        >>> gx, gw, gb = fastcnn.functional.linear_backward(np.ones((4, 2)), x, w)
    """
    xa, w = _linear_inputs(x, weight)
    cdef int64_t O = w.shape[0], F = w.shape[1], N = xa.size // F
    dy = as_float32(grad_y, "grad_y")
    check_shape(dy, _linear_lead(xa) + (O,), "grad_y")
    if not has_bias and grad_bias is not None:
        raise ValueError("grad_bias must be None when has_bias is False. "
                         f"Received: has_bias={has_bias!r}, grad_bias of shape "
                         f"{np.shape(grad_bias)}")
    gw = out_buffer(grad_weight, (O, F), "grad_weight")
    gb = out_buffer(grad_bias, (O,), "grad_bias") if has_bias else None
    gx = _empty(xa.shape) if need_grad_input else None
    cdef float *pgx = fptr(gx) if gx is not None else NULL
    cdef float *pgw = fptr(gw)
    cdef float *pgb = fptr(gb) if gb is not None else NULL
    cdef const float *pdy = fptr(dy)
    cdef const float *px = fptr(xa)
    cdef const float *pw = fptr(w)
    cdef int nt = get_num_threads()
    cdef int rc = c.FASTCNN_OK
    cdef bint ref = reference
    with nogil:
        if ref:
            c.linear_backward_ref(pgx, pgw, pgb, pdy, px, pw, N, F, O)
        else:
            rc = c.linear_backward(pgx, pgw, pgb, pdy, px, pw, N, F, O, nt)
    if rc != c.FASTCNN_OK:
        raise MemoryError("linear_backward: out of memory for the matrix-multiply buffers")
    return gx, gw, gb


def _linear_inputs(x, weight):
    """x (..., F) and weight (O, F) as float32, with matching F."""
    w = as_float32(weight, "weight")
    if w.ndim != 2:
        raise ValueError("weight must be 2-dimensional (out_features, in_features). "
                         f"Received: weight.shape={w.shape}")
    xa = as_float32(x, "x")
    if xa.ndim < 1:
        raise ValueError("x must have at least 1 dimension (..., in_features). "
                         f"Received: x.shape={xa.shape}")
    if xa.shape[xa.ndim - 1] != w.shape[1]:
        raise ValueError("x.shape[-1] must equal weight.shape[1] (in_features). "
                         f"Received: x.shape={xa.shape}, weight.shape={w.shape}")
    return xa, w


def _linear_lead(xa):
    """x's leading dimensions, x.shape[:-1]."""
    return xa.shape[:xa.ndim - 1]


# ---- the executor's step (fastcnn/_executor.pxi) ---------------------------------

ctypedef struct linear_step_args:
    int x, y, dx, dy            # step_slots
    int64_t N, F, O


cdef int linear_step_forward(const void *a, void **ptr, float **par, int need_dx,
                             int nt) noexcept nogil:
    # par: weight, bias (or NULL)
    cdef const linear_step_args *p = <const linear_step_args *> a
    return c.linear_forward(<float *> ptr[p.y], <float *> ptr[p.x], par[0], par[1],
                            p.N, p.F, p.O, nt)


cdef int linear_step_backward(const void *a, void **ptr, float **par, int need_dx,
                              int nt) noexcept nogil:
    # par: weight, weight.grad, bias.grad (or NULL)
    cdef const linear_step_args *p = <const linear_step_args *> a
    return c.linear_backward(<float *> ptr[p.dx] if need_dx else NULL, par[1], par[2],
                             <float *> ptr[p.dy], <float *> ptr[p.x], par[0], p.N, p.F, p.O, nt)


cdef class LinearStep(WeightStep):
    """linear: y = x weight^T + bias over rows of F; backward dx, dweight, dbias."""
    cdef linear_step_args a

    def __init__(self, node, slots, int64_t rows):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        self.weight, self.bias = node.params["weight"], node.params.get("bias")
        self.a.O, self.a.F = self.weight.data.shape
        self.a.N = rows
        self.wshape, self.bshape = (self.a.O, self.a.F), (self.a.O,)
        self.args, self.fwd, self.bwd = &self.a, linear_step_forward, linear_step_backward
        self.npar, self.has_params = 3, True
