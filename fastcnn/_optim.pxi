# Bindings of csrc/optim.c: fused, in-place torch.optim SGD and Adam/AdamW steps.
import numpy as np
from libc.stdint cimport int64_t

from . cimport _fastcnn as c
from ._fastcnn cimport fptr
from ._checks import as_float, as_float32, as_int, check_shape
from ._checks import nonnegative_float
from ._config import get_num_threads

INT64_MAX = 2**63 - 1


def sgd_update(param, grad, momentum_buffer=None, *, lr, momentum=0.0, dampening=0.0,
               weight_decay=0.0, nesterov=False, maximize=False, first_step=False,
               reference=False):
    """One ``torch.optim.SGD`` step on one parameter, in place, in a single fused pass.

    Computes, element-wise (``g = -grad`` if maximize)::

        d = g + weight_decay * param
        if momentum != 0:
            buf = d if first_step else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        param -= lr * d

    with torch's float32 rounding (its default CPU implementation).

    Args:
        param: the parameter, a writeable C-contiguous float32 numpy array; updated in place.
        grad: its gradient, same shape, any real dtype (converted to float32); not modified.
        momentum_buffer: the momentum state, a writeable C-contiguous float32 array of
            param's shape, updated in place; required when momentum != 0, else ignored.
            Its content is ignored (overwritten) when first_step is True.
        lr: learning rate, >= 0.
        momentum: momentum factor, >= 0.
        dampening: dampening of the momentum (torch's; not applied on the first step).
        weight_decay: L2 penalty, >= 0.
        nesterov: Nesterov momentum; requires momentum > 0 and dampening == 0.
        maximize: ascend the objective instead of descending it.
        first_step: True on this buffer's first step (torch then sets buf = d).
        reference: use the plain reference kernel (the test oracle).

    Returns:
        None; param (and momentum_buffer) are updated in place.

    Raises:
        TypeError: if param or momentum_buffer is not a writeable C-contiguous float32
            numpy array, grad is not real, or a hyper-parameter is not a real number.
        ValueError: on a shape mismatch, an empty param, a negative lr, momentum or
            weight_decay, a non-finite hyper-parameter, nesterov without momentum or
            with dampening, or a missing momentum_buffer when momentum != 0.

    Example:
        >>> w = np.ones(3, np.float32); buf = np.empty_like(w)
        >>> sgd_update(w, np.ones(3), buf, lr=0.1, momentum=0.9, first_step=True)
        >>> w
        array([0.9, 0.9, 0.9], dtype=float32)
    """
    _optim_check_param(param)
    lr = nonnegative_float(lr, "lr")
    momentum = nonnegative_float(momentum, "momentum")
    dampening = as_float(dampening, "dampening")
    weight_decay = nonnegative_float(weight_decay, "weight_decay")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("nesterov=True requires momentum > 0 and dampening == 0. "
                         f"Received: momentum={momentum!r}, dampening={dampening!r}")
    buf = None
    if momentum != 0:
        if momentum_buffer is None:
            raise ValueError("momentum_buffer is required when momentum != 0. "
                             f"Received: momentum={momentum!r}, momentum_buffer=None")
        buf = _optim_state(momentum_buffer, "momentum_buffer", param)
    g = _optim_grad(grad, param, () if buf is None else (buf,))
    cdef float *pp = fptr(param)
    cdef float *pb = fptr(buf) if buf is not None else NULL
    cdef const float *pg = fptr(g)
    cdef int64_t n = param.size
    cdef double clr = lr, cmom = momentum, cdamp = dampening, cwd = weight_decay
    cdef int cnest = bool(nesterov), cmax = bool(maximize), cfirst = bool(first_step)
    cdef bint ref = bool(reference)
    cdef int nt = get_num_threads()
    with nogil:
        if ref:
            c.sgd_step_ref(pp, pb, pg, n, clr, cmom, cdamp, cwd, cnest, cmax, cfirst)
        else:
            c.sgd_step(pp, pb, pg, n, clr, cmom, cdamp, cwd, cnest, cmax, cfirst, nt)


