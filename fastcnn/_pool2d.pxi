# Bindings of csrc/pool2d.c: max and average 2-d pooling (plain and adaptive),
# forward and backward.
import numpy as np
from libc.stdint cimport int32_t, int64_t

from . cimport _fastcnn as c
from ._fastcnn cimport fptr, iptr
from ._checks import (INT32_MAX, as_float32, as_int, check_shape, nonnegative_pair,
                      positive_pair)
from ._config import get_num_threads


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
               return_indices=False, reference=False):
    """2-d max pooling over the planes of a batch of images (torch.nn.functional.max_pool2d).

    Windows are clipped to the image, so padding never wins (PyTorch treats it
    as -inf); the first maximum wins a tie; a NaN in a window is its maximum
    (the last NaN's index is returned), as in PyTorch.

    Args:
        x: array (N, C, H, W), any real dtype (converted once to float32).
        kernel_size: window size, int or (kh, kw), each >= 1.
        stride: step between windows, int or pair, each >= 1; default kernel_size.
        padding: implicit padding on each side, int or pair, each at most
            half the kernel size.
        dilation: spacing of the window's taps, int or pair, each >= 1.
        ceil_mode: round the output size up (a last, clipped window that
            starts inside the image or its left padding) instead of down.
        return_indices: also return the argmax indices (for max_pool2d_backward).
        reference: use the plain reference kernel (the test oracle).

    Input shape:
        (N, C, H, W).

    Output shape:
        (N, C, P, Q) with P = (H + 2 ph - dh (kh - 1) - 1) / sh + 1 rounded down
        (or up with ceil_mode, less one if that window would start past
        H + ph), Q likewise.

    Returns:
        float32 array y, or (y, indices) when return_indices: indices is int32
        (N, C, P, Q), the flat position h * W + w of each maximum within its
        plane (PyTorch's indices).

    Raises:
        ValueError: x not 4-dimensional or empty, H * W >= 2**31, a kernel_size,
            stride or dilation < 1, a negative padding or one above half the
            kernel, a dilated kernel larger than the padded input, or a
            window whose taps all fall in the padding (PyTorch returns -inf
            and an index outside the image there).
        TypeError: non-numeric x, non-integer sizes, non-bool ceil_mode.

    Example:
        >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        >>> y, idx = fastcnn.functional.max_pool2d(x, 2, return_indices=True)
        >>> y[0, 0], idx[0, 0]
        (array([[ 5.,  7.], [13., 15.]], dtype=float32), array([[ 5,  7], [13, 15]], dtype=int32))
    """
    xa = _pool2d_input(x)
    cdef c.pool2d_shape s = _pool2d_shape(xa.shape, kernel_size, stride, padding, dilation,
                                          ceil_mode)
    y = _empty((s.N, s.C, s.P, s.Q))
    cdef float *py = fptr(y)
    cdef const float *px = fptr(xa)
    cdef int nt = get_num_threads()
    cdef bint ref = reference
    if not return_indices and not ref:      # the values alone: the same bits, faster
        with nogil:
            c.maxpool2d_forward_inference(py, px, &s, nt)
        return y
    idx = _empty((s.N, s.C, s.P, s.Q), np.int32)
    cdef int32_t *pi = iptr(idx)
    with nogil:
        if ref:
            c.maxpool2d_forward_ref(py, pi, px, &s)
        else:
            c.maxpool2d_forward(py, pi, px, &s, nt)
    return (y, idx) if return_indices else y


