# Bindings of csrc/conv2d.c: 2-d convolution, forward and backward.
import numpy as np

from . cimport _fastcnn as c
from ._fastcnn cimport fptr
from ._checks import (INT32_MAX, as_float32, as_pair, check_shape, out_buffer, positive_int,
                      positive_pair)
from ._config import get_num_threads

# Largest element count of any buffer the kernels index (including the
# per-thread im2col scratch, at most N*C*R*S*P*Q) and largest multiply-add
# count: products stay clear of int64 overflow inside C.
MAX_ELEMENTS = 2**56
MAX_MACS = 2**61  # the kernels compute 2 * MACs (flop counts) in int64


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           reference=False):
    """2-d convolution (cross-correlation), as torch.nn.functional.conv2d.

    Args:
        x: input, (N, C, H, W), any real dtype (converted to float32).
        weight: filters, (K, C / groups, R, S).
        bias: (K,) or None.
        stride: int or (sh, sw), each >= 1.
        padding: zero padding: int or (ph, pw) on each side; 'valid' (none);
            or 'same' (stride 1 only): output as large as the input, total
            padding dh (R-1) (dw (S-1)) split as PyTorch does, the extra one
            at the bottom/right.
        dilation: int or (dh, dw), each >= 1: spacing of the kernel taps.
        groups: int >= 1 dividing C and K: output channels of group g see
            only input channels g C/groups .. (g+1) C/groups - 1
            (groups == C: depthwise).
        reference: use the plain reference kernel (the test oracle).

    Input shape:
        x (N, C, H, W), weight (K, C / groups, R, S), bias (K,).

    Output shape:
        (N, K, P, Q), P = (H + ph_top + ph_bottom - dh (R-1) - 1) // sh + 1,
        Q likewise.

    Returns:
        float32 array y, C-contiguous.

    Raises:
        TypeError: non-numeric arrays, non-integer stride, padding,
            dilation or groups.
        ValueError: wrong ndim, empty arrays, channel or bias-length mismatch,
            stride, dilation or groups < 1, groups not dividing C and K,
            weight.shape[1] != C / groups, negative padding, unknown padding
            string, 'same' with stride > 1, a (dilated) kernel larger than
            the padded input, or sizes too large to index.
        MemoryError: scratch memory could not be allocated.

    Example:
        >>> x = np.ones((1, 1, 4, 4), np.float32)
        >>> fastcnn.functional.conv2d(x, np.ones((2, 1, 3, 3)), padding=1).shape
        (1, 2, 4, 4)
    """
    xa = _conv2d_array4(x, "x", "(N, C, H, W)")
    wa = _conv2d_array4(weight, "weight", "(K, C, R, S)")
    geo = _geometry(xa.shape, wa.shape, stride, padding, dilation, groups)
    ba = None
    if bias is not None:
        ba = as_float32(bias, "bias")
        if ba.ndim != 1 or ba.shape[0] != wa.shape[0]:
            raise ValueError(f"bias must have shape ({wa.shape[0]},), one value per output "
                             f"channel. Received: bias.shape={ba.shape}")
    N, K, P, Q = geo[0], geo[4], geo[11], geo[12]
    y = _empty((N, K, P, Q))
    cdef c.conv2d_shape s = _conv2d_shape(geo)
    cdef float *py = fptr(y)
    cdef const float *px = fptr(xa)
    cdef const float *pw = fptr(wa)
    cdef const float *pb = fptr(ba) if ba is not None else NULL
    cdef int nt = get_num_threads()
    cdef int err = c.FASTCNN_OK
    cdef bint ref = reference
    with nogil:
        if ref:
            c.conv2d_forward_ref(py, px, pw, pb, &s)
        else:
            err = c.conv2d_forward(py, px, pw, pb, &s, nt)
    if err != c.FASTCNN_OK:
        raise MemoryError("conv2d: out of memory for the im2col scratch buffer")
    return y