def adam_update(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999),
                eps=1e-8, weight_decay=0.0, decoupled=False, amsgrad=False,
                max_exp_avg_sq=None, maximize=False, reference=False):
    """One ``torch.optim.Adam`` (or, with decoupled=True, ``AdamW``) step, in place, fused.

    Computes, element-wise (``g = -grad`` if maximize)::

        param *= 1 - lr * weight_decay          # AdamW (decoupled)
        g = g + weight_decay * param            # Adam (L2)
        exp_avg = lerp(exp_avg, g, 1 - beta1)
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
        v = max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq) if amsgrad else exp_avg_sq
        param -= lr / (1 - beta1**step) * exp_avg / (sqrt(v) / sqrt(1 - beta2**step) + eps)

    with torch's float32 rounding (its default CPU implementation); the bias
    corrections are computed once, in double, as torch does.

    Args:
        param: the parameter, a writeable C-contiguous float32 numpy array; updated in place.
        grad: its gradient, same shape, any real dtype (converted to float32); not modified.
        exp_avg, exp_avg_sq: the moment estimates, writeable C-contiguous float32 arrays of
            param's shape (zeros before the first step), updated in place.
        step: this step's number, counting from 1.
        lr: learning rate, >= 0.
        betas: (beta1, beta2), each in [0, 1).
        eps: term added to the denominator, >= 0.
        weight_decay: >= 0; an L2 penalty (Adam) or, with decoupled=True, AdamW's decay.
        decoupled: AdamW's decoupled weight decay.
        amsgrad: use AMSGrad's running maximum of exp_avg_sq, kept in max_exp_avg_sq
            (required then: a writeable float32 array like exp_avg_sq, zeros at first).
        max_exp_avg_sq: AMSGrad's state, updated in place; ignored unless amsgrad.
        maximize: ascend the objective instead of descending it.
        reference: use the plain reference kernel (the test oracle).

    Returns:
        None; param and the state arrays are updated in place.

    Raises:
        TypeError: if param or a state array is not a writeable C-contiguous float32
            numpy array, grad is not real, step is not an integer, or a hyper-parameter
            is not a real number.
        ValueError: on a shape mismatch, an empty param, shared state arrays, a negative
            lr, eps or weight_decay, a beta outside [0, 1), step < 1, a non-finite
            hyper-parameter, or amsgrad without max_exp_avg_sq.

    Example:
        >>> w = np.ones(3, np.float32); m = np.zeros_like(w); v = np.zeros_like(w)
        >>> adam_update(w, np.ones(3), m, v, step=1, lr=0.1)
        >>> w
        array([0.90000004, 0.90000004, 0.90000004], dtype=float32)
    """
    _optim_check_param(param)
    m = _optim_state(exp_avg, "exp_avg", param)
    v = _optim_state(exp_avg_sq, "exp_avg_sq", param, (m,))
    vmax = None
    if amsgrad:
        if max_exp_avg_sq is None:
            raise ValueError("max_exp_avg_sq is required when amsgrad=True. "
                             "Received: max_exp_avg_sq=None")
        vmax = _optim_state(max_exp_avg_sq, "max_exp_avg_sq", param, (m, v))
    g = _optim_grad(grad, param, (m, v) if vmax is None else (m, v, vmax))
    step = as_int(step, "step")
    if not 1 <= step <= INT64_MAX:
        raise ValueError(f"step must be >= 1 (it counts from 1). Received: step={step}")
    lr = nonnegative_float(lr, "lr")
    beta1, beta2 = _optim_betas(betas)
    eps = nonnegative_float(eps, "eps")
    weight_decay = nonnegative_float(weight_decay, "weight_decay")
    cdef float *pp = fptr(param)
    cdef float *pm = fptr(m)
    cdef float *pv = fptr(v)
    cdef float *pvmax = fptr(vmax) if vmax is not None else NULL
    cdef const float *pg = fptr(g)
    cdef int64_t n = param.size, cstep = step
    cdef double clr = lr, cb1 = beta1, cb2 = beta2, ceps = eps, cwd = weight_decay
    cdef int cdec = bool(decoupled), cmax = bool(maximize)
    cdef bint ref = bool(reference)
    cdef int nt = get_num_threads()
    with nogil:
        if ref:
            c.adam_step_ref(pp, pm, pv, pvmax, pg, n, clr, cb1, cb2, ceps, cwd, cdec, cmax,
                            cstep)
        else:
            c.adam_step(pp, pm, pv, pvmax, pg, n, clr, cb1, cb2, ceps, cwd, cdec, cmax, cstep,
                        nt)


def zero_grad_(grad):
    """grad[...] = 0 in place on fastcnn's threads (an optimizer's zero_grad).
    grad: a writeable C-contiguous float32 numpy array."""
    _optim_writeable_float32(grad, "grad")
    cdef float *pg = fptr(grad)
    cdef int64_t n = grad.size
    cdef int nt = get_num_threads()
    with nogil:
        c.zero_grad(pg, n, nt)


def _optim_writeable_float32(a, name):
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous \
            or not a.flags.writeable:
        what = (f"{type(a).__name__}" if not isinstance(a, np.ndarray) else
                f"ndarray with dtype={a.dtype}, C-contiguous={a.flags.c_contiguous}, "
                f"writeable={a.flags.writeable}")
        raise TypeError(f"{name} must be a writeable C-contiguous float32 numpy array "
                        f"(it is updated in place). Received: {name} of type {what}")


def _optim_check_param(param):
    _optim_writeable_float32(param, "param")
    if param.size == 0:
        raise ValueError(f"param must not be empty. Received: param.shape={param.shape}")


def _optim_state(a, name, param, others=()):
    """A state buffer: float32, writeable, param's shape, sharing memory with nothing."""
    _optim_writeable_float32(a, name)
    check_shape(a, param.shape, name)
    for other in (param,) + tuple(others):
        if np.may_share_memory(a, other):
            raise ValueError(f"{name} must not share memory with param or another state "
                             f"buffer. Received: {name} overlapping another argument")
    return a


def _optim_grad(grad, param, states):
    """grad as float32 of param's shape, copied if it overlaps an array we write."""
    g = as_float32(grad, "grad")
    check_shape(g, param.shape, "grad")
    if any(np.may_share_memory(g, a) for a in (param,) + tuple(states)):
        g = g.copy()
    return g


def _optim_betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2). Received: betas={betas!r}")
    out = []
    for i, b in enumerate(betas):
        v = as_float(b, f"betas[{i}]")
        if not 0.0 <= v < 1.0:
            raise ValueError(f"betas[{i}] must be in [0, 1). Received: betas={betas!r}")
        out.append(v)
    return out