def max_pool2d_backward(grad_y, indices, input_shape, *, reference=False):
    """Gradient of max_pool2d: each grad_y element added at its argmax in the input.

    Overlapping windows that share a maximum accumulate, as in PyTorch.

    Args:
        grad_y: gradient of the loss with respect to max_pool2d's output, (N, C, P, Q).
        indices: the indices max_pool2d returned (integers in [0, H * W)), same shape.
        input_shape: the shape (N, C, H, W) of max_pool2d's input.
        reference: use the plain reference kernel (the test oracle).

    Input shape:
        grad_y and indices (N, C, P, Q).

    Output shape:
        input_shape (N, C, H, W).

    Returns:
        float32 array: the gradient with respect to max_pool2d's input.

    Raises:
        ValueError: input_shape not 4 positive integers or H * W >= 2**31;
            grad_y not (N, C, *, *) matching it; indices of another shape, or an
            index outside [0, H * W).
        TypeError: non-numeric grad_y, non-integer indices.

    Example:
        >>> y, idx = fastcnn.functional.max_pool2d(x, 2, return_indices=True)
        >>> dx = fastcnn.functional.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    """
    N, C, H, W = _pool2d_input_shape(input_shape)
    dy, am = _pool2d_scatter_operands(grad_y, indices, N, C, H, W,
                               f"input_shape={tuple(input_shape)}")
    cdef c.pool2d_shape s = _pool2d_scatter_shape(N, C, H, W, dy)
    dx = _empty((N, C, H, W))
    cdef float *pdx = fptr(dx)
    cdef const float *pdy = fptr(dy)
    cdef const int32_t *pi = iptr(am)
    cdef int nt = get_num_threads()
    cdef bint ref = reference
    cdef int64_t bad
    with nogil:
        if ref:
            bad = c.maxpool2d_backward_ref(pdx, pdy, pi, &s)
        else:
            bad = c.maxpool2d_backward(pdx, pdy, pi, &s, nt)
    if bad:
        _pool2d_raise_bad_index(am, H * W)
    return dx


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, *, reference=False):
    """2-d average pooling over the planes of a batch of images (torch.nn.functional.avg_pool2d).

    Args:
        x: array (N, C, H, W), any real dtype (converted once to float32).
        kernel_size: window size, int or (kh, kw), each >= 1.
        stride: step between windows, int or pair, each >= 1; default kernel_size.
        padding: implicit zero padding on each side, int or pair, each at most
            half the kernel size.
        ceil_mode: round the output size up (a last, clipped window that
            starts inside the image or its left padding) instead of down.
        count_include_pad: divide by the window's size within the padded
            image (True, PyTorch's default; a ceil-mode window is clipped to
            the padded image) or within the image only (False).
        reference: use the plain reference kernel (the test oracle).

    Input shape:
        (N, C, H, W).

    Output shape:
        (N, C, P, Q) with P = (H + 2 ph - kh) / sh + 1 rounded down (or up with
        ceil_mode, less one if that window would start past H + ph), Q likewise.

    Returns:
        float32 array: the window means.

    Raises:
        ValueError: x not 4-dimensional or empty, H * W >= 2**31, a kernel_size
            or stride < 1, a negative padding or one above half the kernel, or
            a kernel larger than the padded input.
        TypeError: non-numeric x, non-integer sizes, non-bool ceil_mode or
            count_include_pad.

    Example:
        >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        >>> fastcnn.functional.avg_pool2d(x, 2)[0, 0]
        array([[ 2.5,  4.5], [10.5, 12.5]], dtype=float32)
    """
    xa = _pool2d_input(x)
    cdef c.pool2d_shape s = _pool2d_shape(xa.shape, kernel_size, stride, padding, 1, ceil_mode)
    cdef int incl = _pool2d_flag(count_include_pad, "count_include_pad")
    y = _empty((s.N, s.C, s.P, s.Q))
    cdef float *py = fptr(y)
    cdef const float *px = fptr(xa)
    cdef int nt = get_num_threads()
    cdef bint ref = reference
    with nogil:
        if ref:
            c.avgpool2d_forward_ref(py, px, &s, incl)
        else:
            c.avgpool2d_forward(py, px, &s, incl, nt)
    return y


def avg_pool2d_backward(grad_y, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, *, reference=False):
    """Gradient of avg_pool2d: each grad_y element spread evenly over its window.

    Args:
        grad_y: gradient of the loss with respect to avg_pool2d's output.
        input_shape: the shape (N, C, H, W) of avg_pool2d's input.
        kernel_size, stride, padding, ceil_mode, count_include_pad: as given
            to avg_pool2d.
        reference: use the plain reference kernel (the test oracle).

    Input shape:
        grad_y (N, C, P, Q), the shape avg_pool2d produced.

    Output shape:
        input_shape (N, C, H, W).

    Returns:
        float32 array: the gradient with respect to avg_pool2d's input.

    Raises:
        ValueError: input_shape not 4 positive integers or H * W >= 2**31, bad
            pooling sizes (as avg_pool2d), or grad_y not of the output shape.
        TypeError: non-numeric grad_y, non-integer sizes.
        MemoryError: no memory for the scratch rows (about W floats per thread).

    Example:
        >>> y = fastcnn.functional.avg_pool2d(x, 2)
        >>> dx = fastcnn.functional.avg_pool2d_backward(np.ones_like(y), x.shape, 2)
    """
    shape = _pool2d_input_shape(input_shape)
    cdef c.pool2d_shape s = _pool2d_shape(shape, kernel_size, stride, padding, 1, ceil_mode)
    cdef int incl = _pool2d_flag(count_include_pad, "count_include_pad")
    dy = as_float32(grad_y, "grad_y")
    check_shape(dy, (s.N, s.C, s.P, s.Q), "grad_y")
    dx = _empty(shape)
    cdef float *pdx = fptr(dx)
    cdef const float *pdy = fptr(dy)
    cdef int nt = get_num_threads()
    cdef bint ref = reference
    cdef int status = c.FASTCNN_OK
    with nogil:
        if ref:
            c.avgpool2d_backward_ref(pdx, pdy, &s, incl)
        else:
            status = c.avgpool2d_backward(pdx, pdy, &s, incl, nt)
    if status == c.FASTCNN_ENOMEM:
        raise MemoryError("avg_pool2d_backward: out of memory for its scratch rows")
    return dx


