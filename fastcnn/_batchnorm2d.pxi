# Bindings of csrc/batchnorm2d.c: batch normalization over NCHW images,
# forward (training and inference) and backward, its folding into the
# convolution before it (inference), and the executor's steps.
import math

import numpy as np

from . cimport _fastcnn as c
from ._fastcnn cimport fptr
from ._checks import as_float, as_float32, check_shape, nonnegative_float, out_buffer
from ._config import get_num_threads


def batch_norm2d(x, running_mean=None, running_var=None, weight=None, bias=None,
                 training=False, momentum=0.1, eps=1e-5, *, return_stats=False,
                 reference=False):
    """Batch normalization of NCHW images per channel (torch.nn.functional.batch_norm).

    Args:
        x: (N, C, H, W), any real dtype.
        running_mean, running_var: float32 (C,) arrays, or None. Inference
            (training=False) normalizes with them; training normalizes with
            the batch's mean and biased variance and, if they are given,
            updates them in place: ``r = (1 - momentum) r + momentum batch``
            (the variance unbiased, as PyTorch does).
        weight, bias: (C,) scale and shift, or None (1 and 0).
        training: use the batch's statistics. Default False.
        momentum: the running statistics' update factor. Default 0.1.
        eps: added to the variance. Default 1e-5.
        return_stats: (training only) also return the batch's mean and
            inverse standard deviation 1 / sqrt(var + eps), float32 (C,):
            what :func:`batch_norm2d_backward` takes to skip recomputing them
            (torch.native_batch_norm's save_mean and save_invstd).
        reference: use the plain reference kernels (the test oracle).

    Returns:
        float32 array of x's shape; with return_stats, (y, mean, invstd).

    Raises:
        ValueError: inference without running statistics, or return_stats
            without training.
    """
    xa = as_float32(x, "x", 4)
    cdef int64_t N = xa.shape[0], C = xa.shape[1], HW = xa.shape[2] * xa.shape[3]
    momentum = as_float(momentum, "momentum")
    eps = nonnegative_float(eps, "eps")
    g = _batchnorm2d_vector(weight, C, "weight")
    b = _batchnorm2d_vector(bias, C, "bias")
    rm = _batchnorm2d_running(running_mean, C, "running_mean", training)
    rv = _batchnorm2d_running(running_var, C, "running_var", training)
    if not training and (rm is None or rv is None):
        raise ValueError("batch_norm2d in inference needs running_mean and running_var")
    if return_stats and not training:
        raise ValueError("batch_norm2d returns the batch's statistics in training only. "
                         f"Received: return_stats={return_stats!r}, training={training!r}")
    y = _empty(xa.shape)
    mean, var, invstd = (_empty(C) for _ in range(3))
    cdef float *py = fptr(y)
    cdef const float *px = fptr(xa)
    cdef const float *pg = NULL if g is None else fptr(g)
    cdef const float *pb = NULL if b is None else fptr(b)
    cdef float *pm = fptr(mean)
    cdef float *pv = fptr(var)
    cdef float *pi = fptr(invstd)
    cdef float *prm = NULL if rm is None else fptr(rm)
    cdef float *prv = NULL if rv is None else fptr(rv)
    cdef double e = eps
    cdef int nt = get_num_threads()
    cdef bint train = training, ref = reference
    with nogil:
        if train and ref:
            c.batchnorm2d_forward_train_ref(py, pm, pv, pi, px, pg, pb, N, C, HW, e)
        elif train:
            c.batchnorm2d_forward_train(py, pm, pv, pi, px, pg, pb, N, C, HW, e, nt)
        elif ref:
            c.batchnorm2d_forward_eval_ref(py, px, prm, prv, pg, pb, N, C, HW, e)
        else:
            c.batchnorm2d_forward_eval(py, px, prm, prv, pg, pb, N, C, HW, e, nt)
    if train and rm is not None and rv is not None:
        c.batchnorm2d_update_running(prm, prv, pm, pv, C, N * HW, momentum)
    return (y, mean, invstd) if return_stats else y