def conv2d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    has_bias=True,
                    need_grad_input=True, grad_weight=None, grad_bias=None,
                    reference=False):
    """Gradients of conv2d with respect to its input, weight and bias.

    Args:
        grad_y: gradient of the loss with respect to conv2d's output (N, K, P, Q).
        x: conv2d's input (N, C, H, W).
        weight: conv2d's weight (K, C / groups, R, S).
        stride, padding, dilation, groups: as given to conv2d.
        has_bias: whether the convolution had a bias (compute its gradient).
        need_grad_input: compute the input gradient (False for a first layer).
        grad_weight: None, or a writeable C-contiguous float32 (K, C, R, S)
            array the weight gradient is ADDED to, in place (layers pass .grad);
            (K, C / groups, R, S) with groups.
        grad_bias: None, or a (K,) float32 array, likewise; only with has_bias.
        reference: use the plain reference kernels (the test oracle).

    Input shape:
        grad_y (N, K, P, Q), x (N, C, H, W), weight (K, C / groups, R, S).

    Output shape:
        grad_x (N, C, H, W), grad_w (K, C / groups, R, S), grad_b (K,).

    Returns:
        (grad_x or None, grad_w, grad_b or None), float32. grad_w and grad_b
        are the given accumulators when passed, else fresh arrays.

    Raises:
        TypeError, ValueError: as conv2d, plus a grad_y whose shape is not
            the output shape, or an accumulator of the wrong type or shape.
        MemoryError: scratch memory could not be allocated.

    Example:
        >>> x = np.ones((1, 1, 4, 4), np.float32); w = np.ones((2, 1, 3, 3), np.float32)
        >>> gx, gw, gb = fastcnn.functional.conv2d_backward(np.ones((1, 2, 2, 2)), x, w)
        >>> gb
        array([4., 4.], dtype=float32)
    """
    xa = _conv2d_array4(x, "x", "(N, C, H, W)")
    wa = _conv2d_array4(weight, "weight", "(K, C, R, S)")
    geo = _geometry(xa.shape, wa.shape, stride, padding, dilation, groups)
    dya = _conv2d_array4(grad_y, "grad_y", "(N, K, P, Q)")
    check_shape(dya, (geo[0], geo[4], geo[11], geo[12]), "grad_y")
    if not has_bias and grad_bias is not None:
        raise ValueError("grad_bias was given but has_bias=False. Received: grad_bias of shape "
                         f"{np.shape(grad_bias)}")
    gw = out_buffer(grad_weight, wa.shape, "grad_weight")
    gb = out_buffer(grad_bias, (wa.shape[0],), "grad_bias") if has_bias else None
    gx = _empty(xa.shape) if need_grad_input else None
    cdef c.conv2d_shape s = _conv2d_shape(geo)
    cdef float *pgx = fptr(gx) if gx is not None else NULL
    cdef float *pgw = fptr(gw)
    cdef float *pgb = fptr(gb) if gb is not None else NULL
    cdef const float *pdy = fptr(dya)
    cdef const float *px = fptr(xa)
    cdef const float *pw = fptr(wa)
    cdef int nt = get_num_threads()
    cdef int err = c.FASTCNN_OK
    cdef bint ref = reference
    with nogil:
        if ref:
            if pgx != NULL:
                c.conv2d_backward_data_ref(pgx, pdy, pw, &s)
            c.conv2d_backward_weight_ref(pgw, pgb, pdy, px, &s)
        else:
            if pgx != NULL:
                err = c.conv2d_backward_data(pgx, pdy, pw, &s, nt)
            if err == c.FASTCNN_OK:
                err = c.conv2d_backward_weight(pgw, pgb, pdy, px, &s, nt)
    if err != c.FASTCNN_OK:
        raise MemoryError("conv2d_backward: out of memory for the im2col scratch buffer")
    return gx, gw, gb


def _conv2d_array4(a, name, letters):
    arr = as_float32(a, name)
    if arr.ndim != 4:
        raise ValueError(f"{name} must be 4-dimensional {letters}. "
                         f"Received: {name}.shape={arr.shape}")
    return arr


