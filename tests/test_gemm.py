"""sgemm (csrc/gemm) against float64 numpy: every transpose pair, sizes that
straddle the micro-tile and cache-block boundaries, alpha/beta, leading
dimensions, threads, and every instruction-set path this CPU supports."""
import ctypes
import itertools
import mmap
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastcnn
from fastcnn import _native
from subproc import run_python_args, supported_isas

TRANS = list(itertools.product([False, True], repeat=2))
TRANS_IDS = ["NN", "NT", "TN", "TT"]
# Micro-tiles are 14x32 (AVX-512), 6x16 (AVX2), 4x16 (generic); kc = 256,
# mc = 336/168/128, nc = 4096; B is used in place up to 256 rows (AVX-512; 64
# otherwise) or depth 64.
SMALL = [1, 2, 7, 15, 16, 17, 31, 33]
LARGE = [(255, 257, 1000), (1000, 31, 255), (257, 1000, 17), (2, 1000, 257),
         (1000, 2, 33), (17, 255, 1000), (65, 33, 513), (337, 100, 300),
         (64, 4100, 9), (300, 4100, 20), (700, 90, 16)]


def operands(rng, M, N, K, ta, tb):
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    return a, b


def expected(a, b, c0, ta, tb, alpha, beta):
    """float64 alpha op(a) op(b) + beta c0, and an error bound for float32."""
    a64 = a.astype(np.float64).T if ta else a.astype(np.float64)
    b64 = b.astype(np.float64).T if tb else b.astype(np.float64)
    want = alpha * (a64 @ b64)
    scale = abs(alpha) * (np.abs(a64) @ np.abs(b64))
    if beta != 0:
        want += beta * c0.astype(np.float64)
        scale += abs(beta) * np.abs(c0.astype(np.float64))
    return want, 1e-5 * scale + 1e-30


def check(rng, M, N, K, ta, tb, alpha=1.0, beta=0.0, reference=False):
    a, b = operands(rng, M, N, K, ta, tb)
    c0 = rng.standard_normal((M, N)).astype(np.float32)
    c = c0.copy()
    if beta == 0:
        c[:] = np.nan                   # must not be read
    out = _native.sgemm(a, b, c, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta,
                      reference=reference)
    assert out is c and out.shape == (M, N) and out.dtype == np.float32
    want, tol = expected(a, b, c0, ta, tb, alpha, beta)
    err = np.abs(c - want)
    assert np.all(err <= tol), (f"M={M} N={N} K={K} ta={ta} tb={tb} alpha={alpha} "
                                f"beta={beta}: max err {err.max()} at {np.unravel_index(err.argmax(), err.shape)}")


@pytest.mark.parametrize("ta,tb", TRANS, ids=TRANS_IDS)
def test_sgemm_matches_float64_small_grid(ta, tb, num_threads, rng):
    coeffs = itertools.cycle([(1.0, 0.0), (-0.75, 1.0), (1.0, 1.0), (2.5, -0.5), (0.5, 0.0)])
    for (M, N, K), (alpha, beta) in zip(itertools.product(SMALL, repeat=3), coeffs):
        check(rng, M, N, K, ta, tb, alpha, beta)