def batch_norm2d_backward(grad_y, x, weight=None, eps=1e-5, *, need_grad_input=True,
                          grad_weight=None, grad_bias=None, mean=None, invstd=None,
                          reference=False):
    """Gradients of training-mode ``batch_norm2d(x, weight=weight, eps=eps, ...)``.

    Args:
        grad_y: (N, C, H, W) gradient of the output; x: the forward's input.
        weight: the forward's (C,) scale, or None (1).
        eps: the forward's eps (used only to recompute the statistics).
        need_grad_input: compute grad_x (else None is returned for it).
        grad_weight, grad_bias: float32 (C,) accumulators, or None (fresh zeros).
        mean, invstd: the batch's (C,) mean and inverse standard deviation as
            ``batch_norm2d(..., training=True, return_stats=True)`` returned
            them; both None (the default): recomputed from x.
        reference: use the plain reference kernels (the test oracle).

    Returns:
        (grad_x or None, grad_weight, grad_bias): grad_weight and grad_bias
        (C,) are accumulated into the arrays given (else fresh ones).

    Raises:
        ValueError: a shape that does not match x, or only one of mean and invstd.
    """
    xa = as_float32(x, "x", 4)
    dy = as_float32(grad_y, "grad_y")
    check_shape(dy, xa.shape, "grad_y")
    cdef int64_t N = xa.shape[0], C = xa.shape[1], HW = xa.shape[2] * xa.shape[3]
    eps = nonnegative_float(eps, "eps")
    g = _batchnorm2d_vector(weight, C, "weight")
    gw = out_buffer(grad_weight, (C,), "grad_weight")
    gb = out_buffer(grad_bias, (C,), "grad_bias")
    if (mean is None) != (invstd is None):
        raise ValueError("batch_norm2d_backward takes the saved mean and invstd together. "
                         f"Received: mean={'None' if mean is None else 'an array'}, "
                         f"invstd={'None' if invstd is None else 'an array'}")
    saved = mean is not None
    if saved:
        mean, invstd = _batchnorm2d_vector(mean, C, "mean"), _batchnorm2d_vector(invstd, C,
                                                                                  "invstd")
    else:
        mean, invstd = _empty(C), _empty(C)
    var = _empty(C)
    dx = _empty(xa.shape) if need_grad_input else None
    cdef double e = eps
    cdef int nt = get_num_threads()
    cdef float *pdx = NULL if dx is None else fptr(dx)
    cdef const float *pg = NULL if g is None else fptr(g)
    cdef float *pgw = fptr(gw)
    cdef float *pgb = fptr(gb)
    cdef float *pm = fptr(mean)
    cdef float *pv = fptr(var)
    cdef float *pi = fptr(invstd)
    cdef const float *px = fptr(xa)
    cdef const float *pdy = fptr(dy)
    cdef bint recompute = not saved, ref = reference
    with nogil:
        if recompute:   # the batch's statistics again, exactly as forward computed them
            if ref:
                c.batchnorm2d_forward_train_ref(NULL, pm, pv, pi, px, NULL, NULL, N, C, HW, e)
            else:
                c.batchnorm2d_forward_train(NULL, pm, pv, pi, px, NULL, NULL, N, C, HW, e, nt)
        if ref:
            c.batchnorm2d_backward_ref(pdx, pgw, pgb, pdy, px, pm, pi, pg, N, C, HW)
        else:
            c.batchnorm2d_backward(pdx, pgw, pgb, pdy, px, pm, pi, pg, N, C, HW, nt)
    return dx, gw, gb


def _set_stream(mode):
    """Test hook: batch norm's maps store their output past the cache when
    it is large (0), always (1) or never (-1). Returns the old mode."""
    return c.batchnorm2d_set_stream(int(mode))


def batch_norm2d_fold(weight, bias, bn_weight, bn_bias, running_mean, running_var, eps=1e-5):
    """A convolution followed by batch norm in inference, as one convolution:
    with s = bn_weight / sqrt(running_var + eps), the weight (K, C, R, S)
    scaled by s per output channel and the bias (bias - running_mean) * s + bn_bias.

    Args:
        weight: the convolution's (K, ...) weight; bias: (K,) or None (0).
        bn_weight, bn_bias: batch norm's (K,) scale and shift, or None (1, 0).
        running_mean, running_var: (K,) statistics.
        eps: batch norm's eps.

    Returns:
        (folded weight, folded bias): fresh float32 arrays.
    """
    w = as_float32(weight, "weight")
    if w.ndim < 1:
        raise ValueError(f"weight must have an output-channel dimension (K, ...). "
                         f"Received: weight.shape={w.shape}")
    eps = nonnegative_float(eps, "eps")
    cdef int64_t K = w.shape[0], CRS = w.size // w.shape[0]
    b = _batchnorm2d_vector(bias, K, "bias")
    g = _batchnorm2d_vector(bn_weight, K, "bn_weight")
    be = _batchnorm2d_vector(bn_bias, K, "bn_bias")
    m = as_float32(running_mean, "running_mean")
    v = as_float32(running_var, "running_var")
    check_shape(m, (K,), "running_mean")
    check_shape(v, (K,), "running_var")
    wf, bf = _empty(w.shape), _empty(K)
    cdef float *pwf = fptr(wf)
    cdef float *pbf = fptr(bf)
    cdef const float *pw = fptr(w)
    cdef const float *pb = NULL if b is None else fptr(b)
    cdef const float *pg = NULL if g is None else fptr(g)
    cdef const float *pbe = NULL if be is None else fptr(be)
    cdef const float *pm = fptr(m)
    cdef const float *pv = fptr(v)
    cdef double e = eps
    cdef int nt = get_num_threads()
    with nogil:
        c.batchnorm2d_fold(pwf, pbf, pw, pb, pg, pbe, pm, pv, K, CRS, e, nt)
    return wf, bf