def _conv2d_padding(padding, R, S, stride, dilation=(1, 1)):
    """(top, bottom, left, right) zero padding."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' requires stride 1. "
                                 f"Received: stride={stride}")
            rows, cols = dilation[0] * (R - 1), dilation[1] * (S - 1)
            return rows // 2, rows - rows // 2, cols // 2, cols - cols // 2
        raise ValueError("padding must be an int, a pair of ints, 'same' or 'valid'. "
                         f"Received: padding={padding!r}")
    ph, pw = as_pair(padding, "padding")
    if min(ph, pw) < 0:
        raise ValueError(f"padding must be non-negative. Received: padding={padding!r}")
    if max(ph, pw) > INT32_MAX:
        raise ValueError(f"padding must be at most {INT32_MAX}. Received: padding={padding!r}")
    return ph, ph, pw, pw


def _conv2d_groups(C, K, Cw, groups, xshape, wshape):
    """groups as an int, after checking that it divides C and K and that the
    weight has C / groups input channels."""
    g = positive_int(groups, "groups")
    if C % g or K % g:
        raise ValueError(f"groups must divide the input channels ({C}) and the output "
                         f"channels ({K}). Received: groups={groups!r}")
    if Cw * g != C:
        raise ValueError(f"weight must have {C // g} input channels (x's {C} / groups {g}). "
                         f"Received: x.shape={xshape}, weight.shape={wshape}")
    return g


def _geometry(xshape, wshape, stride, padding, dilation=1, groups=1):
    """(N, C, H, W, K, R, S, sh, sw, ph, pw, P, Q, dh, dw, G) after validating
    the shapes."""
    N, C, H, W = xshape
    K, Cw, R, S = wshape
    G = _conv2d_groups(C, K, Cw, groups, xshape, wshape)
    sh, sw = positive_pair(stride, "stride")
    if max(sh, sw) > INT32_MAX:
        raise ValueError(f"stride must be at most {INT32_MAX}. Received: stride={stride!r}")
    dh, dw = positive_pair(dilation, "dilation")
    if max(dh, dw) > INT32_MAX:
        raise ValueError(f"dilation must be at most {INT32_MAX}. "
                         f"Received: dilation={dilation!r}")
    top, bottom, left, right = _conv2d_padding(padding, R, S, (sh, sw), (dh, dw))
    Re, Se = dh * (R - 1) + 1, dw * (S - 1) + 1
    if Re > H + top + bottom or Se > W + left + right:
        span = "" if (dh, dw) == (1, 1) else f" dilated by ({dh}, {dw}) spans ({Re}, {Se}) and"
        raise ValueError(f"kernel ({R}, {S}){span} is larger than the padded input "
                         f"({H + top + bottom}, {W + left + right}). Received: x.shape={xshape}, "
                         f"weight.shape={wshape}, padding={padding!r}, dilation={dilation!r}")
    P = (H + top + bottom - Re) // sh + 1
    Q = (W + left + right - Se) // sw + 1
    CRS = C // G * R * S
    for what, n in (("output", N * K * P * Q), ("im2col scratch", N * CRS * P * Q)):
        if n > MAX_ELEMENTS:
            raise ValueError(f"the convolution is too large: its {what} would have {n} "
                             f"elements (limit {MAX_ELEMENTS}). Received: x.shape={xshape}, "
                             f"weight.shape={wshape}, stride={stride!r}, padding={padding!r}")
    if N * K * CRS * P * Q > MAX_MACS:
        raise ValueError(f"the convolution is too large: {N * K * CRS * P * Q} "
                         f"multiply-adds (limit {MAX_MACS}). Received: x.shape={xshape}, "
                         f"weight.shape={wshape}")
    return N, C, H, W, K, R, S, sh, sw, top, left, P, Q, dh, dw, G


cdef c.conv2d_shape _conv2d_shape(tuple g):
    cdef c.conv2d_shape s
    s.N, s.C, s.H, s.W, s.K, s.R, s.S = g[0], g[1], g[2], g[3], g[4], g[5], g[6]
    s.sh, s.sw, s.ph, s.pw, s.P, s.Q = g[7], g[8], g[9], g[10], g[11], g[12]
    s.dh, s.dw, s.G = g[13], g[14], g[15]
    s.clamp, s.lo, s.hi = 0, 0.0, 0.0
    return s


def _set_group_columns(columns):
    """Test and tuning hook: group images so one GEMM spans about `columns`
    output positions (<= 0 restores the default). Returns the old value."""
    return c.conv2d_set_group_columns(int(columns))


def _set_col2im_taps(on):
    """Test hook: col2im (backward data on the GEMM path) scatters one
    kernel tap at a time (True) instead of a whole channel at once where the
    instruction set can (False). Returns the old setting."""
    return bool(c.conv2d_set_col2im_taps(1 if on else 0))


def _set_chain_strip_floats(floats):
    """Test and tuning hook: a conv2d chain's strips (csrc/conv2d_chain.c)
    hold about ``floats`` floats of expanded rows (<= 0 restores the
    default). Returns the old value."""
    return c.conv2d_set_chain_strip_floats(int(floats))


def _set_direct(mode):
    """Test hook: the forward's direct first-layer kernel is used by shape
    (0), whenever the stride is 1 or 2 both ways (1), or never (-1). Returns
    the old mode."""
    return c.conv2d_set_direct(int(mode))


def _set_kvec(mode):
    """Test hook: the forward's channel-vector direct kernel is used by shape
    (0), whenever K is a multiple of the vector length (1), or never (-1).
    Returns the old mode."""
    return c.conv2d_set_kvec(int(mode))


def _set_depthwise_vectors(mode):
    """Test hook: the depthwise forward runs in channel vectors where timing
    or the shape chooses them (0), whenever one output channel per input
    channel and C a multiple of the vector length allow it (1), or never (-1);
    the weight gradient runs in them whenever they fit unless -1. Returns the
    old mode."""
    return c.conv2d_set_depthwise_vectors(int(mode))


def _set_winograd(mode):
    """Test hook: Winograd for 3x3 stride-1 convolutions is chosen by timing
    (0), whenever it fits (1: F(2x2, 3x3) for the forward, weight gradient,
    and backward data with padding <= 2; 2: the same with F(4x4, 3x3) for the
    forward, which timing tries only for a frozen model's), or never (-1).
    Returns the old mode."""
    return c.conv2d_set_winograd(int(mode))


def _set_dense(mode):
    """Test hook: the dense path (an input map no larger than the kernel:
    one GEMM over whole images) is chosen by timing (0), whenever it fits
    (1), or never (-1). Returns the old mode."""
    return c.conv2d_set_dense(int(mode))


def _set_grouped_wgrad(mode):
    """Test hook: a pointwise weight gradient on the GEMM path runs its
    images one GEMM each (maps of 16 positions or more) or grouped into deeper
    products, by timing (0), grouped (1), or one each (-1). Returns the old
    mode."""
    return c.conv2d_set_grouped_wgrad(int(mode))


def _set_tune(mode):
    """Test hook: each convolution shape's path is chosen by timing its first
    call (True) or by shape only (False); forgets the choices kept so far.
    Returns the old mode (FASTCNN_CONV_TUNE=0 in the environment sets False)."""
    return bool(c.conv2d_set_tune(1 if mode else 0))


def _set_tune_threads(n):
    """Test hook: for each shape and thread count, timing keeps the threads
    it times (0) or min(n, the count) (n > 0). Returns the old n."""
    return c.conv2d_set_tune_threads(int(n))


def _tune_threads_chosen():
    """Test hook: how many times a shape's threads were chosen so far (timed,
    or taken from _set_tune_threads)."""
    return c.conv2d_tune_threads_chosen()


def _set_tune_best(seconds):
    """Test hook: every kept choice's fastest call with fewer threads than
    asked for, in seconds (a probe on the threads asked for that beats it by
    5% has them timed again)."""
    c.conv2d_tune_set_best(float(seconds))


# ---- the executor's step (fastcnn/_executor.pxi) ---------------------------------

ctypedef struct conv2d_step_args:
    int x, y, dx, dy            # step_slots
    c.conv2d_shape s
    c.conv2d_prepared *prep     # a frozen model's: what the paths derive from the weights


cdef int conv2d_step_forward(const void *a, void **ptr, float **par, int need_dx,
                             int nt) noexcept nogil:
    # par: weight, bias (or NULL)
    cdef const conv2d_step_args *p = <const conv2d_step_args *> a
    return c.conv2d_forward_prepared(<float *> ptr[p.y], <float *> ptr[p.x], par[0], par[1],
                                     &p.s, p.prep, nt)


cdef int conv2d_step_backward(const void *a, void **ptr, float **par, int need_dx,
                              int nt) noexcept nogil:
    # par: weight, weight.grad, bias.grad (or NULL)
    cdef const conv2d_step_args *p = <const conv2d_step_args *> a
    cdef int err = c.FASTCNN_OK
    if need_dx:
        err = c.conv2d_backward_data(<float *> ptr[p.dx], <float *> ptr[p.dy], par[0], &p.s, nt)
    if err == c.FASTCNN_OK:
        err = c.conv2d_backward_weight(par[1], par[2], <float *> ptr[p.dy], <float *> ptr[p.x],
                                       &p.s, nt)
    return err


ctypedef struct conv2d_chain_step_args:
    int x, y, dx, dy            # step_slots
    c.conv2d_chain ch


cdef int conv2d_chain_step_forward(const void *a, void **ptr, float **par, int need_dx,
                                   int nt) noexcept nogil:
    cdef const conv2d_chain_step_args *p = <const conv2d_chain_step_args *> a
    return c.conv2d_chain_forward(<float *> ptr[p.y], <float *> ptr[p.x], &p.ch, nt)


cdef int conv2d_chain_step_backward(const void *a, void **ptr, float **par, int need_dx,
                                    int nt) noexcept nogil:
    return c.FASTCNN_ENOMEM     # never run: a chain is compiled for inference only


cdef class PreparedWeights:
    """What the convolution paths derive from one weight array that never
    changes (csrc/conv2d_prepared.c), kept across calls and shared by a frozen
    model's compiled graphs of every input shape."""
    cdef c.conv2d_prepared *p

    def __cinit__(self):
        self.p = c.conv2d_prepared_new()
        if self.p == NULL:
            raise MemoryError("fastcnn: out of memory for a frozen convolution")

    def __dealloc__(self):
        c.conv2d_prepared_free(self.p)


