# Binding of csrc/gemm: the sgemm engine, for tests and benchmarks.
import math

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t

from . cimport _fastcnn as capi  # not `c`: that is the output argument
from ._fastcnn cimport fptr
from ._checks import as_float, as_float32
from ._config import get_num_threads


cdef object _gemm_operand(object x, str name):
    """x as a 2-D float32 array whose rows are contiguous (a row-slice view of a
    C-contiguous array is used in place, its row stride passed as the leading
    dimension); anything else is converted once."""
    if type(x) is np.ndarray and (<cnp.ndarray> x).descr.type_num == cnp.NPY_FLOAT32 \
            and _gemm_rows_contiguous(<cnp.ndarray> x) and cnp.PyArray_SIZE(<cnp.ndarray> x) > 0:
        return x
    return as_float32(x, name, ndim=2)


cdef bint _gemm_rows_contiguous(cnp.ndarray x):
    if cnp.PyArray_NDIM(x) != 2:
        return False
    cdef cnp.npy_intp *st = cnp.PyArray_STRIDES(x)
    return st[1] == 4 and st[0] >= 4 * cnp.PyArray_DIMS(x)[1] and st[0] % 4 == 0


cdef int64_t _gemm_ld(cnp.ndarray x):
    """Leading dimension (row stride in elements) of a rows-contiguous array."""
    return cnp.PyArray_STRIDES(x)[0] // 4 if cnp.PyArray_DIMS(x)[0] > 1 else cnp.PyArray_DIMS(x)[1]


cdef double _gemm_scalar(object x, str name) except? -1.0:
    """as_float, with a fast path for plain finite Python numbers (tiny
    products are dominated by call overhead)."""
    cdef double v
    if type(x) is float or type(x) is int:
        v = float(x)
        if math.isfinite(v):
            return v
    return as_float(x, name)


def sgemm(a, b, c=None, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0,
          reference=False):
    """General matrix multiply ``C = alpha * op(a) @ op(b) + beta * C`` in float32.

    ``op(x)`` is ``x.T`` when the matching ``trans_*`` flag is set, else ``x``.

    Args:
        a: 2-D array, (M, K), or (K, M) with ``trans_a``.
        b: 2-D array, (K, N), or (N, K) with ``trans_b``.
        c: optional float32 (M, N) array updated in place: C-contiguous, or a
            row-slice view of one (unit column stride; its row stride is
            passed as the leading dimension). When omitted a new array is
            returned (and ``beta`` multiplies zeros).
        trans_a, trans_b: use the transpose of a / b.
        alpha, beta: finite real scalars. With ``beta == 0`` the old C is not
            read (NaN in C is overwritten), as in BLAS.
        reference: use the plain reference kernel (the test oracle).

    Input shape:
        a (M, K) or (K, M); b (K, N) or (N, K); c (M, N).

    Output shape:
        (M, N).

    Returns:
        c (the same object when given), float32.

    Raises:
        ValueError: wrong dimensionality, empty or incompatible shapes, or a
            ``c`` that overlaps ``a`` or ``b``.
        TypeError: non-numeric inputs, or a ``c`` that is not a writeable
            float32 array with contiguous rows.
        MemoryError: when packing buffers cannot be allocated.

    Example:
        >>> sgemm(np.eye(2), np.ones((2, 3)))
        array([[1., 1., 1.],
               [1., 1., 1.]], dtype=float32)
    """
    aa = _gemm_operand(a, "a")
    bb = _gemm_operand(b, "b")
    fa = _gemm_scalar(alpha, "alpha")
    fb = _gemm_scalar(beta, "beta")
    cdef int ta = bool(trans_a), tb = bool(trans_b)
    cdef int64_t M = aa.shape[1] if ta else aa.shape[0]
    cdef int64_t K = aa.shape[0] if ta else aa.shape[1]
    cdef int64_t Kb = bb.shape[1] if tb else bb.shape[0]
    cdef int64_t N = bb.shape[0] if tb else bb.shape[1]
    if K != Kb:
        raise ValueError(
            f"op(a) and op(b) must have matching inner dimensions, op(a) (M, K) and op(b) "
            f"(K, N). Received: a.shape={aa.shape} (trans_a={bool(ta)}), "
            f"b.shape={bb.shape} (trans_b={bool(tb)})")
    if c is None:
        out = np.empty((M, N), np.float32) if fb == 0.0 else np.zeros((M, N), np.float32)
    else:
        out = c
        if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.ndim != 2 \
                or not out.flags.writeable or not out.size \
                or not _gemm_rows_contiguous(<cnp.ndarray> out):
            raise TypeError(
                "c must be a writeable 2-D float32 numpy array with contiguous rows. Received: c "
                + (f"with dtype={out.dtype}, shape={out.shape}, strides={out.strides}"
                   if isinstance(out, np.ndarray) else f"of type {type(out).__name__}"))
        if out.shape != (M, N):
            raise ValueError(f"c must have shape {(M, N)}. Received: c.shape={out.shape}")
        if np.may_share_memory(out, aa) or np.may_share_memory(out, bb):
            raise ValueError("c must not overlap a or b. Received: c sharing memory with "
                             + ("a" if np.may_share_memory(out, aa) else "b"))
    cdef const float *pa = fptr(aa)
    cdef const float *pb = fptr(bb)
    cdef float *pc = fptr(out)
    cdef int64_t lda = _gemm_ld(<cnp.ndarray> aa), ldb = _gemm_ld(<cnp.ndarray> bb)
    cdef int64_t ldc = _gemm_ld(<cnp.ndarray> out)
    cdef float al = fa, be = fb
    cdef int nt = get_num_threads()
    cdef int rc = capi.FASTCNN_OK
    cdef bint ref = reference
    with nogil:
        if ref:
            capi.sgemm_ref(ta, tb, M, N, K, al, pa, lda, pb, ldb, be, pc, ldc)
        else:
            rc = capi.sgemm(ta, tb, M, N, K, al, pa, lda, pb, ldb, be, pc, ldc, nt)
    if rc != capi.FASTCNN_OK:
        raise MemoryError(f"sgemm could not allocate its packing buffers (M={M}, N={N}, K={K})")
    return out