def _batchnorm2d_vector(v, int64_t C, str name):
    if v is None:
        return None
    a = as_float32(v, name)
    check_shape(a, (C,), name)
    return a


def _batchnorm2d_running(v, int64_t C, str name, bint writeable):
    """A running statistic: updated in place in training (writeable), only
    read in inference (a frozen model's read-only buffers)."""
    if v is None:
        return None
    if not isinstance(v, np.ndarray) or v.dtype != np.float32 or not v.flags.c_contiguous \
            or (writeable and not v.flags.writeable) or v.shape != (C,):
        raise ValueError(f"{name} must be a {'writeable ' if writeable else ''}C-contiguous "
                         f"float32 array of shape ({C},). Received: {type(v).__name__}"
                         + (f" of shape {v.shape}, dtype={v.dtype}"
                            if isinstance(v, np.ndarray) else ""))
    return v


# ---- the executor's step (fastcnn/_executor.pxi) ---------------------------------

ctypedef struct batchnorm2d_step_args:
    int x, y, dx, dy            # step_slots
    int mean, var, invstd       # slots: the batch's statistics (C)
    int64_t N, C, HW
    double eps, factor          # factor: this step's running-statistics momentum
    int batch_stats, update


cdef int batchnorm2d_step_forward(const void *a, void **ptr, float **par, int need_dx,
                                  int nt) noexcept nogil:
    # par: weight, bias, running_mean, running_var (each NULL when absent)
    cdef const batchnorm2d_step_args *p = <const batchnorm2d_step_args *> a
    cdef float *y = <float *> ptr[p.y]
    cdef float *x = <float *> ptr[p.x]
    if not p.batch_stats:
        c.batchnorm2d_forward_eval(y, x, par[2], par[3], par[0], par[1], p.N, p.C, p.HW,
                                   p.eps, nt)
        return c.FASTCNN_OK
    c.batchnorm2d_forward_train(y, <float *> ptr[p.mean], <float *> ptr[p.var],
                                <float *> ptr[p.invstd], x, par[0], par[1], p.N, p.C, p.HW,
                                p.eps, nt)
    if p.update:
        c.batchnorm2d_update_running(par[2], par[3], <float *> ptr[p.mean],
                                     <float *> ptr[p.var], p.C, p.N * p.HW, p.factor)
    return c.FASTCNN_OK


cdef int batchnorm2d_step_backward(const void *a, void **ptr, float **par, int need_dx,
                                   int nt) noexcept nogil:
    # par: weight, weight.grad, bias.grad (each NULL when absent)
    cdef const batchnorm2d_step_args *p = <const batchnorm2d_step_args *> a
    c.batchnorm2d_backward(<float *> ptr[p.dx] if need_dx else NULL, par[1], par[2],
                           <float *> ptr[p.dy], <float *> ptr[p.x], <float *> ptr[p.mean],
                           <float *> ptr[p.invstd], par[0], p.N, p.C, p.HW, nt)
    return c.FASTCNN_OK