cdef class ConvStep(WeightStep):
    """conv2d: y = conv(x, weight) + bias; backward dx, dweight, dbias."""
    cdef conv2d_step_args a
    cdef PreparedWeights prepared       # a frozen model's (node attr "prepared"), or None

    def __init__(self, node, slots, tuple geometry):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        self.a.s = _conv2d_shape(geometry)
        if "clamp" in node.attrs:           # a fused activation (compiler, inference)
            self.a.s.clamp = 1
            self.a.s.lo, self.a.s.hi = node.attrs["clamp"]
        self.weight, self.bias = node.params["weight"], node.params.get("bias")
        self.prepared = node.attrs.get("prepared")     # weights that never change
        if self.prepared is not None:
            self.a.prep = self.prepared.p
        self.wshape = (self.a.s.K, self.a.s.C // self.a.s.G, self.a.s.R, self.a.s.S)
        self.bshape = (self.a.s.K,)
        self.args, self.fwd, self.bwd = &self.a, conv2d_step_forward, conv2d_step_backward
        self.npar, self.has_params = 3, True


cdef class ChainStep(Step):
    """conv2d_chain (a frozen model's inference): expand 1x1 -> depthwise ->
    [project 1x1] by strips of output rows (csrc/conv2d_chain.c). Built from
    the ConvSteps of its links (project None when absent), whose weights
    never change: their pointers are taken once."""
    cdef conv2d_chain_step_args a
    cdef list links                     # the ConvSteps, which keep the arrays alive

    def __init__(self, node, slots, ConvStep expand, ConvStep dw, project):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        self.links = [expand, dw, project]
        self.a.ch.has_project = project is not None
        _chain_link(&self.a.ch.expand, expand)
        _chain_link(&self.a.ch.dw, dw)
        if project is not None:
            _chain_link(&self.a.ch.project, project)
        self.args, self.fwd, self.bwd = &self.a, conv2d_chain_step_forward, \
            conv2d_chain_step_backward


cdef int _chain_link(c.conv2d_link *link, ConvStep conv) except -1:
    link.s, link.prep = conv.a.s, conv.a.prep
    link.w = _param_ptr(conv.weight.data, conv.wshape, False, "weight")
    link.b = NULL if conv.bias is None else _param_ptr(conv.bias.data, conv.bshape, False, "bias")
    return 0