def adaptive_max_pool2d(x, output_size, *, return_indices=False, reference=False):
    """Max pooling to a fixed output size (torch.nn.functional.adaptive_max_pool2d).

    Output (p, q) takes the maximum over rows [floor(p H / oh), ceil((p + 1)
    H / oh)) and the columns likewise, with max_pool2d's rules (first maximum,
    NaN wins); any output size, smaller or larger than the input.

    Args:
        x: array (N, C, H, W), any real dtype (converted once to float32).
        output_size: int or pair (oh, ow), each >= 1.
        return_indices: also return the argmax indices (for max_pool2d_backward).
        reference: use the plain reference kernel (the test oracle).

    Returns:
        float32 array (N, C, oh, ow), or (y, indices) as max_pool2d.

    Raises:
        ValueError: x not 4-dimensional or empty, H * W >= 2**31, an output size < 1.
        TypeError: non-numeric x or a non-integer output_size.

    Example:
        >>> fastcnn.functional.adaptive_max_pool2d(np.arange(5.0).reshape(1, 1, 1, 5), (1, 3))
        array([[[[1., 3., 4.]]]], dtype=float32)
    """
    xa = _pool2d_input(x)
    cdef c.pool2d_shape s = _pool2d_adaptive_shape(xa.shape, output_size)
    y = _empty((s.N, s.C, s.P, s.Q))
    idx = _empty((s.N, s.C, s.P, s.Q), np.int32)
    cdef float *py = fptr(y)
    cdef int32_t *pi = iptr(idx)
    cdef const float *px = fptr(xa)
    cdef int nt = get_num_threads()
    cdef bint ref = reference
    with nogil:
        if ref:
            c.adaptive_maxpool2d_forward_ref(py, pi, px, &s)
        else:
            c.adaptive_maxpool2d_forward(py, pi, px, &s, nt)
    return (y, idx) if return_indices else y


def adaptive_avg_pool2d(x, output_size, *, reference=False):
    """Average pooling to a fixed output size (torch.nn.functional.adaptive_avg_pool2d).

    Output (p, q) is the mean over rows [floor(p H / oh), ceil((p + 1) H / oh))
    and the columns likewise; any output size, smaller or larger than the input.

    Args:
        x: array (N, C, H, W), any real dtype (converted once to float32).
        output_size: int or pair (oh, ow), each >= 1.
        reference: use the plain reference kernel (the test oracle).

    Returns:
        float32 array (N, C, oh, ow).

    Raises:
        ValueError: x not 4-dimensional or empty, H * W >= 2**31, an output size < 1.
        TypeError: non-numeric x or a non-integer output_size.

    Example:
        >>> fastcnn.functional.adaptive_avg_pool2d(np.arange(5.0).reshape(1, 1, 1, 5), (1, 3))
        array([[[[0.5, 2. , 3.5]]]], dtype=float32)
    """
    xa = _pool2d_input(x)
    cdef c.pool2d_shape s = _pool2d_adaptive_shape(xa.shape, output_size)
    y = _empty((s.N, s.C, s.P, s.Q))
    cdef float *py = fptr(y)
    cdef const float *px = fptr(xa)
    cdef int nt = get_num_threads()
    cdef bint ref = reference
    with nogil:
        if ref:
            c.adaptive_avgpool2d_forward_ref(py, px, &s)
        else:
            c.adaptive_avgpool2d_forward(py, px, &s, nt)
    return y