@pytest.mark.parametrize("ta,tb", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("M,N,K", LARGE, ids=[f"{m}x{n}x{k}" for m, n, k in LARGE])
def test_sgemm_matches_float64_block_edges(M, N, K, ta, tb, num_threads, rng):
    check(rng, M, N, K, ta, tb, alpha=1.0, beta=0.0)
    check(rng, M, N, K, ta, tb, alpha=-1.5, beta=0.25)


def test_every_column_count_of_an_edge_tile(num_threads, rng):
    """N = 1 .. 50: each partial width of the last column tile (the tiles are
    at most 48 wide), inside a wider C: right values, and the 8 columns past
    each row's end (the rest of a part-vector store) untouched."""
    for N in range(1, 51):
        for alpha, beta in ((1.0, 0.0), (0.5, -1.0)):
            a, b = operands(rng, 13, N, 19, False, False)
            wide = np.full((13, N + 8), 7.0, np.float32)
            wide[:, :N] = rng.standard_normal((13, N))
            c0 = wide[:, :N].copy()
            _native.sgemm(a, b, wide[:, :N], alpha=alpha, beta=beta)
            want, tol = expected(a, b, c0, False, False, alpha, beta)
            assert np.all(np.abs(wide[:, :N] - want) <= tol), f"N={N} beta={beta}"
            assert np.all(wide[:, N:] == 7.0), f"N={N} beta={beta}: a store past the row"


@pytest.mark.parametrize("M", [13, 40, 70])
def test_narrow_edge_columns_equal_whole_tiles_bitwise(M, num_threads, rng):
    """The last few columns of a tile (N = 49 = 48 + 1 or 32 + 16 + 1, 196 =
    6 x 32 + 4) go down the rows (AVX-512): bit for bit what the same columns
    give inside a wider product whose tiles are whole, alpha, beta, and (A
    packed) bias and clamp included. M = 40 and 70 take the 8 x 48 tile."""
    for N in (1, 4, 8, 17, 20, 24, 49, 196):
        a, b = operands(rng, M, N + 48, 70, False, False)
        narrow_b = np.ascontiguousarray(b[:, :N])
        c0 = rng.standard_normal((M, N + 48)).astype(np.float32)
        for alpha, beta in ((1.0, 0.0), (0.5, 1.5)):
            wide = _native.sgemm(a, b, c0.copy(), alpha=alpha, beta=beta)
            narrow = _native.sgemm(a, narrow_b, c0[:, :N].copy(), alpha=alpha, beta=beta)
            np.testing.assert_array_equal(narrow, wide[:, :N], err_msg=f"N={N}")
        bias = rng.standard_normal(M).astype(np.float32)
        wide = _native._sgemm_packed(a, b, bias=bias, clamp=(-1.0, 6.0))
        narrow = _native._sgemm_packed(a, narrow_b, bias=bias, clamp=(-1.0, 6.0))
        np.testing.assert_array_equal(narrow, wide[:, :N], err_msg=f"N={N}, bias and clamp")


@pytest.mark.parametrize("alpha", [0.0, 1.0, -2.0])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("M,N,K", [(3, 5, 2), (40, 70, 300), (129, 33, 17)])
def test_sgemm_matches_float64_alpha_beta(M, N, K, alpha, beta, num_threads, rng):
    for ta, tb in TRANS:
        check(rng, M, N, K, ta, tb, alpha, beta)


@pytest.mark.parametrize("ta,tb", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 16, 33), (17, 31, 2), (33, 15, 40)])
def test_reference_matches_float64(M, N, K, ta, tb, rng):
    check(rng, M, N, K, ta, tb, alpha=1.0, beta=0.0, reference=True)
    check(rng, M, N, K, ta, tb, alpha=0.5, beta=-1.0, reference=True)


def test_beta_zero_overwrites_nan_even_with_alpha_zero(num_threads):
    a = np.full((20, 30), np.nan, np.float32)
    b = np.ones((30, 40), np.float32)
    c = np.full((20, 40), np.nan, np.float32)
    _native.sgemm(a, b, c, alpha=0.0, beta=0.0)   # BLAS: alpha == 0 does not read A, B
    np.testing.assert_array_equal(c, 0.0)
    c[:] = 2.0
    _native.sgemm(a, b, c, alpha=0.0, beta=1.5)
    np.testing.assert_array_equal(c, 3.0)