cdef class BatchNormStep(Step):
    """batch_norm2d: in training the batch's statistics (and the running ones
    updated, num_batches_tracked counted); in inference the running ones."""
    cdef batchnorm2d_step_args a
    cdef object weight, bias, running_mean, running_var, tracked, momentum

    def __init__(self, node, slots, tuple shape, bint training):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        self.a.N, self.a.C, self.a.HW = shape[0], shape[1], shape[2] * shape[3]
        self.a.mean, self.a.var, self.a.invstd = slots["mean"], slots["var"], slots["invstd"]
        p = node.params
        self.weight, self.bias = p.get("weight"), p.get("bias")
        self.running_mean, self.running_var = p.get("running_mean"), p.get("running_var")
        self.tracked = p.get("num_batches_tracked")
        self.a.eps, self.momentum = node.attrs["eps"], node.attrs["momentum"]
        track = self.running_mean is not None
        self.a.batch_stats = training or not track
        self.a.update = training and track
        self.args, self.fwd = &self.a, batchnorm2d_step_forward
        self.bwd = batchnorm2d_step_backward
        self.npar, self.has_params = 4, self.weight is not None

    cdef int fetch(self, float **par, bint backward) except -1:
        cdef tuple shape = (self.a.C,)
        par[0] = NULL if self.weight is None else _param_ptr(self.weight.data, shape, False,
                                                             "weight")
        if backward:
            par[1] = NULL if self.weight is None else _param_ptr(self.weight.grad, shape, True,
                                                                 "weight.grad")
            par[2] = NULL if self.bias is None else _param_ptr(self.bias.grad, shape, True,
                                                               "bias.grad")
            return 0
        par[1] = NULL if self.bias is None else _param_ptr(self.bias.data, shape, False, "bias")
        par[2] = par[3] = NULL
        if self.running_mean is not None:
            # written in training only: a frozen model's are read-only
            par[2] = _param_ptr(self.running_mean, shape, self.a.update, "running_mean")
            par[3] = _param_ptr(self.running_var, shape, self.a.update, "running_var")
        if self.a.update:           # training holds the model: no other call runs this step
            self.tracked[...] += 1
            self.a.factor = (1.0 / int(self.tracked) if self.momentum is None
                             else self.momentum)
        return 0


# ---- a convolution with the batch norm after it folded in (compiler pass) ---------

ctypedef struct folded_conv_step_args:
    int x, y, dx, dy            # step_slots
    const void *conv            # the convolution step's arguments
    step_fn conv_forward        # and its forward
    int wf, bf                  # slots: the folded weight (K, CRS) and bias (K)
    int64_t K, CRS
    double eps


cdef int folded_conv_step_forward(const void *a, void **ptr, float **par, int need_dx,
                                  int nt) noexcept nogil:
    # par: weight, bias (or NULL), bn weight, bn bias (or NULL), running mean, running var
    cdef const folded_conv_step_args *p = <const folded_conv_step_args *> a
    cdef float *folded[2]
    folded[0], folded[1] = <float *> ptr[p.wf], <float *> ptr[p.bf]
    c.batchnorm2d_fold(folded[0], folded[1], par[0], par[1], par[2], par[3], par[4], par[5],
                       p.K, p.CRS, p.eps, nt)
    return p.conv_forward(p.conv, ptr, folded, need_dx, nt)


cdef int folded_conv_step_backward(const void *a, void **ptr, float **par, int need_dx,
                                   int nt) noexcept nogil:
    return c.FASTCNN_OK         # inference only: the pass never folds in training


cdef class FoldedConvStep(Step):
    """conv2d then batch_norm2d in inference as one convolution: each call
    folds the current weights and statistics into the frame's auxiliary
    buffers (nothing cached: any of them may change between calls), then
    runs the convolution step on them."""
    cdef folded_conv_step_args a
    cdef WeightStep conv
    cdef object bn_weight, bn_bias, running_mean, running_var

    def __init__(self, node, slots, WeightStep conv):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        self.conv = conv
        self.a.conv, self.a.conv_forward = conv.args, conv.fwd
        self.a.wf, self.a.bf = slots["folded_weight"], slots["folded_bias"]
        self.a.K = conv.wshape[0]
        self.a.CRS = math.prod(conv.wshape) // self.a.K
        self.a.eps = node.attrs["bn_eps"]
        p = node.params
        self.bn_weight, self.bn_bias = p.get("bn_weight"), p.get("bn_bias")
        self.running_mean, self.running_var = p["running_mean"], p["running_var"]
        self.args, self.fwd, self.bwd = &self.a, folded_conv_step_forward, \
            folded_conv_step_backward
        self.npar, self.has_params = 6, True

    cdef int fetch(self, float **par, bint backward) except -1:
        cdef tuple shape = (self.a.K,)
        self.conv.fetch(par, False)
        par[2] = NULL if self.bn_weight is None else _param_ptr(self.bn_weight.data, shape,
                                                                False, "bn weight")
        par[3] = NULL if self.bn_bias is None else _param_ptr(self.bn_bias.data, shape, False,
                                                              "bn bias")
        par[4] = _param_ptr(self.running_mean, shape, False, "running_mean")
        par[5] = _param_ptr(self.running_var, shape, False, "running_var")
        return 0