def adaptive_avg_pool2d_backward(grad_y, input_shape, *, reference=False):
    """Gradient of adaptive_avg_pool2d: each grad_y element spread evenly over its window.

    Args:
        grad_y: gradient with respect to adaptive_avg_pool2d's output (N, C, oh, ow).
        input_shape: the shape (N, C, H, W) of adaptive_avg_pool2d's input.
        reference: use the plain reference kernel (the test oracle).

    Returns:
        float32 array of input_shape.

    Raises:
        ValueError: input_shape not 4 positive integers or H * W >= 2**31, or
            grad_y not (N, C, *, *) matching it.
        TypeError: non-numeric grad_y.
    """
    N, C, H, W = _pool2d_input_shape(input_shape)
    dy = as_float32(grad_y, "grad_y")
    if dy.ndim != 4 or dy.shape[:2] != (N, C):
        raise ValueError(f"grad_y must have shape ({N}, {C}, P, Q) to match "
                         f"input_shape={tuple(input_shape)}. Received: grad_y.shape={dy.shape}")
    cdef c.pool2d_shape s = _pool2d_adaptive_shape((N, C, H, W), dy.shape[2:])
    dx = _empty((N, C, H, W))
    cdef float *pdx = fptr(dx)
    cdef const float *pdy = fptr(dy)
    cdef int nt = get_num_threads()
    cdef bint ref = reference
    with nogil:
        if ref:
            c.adaptive_avgpool2d_backward_ref(pdx, pdy, &s)
        else:
            c.adaptive_avgpool2d_backward(pdx, pdy, &s, nt)
    return dx


# ---- validation -------------------------------------------------------------

def _pool2d_check_plane(shape, name):
    """Raise unless H * W fits the int32 indices."""
    if shape[2] * shape[3] > INT32_MAX:
        raise ValueError(f"H * W must be below 2**31 (indices are int32). "
                         f"Received: {name}={tuple(shape)}")


def _pool2d_input(x):
    """x as C-contiguous float32 (N, C, H, W), the plane size checked before any copy."""
    arr = np.asarray(x)
    if arr.ndim != 4:
        raise ValueError(f"x must be 4-dimensional (N, C, H, W). Received: x.shape={arr.shape}")
    _pool2d_check_plane(arr.shape, "x.shape")
    return as_float32(arr, "x")


def _pool2d_input_shape(input_shape):
    """input_shape as a tuple of 4 positive ints with H * W < 2**31."""
    try:
        shape = tuple(as_int(v, "input_shape") for v in input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be 4 positive integers (N, C, H, W). "
                        f"Received: input_shape={input_shape!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape must be 4 positive integers (N, C, H, W). "
                         f"Received: input_shape={input_shape!r}")
    _pool2d_check_plane(shape, "input_shape")
    return shape


def _pool2d_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool. Received: {name}={value!r}")
    return 1 if value else 0


def _pool2d_out(n, k, stride, pad, dil, ceil):
    """Output length along one axis (PyTorch's rule); < 1 if the window does not fit."""
    span = n + 2 * pad - dil * (k - 1) - 1
    out = (span + (stride - 1 if ceil else 0)) // stride + 1
    if ceil and (out - 1) * stride >= n + pad:  # the last window must start before n + pad
        out -= 1
    return out


def _pool2d_empty_window(n, stride, pad, dil, out):
    """The first output position whose window's taps all fall in the padding
    (only windows starting left of the image can), else None."""
    for o in range(out):
        a = o * stride - pad
        if a >= 0:
            return None
        if a + (-a + dil - 1) // dil * dil >= n:
            return o
    return None