@pytest.mark.parametrize("ta,tb", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("M,N,K", [(5, 9, 3), (70, 45, 300), (300, 100, 64), (40, 700, 20)])
def test_leading_dimensions_larger_than_rows(M, N, K, ta, tb, num_threads, rng):
    """Row-slice views pass their row stride as lda/ldb/ldc; C outside the
    view must be untouched (no out-of-bounds writes at the tile edges)."""
    pad = 13
    a_big, b_big = operands(rng, M + pad, N + pad, K + pad, ta, tb)
    a = a_big[1:, 2:][: (K if ta else M), : (M if ta else K)]
    b = b_big[3:, :][: (N if tb else K), : (K if tb else N)]
    c_big = rng.standard_normal((M + 2, N + pad)).astype(np.float32)
    guard = c_big.copy()
    c = c_big[1:1 + M, 5:5 + N]
    c0 = c.copy()
    _native.sgemm(a, b, c, trans_a=ta, trans_b=tb, alpha=0.5, beta=2.0)
    want, tol = expected(np.ascontiguousarray(a), np.ascontiguousarray(b), c0, ta, tb, 0.5, 2.0)
    assert np.all(np.abs(c - want) <= tol)
    outside = np.ones(c_big.shape, bool)
    outside[1:1 + M, 5:5 + N] = False
    np.testing.assert_array_equal(c_big[outside], guard[outside])


def guarded(rows, cols, rng, keep):
    """A float32 (rows, cols) array that ends exactly where an inaccessible
    page begins: reading or writing one element past it faults."""
    page = mmap.PAGESIZE
    nbytes = rows * cols * 4
    pages = -(-nbytes // page)
    mm = mmap.mmap(-1, (pages + 1) * page)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(addr + pages * page, page, 0) == 0
    keep.append(mm)
    arr = np.frombuffer(mm, np.float32, rows * cols, pages * page - nbytes).reshape(rows, cols)
    arr[:] = rng.standard_normal((rows, cols))
    return arr


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mprotect"), reason="needs mprotect")
@pytest.mark.parametrize("ta,tb", TRANS, ids=TRANS_IDS)
def test_guard_page_no_access_past_the_end(ta, tb, num_threads, rng):
    """A, B and C each end at an inaccessible page: the edge tiles, the
    in-place B panels and the masked SIMD packing must stay inside."""
    keep = []
    for M, N, K in [(1, 1, 1), (13, 31, 15), (15, 33, 17), (50, 47, 513), (300, 70, 9)]:
        a = guarded(*((K, M) if ta else (M, K)), rng, keep)
        b = guarded(*((N, K) if tb else (K, N)), rng, keep)
        c = guarded(M, N, rng, keep)
        c0 = c.copy()
        _native.sgemm(a, b, c, trans_a=ta, trans_b=tb, alpha=1.0, beta=0.5)
        want, tol = expected(a, b, c0, ta, tb, 1.0, 0.5)
        assert np.all(np.abs(c - want) <= tol)


def test_non_contiguous_and_other_dtypes_are_converted(rng):
    a64 = rng.standard_normal((30, 20))                          # float64
    b = rng.standard_normal((40, 20)).astype(np.float32).T      # (20, 40), Fortran order
    want, tol = expected(a64.astype(np.float32), np.ascontiguousarray(b), np.zeros(1),
                         False, False, 1.0, 0.0)
    for got in (_native.sgemm(a64, b), _native.sgemm(a64.T, b, trans_a=True),
                _native.sgemm(a64, b.T, trans_b=True), _native.sgemm(a64[::-1][::-1], b[:, ::1])):
        assert got.shape == (30, 40) and np.all(np.abs(got - want) <= tol)
    ints = _native.sgemm(np.arange(6).reshape(2, 3), np.ones((3, 2), np.int64))
    np.testing.assert_array_equal(ints, [[3, 3], [12, 12]])


def test_without_c_returns_new_array_and_beta_scales_zeros(rng):
    a, b = operands(rng, 9, 11, 13, False, False)
    out = _native.sgemm(a, b, beta=3.0)
    want, tol = expected(a, b, np.zeros((9, 11)), False, False, 1.0, 0.0)
    assert np.all(np.abs(out - want) <= tol)


def test_one_and_two_threads_agree_bitwise(rng):
    old = fastcnn.get_num_threads()
    try:
        for (M, N, K), (ta, tb) in itertools.product(
                [(600, 500, 300), (40, 3000, 75), (3000, 40, 200), (128, 784, 1152)], TRANS):
            a, b = operands(rng, M, N, K, ta, tb)
            fastcnn.set_num_threads(1)
            one = _native.sgemm(a, b, trans_a=ta, trans_b=tb)
            fastcnn.set_num_threads(2)
            two = _native.sgemm(a, b, trans_a=ta, trans_b=tb)
            np.testing.assert_array_equal(one, two)
    finally:
        fastcnn.set_num_threads(old)


# Shapes whose C splits along M, N or both on 4 to 16 threads (the grid where
# neither 1-D cut feeds the threads evenly: a linear layer's 256 x 256 x 4096,
# small maps' dense convolutions at batch 256; more rows than one block).
SPLITS = [(256, 256, 1000), (256, 1024, 600), (37, 500, 70), (1000, 64, 300), (5, 90, 40),
          (600, 4100, 20)]


@pytest.mark.parametrize("threads", [4, 6, 16])
@pytest.mark.parametrize("mode", [0, 1, 2, 3, 4], ids=["cost", "M", "N", "grid", "1-D"])
def test_every_split_on_many_threads_matches_float64(mode, threads, rng):
    old, old_mode = fastcnn.get_num_threads(), _native._set_gemm_split(mode)
    try:
        fastcnn.set_num_threads(threads)
        for (M, N, K), (ta, tb) in itertools.product(SPLITS, TRANS):
            check(rng, M, N, K, ta, tb, beta=0.5)
        a, b = operands(rng, 256, 300, 200, False, False)
        bias = rng.standard_normal(256).astype(np.float32)
        want = _native.sgemm(a, b) + bias[:, None]
        np.testing.assert_allclose(_native._sgemm_packed(a, b, bias=bias), want,
                                   rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(_native._sgemm_packed_b(a, b, bias=bias), want,
                                   rtol=1e-5, atol=1e-4)
    finally:
        fastcnn.set_num_threads(old)
        _native._set_gemm_split(old_mode)


def test_concurrent_python_threads(num_threads, rng):
    """Several Python threads calling sgemm at once (the GIL is released)."""
    jobs = [operands(rng, 150 + 7 * i, 200 - 5 * i, 90 + 11 * i, i % 2 == 1, i % 3 == 0)
            + (i % 2 == 1, i % 3 == 0) for i in range(8)]

    def run(job):
        a, b, ta, tb = job
        return _native.sgemm(a, b, trans_a=ta, trans_b=tb)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, jobs * 3))
    for (a, b, ta, tb), got in zip(jobs * 3, results):
        want, tol = expected(a, b, np.zeros(1), ta, tb, 1.0, 0.0)
        assert np.all(np.abs(got - want) <= tol)


def test_errors():
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"a must be 2-dimensional. Received: a.shape=\(12,\)"):
        _native.sgemm(a.ravel(), b)
    with pytest.raises(ValueError, match=r"b must not be empty. Received: b.shape=\(4, 0\)"):
        _native.sgemm(a, np.ones((4, 0), np.float32))
    with pytest.raises(ValueError, match=r"matching inner dimensions.*a.shape=\(3, 4\) "
                                         r"\(trans_a=False\), b.shape=\(4, 5\) \(trans_b=True\)"):
        _native.sgemm(a, b, trans_b=True)
    with pytest.raises(TypeError, match=r"a must be an array of real numbers. Received: a with dtype=<U1"):
        _native.sgemm(np.array([["x"]]), b)
    with pytest.raises(ValueError, match=r"c must have shape \(3, 5\). Received: c.shape=\(5, 3\)"):
        _native.sgemm(a, b, np.zeros((5, 3), np.float32))
    with pytest.raises(TypeError, match=r"c must be a writeable 2-D float32.*dtype=float64"):
        _native.sgemm(a, b, np.zeros((3, 5)))
    with pytest.raises(TypeError, match=r"c must be a writeable 2-D float32.*of type list"):
        _native.sgemm(a, b, [[0.0] * 5] * 3)
    with pytest.raises(TypeError, match=r"c must be a writeable 2-D float32.*strides=\(4, 12\)"):
        _native.sgemm(a, b, np.zeros((5, 3), np.float32).T)
    frozen = np.zeros((3, 5), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(TypeError, match=r"c must be a writeable"):
        _native.sgemm(a, b, frozen)
    sq = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"c must not overlap a or b. Received: c sharing memory with a"):
        _native.sgemm(sq, sq.copy(), sq)
    with pytest.raises(ValueError, match=r"alpha must be finite. Received: alpha=nan"):
        _native.sgemm(a, b, alpha=float("nan"))
    with pytest.raises(TypeError, match=r"beta must be a real number. Received: beta='1'"):
        _native.sgemm(a, b, beta="1")