def _set_gemm_split(mode):
    """Test hook: sgemm cuts C among its threads by its cost model (0), along
    M (1), along N (2), along both where a grid fits the threads (3), or
    along M or N as the cost model would without grids (4). Returns the old
    mode."""
    return capi.sgemm_set_split(int(mode))


def _sgemm_packed(a, b, *, trans_a=False, bias=None, clamp=None, kernel=None):
    """Test hook: ``op(a) @ b (+ bias per row, clamped to clamp = (lo, hi))``
    with op(a) packed ahead (sgemm_pack_a, then sgemm_packed_bias_clamp) for
    GEMM kernel number ``kernel`` (default: the one sgemm would pick). a, b:
    float32 C-contiguous 2-D arrays."""
    aa = np.ascontiguousarray(a, np.float32)
    bb = np.ascontiguousarray(b, np.float32)
    cdef int ta = bool(trans_a)
    cdef int64_t M = aa.shape[1] if ta else aa.shape[0]
    cdef int64_t K = aa.shape[0] if ta else aa.shape[1]
    cdef int64_t N = bb.shape[1]
    if bb.shape[0] != K:
        raise ValueError(f"op(a) (M, K) and b (K, N) must match. Received: a.shape={aa.shape}, "
                         f"b.shape={bb.shape}")
    cdef int kr = capi.sgemm_packed_a_kernel(M, N) if kernel is None else int(kernel)
    packed = np.empty(max(capi.sgemm_packed_a_floats(kr, M, K), 1), np.float32)
    out = np.empty((M, N), np.float32)
    ba = None if bias is None else np.ascontiguousarray(bias, np.float32)
    ca = None if clamp is None else np.ascontiguousarray(clamp, np.float32)
    cdef float *pp = fptr(packed)
    cdef const float *pa = fptr(aa)
    cdef const float *pb = fptr(bb)
    cdef const float *pbias = fptr(ba) if ba is not None else NULL
    cdef const float *pclamp = fptr(ca) if ca is not None else NULL
    cdef float *pc = fptr(out)
    cdef int64_t lda = aa.shape[1]
    cdef int nt = get_num_threads(), rc
    with nogil:
        capi.sgemm_pack_a(pp, kr, ta, M, K, pa, lda, nt)
        rc = capi.sgemm_packed_bias_clamp(pp, kr, M, N, K, pb, N, pc, N, pbias, pclamp, nt)
    if rc != capi.FASTCNN_OK:
        raise MemoryError(f"sgemm could not allocate its buffers (M={M}, N={N}, K={K})")
    return out


def _sgemm_packed_b(a, b, *, trans_a=False, trans_b=False, bias=None, clamp=None, kernel=None):
    """Test hook: ``op(a) @ op(b) (+ bias per row, clamped to clamp = (lo, hi))``
    with op(b) packed ahead (sgemm_pack_b, then sgemm_packed_b_bias_clamp) for
    GEMM kernel number ``kernel`` (default: the one sgemm would pick). a, b:
    float32 C-contiguous 2-D arrays."""
    aa = np.ascontiguousarray(a, np.float32)
    bb = np.ascontiguousarray(b, np.float32)
    cdef int ta = bool(trans_a), tb = bool(trans_b)
    cdef int64_t M = aa.shape[1] if ta else aa.shape[0]
    cdef int64_t K = aa.shape[0] if ta else aa.shape[1]
    cdef int64_t N = bb.shape[0] if tb else bb.shape[1]
    if (bb.shape[1] if tb else bb.shape[0]) != K:
        raise ValueError(f"op(a) (M, K) and op(b) (K, N) must match. Received: "
                         f"a.shape={aa.shape}, b.shape={bb.shape}")
    cdef int kr = capi.sgemm_packed_a_kernel(M, N) if kernel is None else int(kernel)
    packed = np.empty(max(capi.sgemm_packed_b_floats(kr, K, N), 1), np.float32)
    out = np.empty((M, N), np.float32)
    ba = None if bias is None else np.ascontiguousarray(bias, np.float32)
    ca = None if clamp is None else np.ascontiguousarray(clamp, np.float32)
    cdef float *pp = fptr(packed)
    cdef const float *pa = fptr(aa)
    cdef const float *pb = fptr(bb)
    cdef const float *pbias = fptr(ba) if ba is not None else NULL
    cdef const float *pclamp = fptr(ca) if ca is not None else NULL
    cdef float *pc = fptr(out)
    cdef int64_t lda = aa.shape[1], ldb = bb.shape[1]
    cdef int nt = get_num_threads(), rc
    with nogil:
        capi.sgemm_pack_b(pp, kr, tb, K, N, pb, ldb, nt)
        rc = capi.sgemm_packed_b_bias_clamp(pp, kr, ta, M, N, K, pa, lda, pc, N, pbias, pclamp,
                                            nt)
    if rc != capi.FASTCNN_OK:
        raise MemoryError(f"sgemm could not allocate its buffers (M={M}, N={N}, K={K})")
    return out