def _pool2d_shape(shape, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """The pool2d_shape of pooling an input of `shape` (N, C, H, W), validated."""
    N, C, H, W = shape
    R, S = positive_pair(kernel_size, "kernel_size")
    sh, sw = positive_pair(kernel_size if stride is None else stride, "stride")
    ph, pw = nonnegative_pair(padding, "padding")
    dh, dw = positive_pair(dilation, "dilation")
    ceil = _pool2d_flag(ceil_mode, "ceil_mode")
    if 2 * ph > R or 2 * pw > S:
        raise ValueError(f"padding must be at most half of kernel_size. "
                         f"Received: padding={padding!r} with kernel_size={kernel_size!r}")
    P, Q = _pool2d_out(H, R, sh, ph, dh, ceil), _pool2d_out(W, S, sw, pw, dw, ceil)
    if P < 1 or Q < 1:
        raise ValueError(f"kernel_size must fit in the padded input (H + 2 * padding, "
                         f"W + 2 * padding) = ({H + 2 * ph}, {W + 2 * pw}). "
                         f"Received: kernel_size={kernel_size!r}, dilation={dilation!r}, "
                         f"ceil_mode={ceil_mode!r} for input shape {tuple(shape)}")
    for axis, n, st, pad, dil, out in (("row", H, sh, ph, dh, P), ("column", W, sw, pw, dw, Q)):
        o = _pool2d_empty_window(n, st, pad, dil, out)
        if o is not None:
            raise ValueError(f"every window must cover part of the input, but output {axis} "
                             f"{o} covers only padding. Received: kernel_size={kernel_size!r}, "
                             f"stride={stride!r}, padding={padding!r}, dilation={dilation!r} "
                             f"for input shape {tuple(shape)}")
    return {"N": N, "C": C, "H": H, "W": W, "R": R, "S": S, "sh": sh, "sw": sw,
            "ph": ph, "pw": pw, "dh": dh, "dw": dw, "P": P, "Q": Q}


def _pool2d_adaptive_shape(shape, output_size):
    """The pool2d_shape of adaptive pooling an input of `shape` to `output_size`
    (only N, C, H, W, P, Q matter to its kernels)."""
    N, C, H, W = shape
    P, Q = positive_pair(output_size, "output_size")
    return {"N": N, "C": C, "H": H, "W": W, "R": 1, "S": 1, "sh": 1, "sw": 1, "ph": 0,
            "pw": 0, "dh": 1, "dw": 1, "P": P, "Q": Q, "adaptive": True}


def _pool2d_indices(indices, shape, int64_t plane):
    """indices as C-contiguous int32 of `shape`; values are checked in C (int32)
    or here (other integer dtypes, which must fit int32 first)."""
    arr = np.asarray(indices)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers (max_pool2d's indices). "
                        f"Received: indices with dtype={arr.dtype}")
    check_shape(arr, shape, "indices")
    if arr.dtype != np.int32:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= plane:
            _pool2d_raise_bad_index(arr, plane)
    return np.ascontiguousarray(arr, dtype=np.int32)


def _pool2d_raise_bad_index(arr, int64_t plane):
    bad = arr[(arr < 0) | (arr >= plane)].flat[0]
    raise ValueError(f"indices must be in [0, H * W) = [0, {plane}). Received: an index {bad}")


def _max_pool2d_relu_backward(grad_y, indices, y, *, reference=False):
    """Test hook: relu_backward(max_pool2d_backward(grad_y, indices, y.shape), y) in one pass."""
    ya = _pool2d_input(y)
    N, C, H, W = ya.shape
    dy, am = _pool2d_scatter_operands(grad_y, indices, N, C, H, W, f"y.shape={ya.shape}")
    cdef c.pool2d_shape s = _pool2d_scatter_shape(N, C, H, W, dy)
    dx = _empty((N, C, H, W))
    cdef float *pdx = fptr(dx)
    cdef const float *pdy = fptr(dy)
    cdef const float *py = fptr(ya)
    cdef const int32_t *pi = iptr(am)
    cdef int nt = get_num_threads()
    cdef bint ref = reference
    cdef int64_t bad
    with nogil:
        if ref:
            bad = c.maxpool2d_relu_backward_ref(pdx, pdy, pi, py, &s)
        else:
            bad = c.maxpool2d_relu_backward(pdx, pdy, pi, py, &s, nt)
    if bad:
        _pool2d_raise_bad_index(am, H * W)
    return dx


def _pool2d_scatter_operands(grad_y, indices, N, C, H, W, what):
    """grad_y (N, C, P, Q) as float32 and its max-pooling indices as int32,
    checked against the (N, C, H, W) input described by `what`."""
    dy = as_float32(grad_y, "grad_y")
    if dy.ndim != 4 or dy.shape[:2] != (N, C):
        raise ValueError(f"grad_y must have shape ({N}, {C}, P, Q) to match "
                         f"{what}. Received: grad_y.shape={dy.shape}")
    return dy, _pool2d_indices(indices, dy.shape, H * W)


cdef c.pool2d_shape _pool2d_scatter_shape(int64_t N, int64_t C, int64_t H, int64_t W, dy):
    """The shape of a scatter through indices: the window does not matter."""
    cdef c.pool2d_shape s
    s.N, s.C, s.H, s.W = N, C, H, W
    s.P, s.Q = dy.shape[2], dy.shape[3]
    s.R = s.S = s.sh = s.sw = s.dh = s.dw = 1
    s.ph = s.pw = 0
    return s


# ---- the executor's step (fastcnn/_executor.pxi) ---------------------------------

ctypedef struct pool2d_step_args:
    int x, y, dx, dy            # step_slots
    int idx, relu               # slots: argmax indices (int32), the ReLU's output (training)
    c.pool2d_shape s
    int avg, incl, training, fused_relu, adaptive
    int64_t nx, ny


cdef int pool2d_step_forward(const void *a, void **ptr, float **par, int need_dx,
                             int nt) noexcept nogil:
    cdef const pool2d_step_args *p = <const pool2d_step_args *> a
    cdef float *x = <float *> ptr[p.x]
    cdef float *y = <float *> ptr[p.y]
    cdef int32_t *idx = NULL if p.idx < 0 else <int32_t *> ptr[p.idx]
    if p.adaptive and p.avg:
        c.adaptive_avgpool2d_forward(y, x, &p.s, nt)
    elif p.adaptive:
        c.adaptive_maxpool2d_forward(y, idx, x, &p.s, nt)
    elif p.avg:
        c.avgpool2d_forward(y, x, &p.s, p.incl, nt)
    elif not p.training:                # values only: no indices
        c.maxpool2d_forward_inference(y, x, &p.s, nt)
        if p.fused_relu:                # they commute: relu on the pooled output
            c.relu_forward(y, y, p.ny, nt)
    elif not p.fused_relu:
        c.maxpool2d_forward(y, idx, x, &p.s, nt)
    else:                               # relu into its own slot, kept for the backward mask
        c.relu_forward(<float *> ptr[p.relu], x, p.nx, nt)
        c.maxpool2d_forward(y, idx, <float *> ptr[p.relu], &p.s, nt)
    return c.FASTCNN_OK


cdef int pool2d_step_backward(const void *a, void **ptr, float **par, int need_dx,
                              int nt) noexcept nogil:
    cdef const pool2d_step_args *p = <const pool2d_step_args *> a
    cdef float *dx = <float *> ptr[p.dx]
    cdef float *dy = <float *> ptr[p.dy]
    if not need_dx:
        return c.FASTCNN_OK
    if p.adaptive and p.avg:
        c.adaptive_avgpool2d_backward(dx, dy, &p.s, nt)
        return c.FASTCNN_OK
    if p.avg:
        return c.avgpool2d_backward(dx, dy, &p.s, p.incl, nt)
    if p.fused_relu:
        c.maxpool2d_relu_backward(dx, dy, <int32_t *> ptr[p.idx], <float *> ptr[p.relu], &p.s, nt)
    else:
        c.maxpool2d_backward(dx, dy, <int32_t *> ptr[p.idx], &p.s, nt)
    return c.FASTCNN_OK


cdef class PoolStep(Step):
    """max or average pooling, plain or adaptive (shape["adaptive"]). A max pooling may absorb the ReLU before it
    (node attribute relu): in training it applies the ReLU into its own slot,
    pools that and masks its backward scatter with it; in inference it pools x
    and applies the ReLU to its output (they commute)."""
    cdef pool2d_step_args a

    def __init__(self, node, slots, dict shape, bint avg, bint training):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        d = shape
        self.a.s.N, self.a.s.C, self.a.s.H, self.a.s.W = d["N"], d["C"], d["H"], d["W"]
        self.a.s.R, self.a.s.S, self.a.s.sh, self.a.s.sw = d["R"], d["S"], d["sh"], d["sw"]
        self.a.s.ph, self.a.s.pw, self.a.s.P, self.a.s.Q = d["ph"], d["pw"], d["P"], d["Q"]
        self.a.s.dh, self.a.s.dw = d["dh"], d["dw"]
        self.a.avg, self.a.training = avg, training
        self.a.incl = 1 if node.attrs.get("count_include_pad", True) else 0
        self.a.idx, self.a.relu = slots.get("indices", -1), slots.get("relu", -1)
        self.a.fused_relu = bool(node.attrs.get("relu"))
        self.a.adaptive = bool(d.get("adaptive"))
        self.a.nx = self.a.s.N * self.a.s.C * self.a.s.H * self.a.s.W
        self.a.ny = self.a.s.N * self.a.s.C * self.a.s.P * self.a.s.Q
        self.args, self.fwd, self.bwd = &self.a, pool2d_step_forward, pool2d_step_backward