def test_isa_is_the_forced_one():
    forced = os.environ.get("FASTCNN_ISA")
    if forced:
        assert _native.isa() == forced
    else:
        assert _native.isa() == _native.cpu_isa()


@pytest.mark.skipif(os.environ.get("FASTCNN_ISA") is not None,
                    reason="already inside a forced-ISA run")
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_isa_path_in_a_subprocess(isa, tmp_path):
    """FASTCNN_ISA is resolved once per process, so each path runs this file's
    numeric tests in its own pytest process."""
    if isa not in supported_isas():
        pytest.skip(f"this CPU does not support {isa}")
    # the best path already ran in this process: there, only check the report
    select = ("forced" if isa == _native.cpu_isa()
              else "(matches or leading or guard) and 2threads or agree or forced or nan"
                   " or packed")
    done = run_python_args(["-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", select],
                           cwd=tmp_path, timeout=600, FASTCNN_ISA=isa)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and " failed" not in done.stdout


# ---- A packed ahead (sgemm_pack_a + sgemm_packed_bias_clamp: a frozen model's weights) ----

PACKED = [(1, 1, 1), (7, 33, 15), (17, 1000, 255), (257, 31, 257), (64, 700, 513),
          (65, 9, 1000), (300, 4100, 20), (700, 90, 600)]


@pytest.mark.parametrize("ta", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("M,N,K", PACKED, ids=[f"{m}x{n}x{k}" for m, n, k in PACKED])
def test_packed_a_matches_float64(M, N, K, ta, num_threads, rng):
    a, b = operands(rng, M, N, K, ta, False)
    want, tol = expected(a, b, None, ta, False, 1.0, 0.0)
    got = _native._sgemm_packed(a, b, trans_a=ta)
    err = np.abs(got - want)
    assert np.all(err <= tol), f"M={M} N={N} K={K} ta={ta}: max err {err.max()}"


@pytest.mark.parametrize("M,N,K", PACKED[1:5], ids=[f"{m}x{n}x{k}" for m, n, k in PACKED[1:5]])
def test_packed_a_equals_sgemm_bitwise_with_bias_and_clamp(M, N, K, num_threads, rng):
    """Same kernel, same blocks: the packed product is bit for bit sgemm's,
    bias and clamp (NaN passing) included."""
    a, b = operands(rng, M, N, K, False, False)
    b[0, :3] = np.nan
    bias = rng.standard_normal(M).astype(np.float32)
    got = _native._sgemm_packed(a, b, bias=bias, clamp=(0.0, 6.0))
    ref = _native.sgemm(a, b) + bias[:, None]
    ref = np.where(np.isnan(ref), ref, np.clip(ref, np.float32(0), np.float32(6)))
    np.testing.assert_array_equal(got, ref)


def test_packed_a_every_kernel_of_the_instruction_set(rng):
    """Packed for each kernel number (AVX-512 has two tile shapes; others
    fall back to their one), the product is right."""
    a, b = operands(rng, 45, 200, 300, False, False)
    want, tol = expected(a, b, None, False, False, 1.0, 0.0)
    for kernel in (0, 1):
        assert np.all(np.abs(_native._sgemm_packed(a, b, kernel=kernel) - want) <= tol)


# ---- B packed ahead (sgemm_pack_b + sgemm_packed_b_bias_clamp: a frozen pointwise
# convolution's weights, as the right-hand operand of its transposed product) ----

@pytest.mark.parametrize("tb", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("ta", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("M,N,K", PACKED, ids=[f"{m}x{n}x{k}" for m, n, k in PACKED])
def test_packed_b_matches_float64(M, N, K, ta, tb, num_threads, rng):
    a, b = operands(rng, M, N, K, ta, tb)
    want, tol = expected(a, b, None, ta, tb, 1.0, 0.0)
    got = _native._sgemm_packed_b(a, b, trans_a=ta, trans_b=tb)
    err = np.abs(got - want)
    assert np.all(err <= tol), f"M={M} N={N} K={K} ta={ta} tb={tb}: max err {err.max()}"


@pytest.mark.parametrize("M,N,K", PACKED[1:5] + [(49, 320, 960)],
                         ids=[f"{m}x{n}x{k}" for m, n, k in PACKED[1:5] + [(49, 320, 960)]])
def test_packed_b_equals_sgemm_bitwise_with_bias_and_clamp(M, N, K, num_threads, rng):
    """Same kernel, same blocks: the product with B packed ahead is bit for bit
    sgemm's (B packed per call or read in place), bias and clamp included."""
    a, b = operands(rng, M, N, K, False, False)
    b[0, :3] = np.nan
    bias = rng.standard_normal(M).astype(np.float32)
    got = _native._sgemm_packed_b(a, b, bias=bias, clamp=(0.0, 6.0))
    ref = _native.sgemm(a, b) + bias[:, None]
    ref = np.where(np.isnan(ref), ref, np.clip(ref, np.float32(0), np.float32(6)))
    np.testing.assert_array_equal(got, ref)


def test_packed_b_every_kernel_of_the_instruction_set(rng):
    a, b = operands(rng, 45, 200, 300, False, False)
    want, tol = expected(a, b, None, False, False, 1.0, 0.0)
    for kernel in (0, 1):
        assert np.all(np.abs(_native._sgemm_packed_b(a, b, kernel=kernel) - want) <= tol)
