/* kernel_avx2.c - AVX2 + FMA sgemm micro-kernel: a 6 x 16 tile of C.
 *
 * Why 6 x 16: with 16 ymm registers, 12 hold the tile (two 8-float vectors
 * per row), 2 hold B's row k and 1 the broadcast A(i,k): the classic
 * Haswell-era shape; 12 independent FMA chains cover 2 pipes x 4 cycles.
 * Rows beyond mr are never computed; columns beyond nr are masked off.
 *
 * Blocking: kc = 256 (the kc x 16 B micro-panel, 16 KiB, stays in L1),
 * mc = 168 (the mc x kc A block, 168 KiB, in L2), nc = 4096 (a 4 MiB B
 * panel in L3).
 *
 * Packing transposes in 8 x 8 register blocks (transpose8).
 *
 * Compiled with -mavx2 -mfma; calls nothing outside this file.
 */
#include <immintrin.h>

#include "store_part_avx2.h"
#include "transpose_regs.h"

#include "kernel.h"

#define MR 6
#define NV 2            /* ymm vectors per row of the tile */
#define NR (8 * NV)

/* r + bias[i], then clamped (max(lo, r) and min(hi, r) keep a NaN r, as
 * the scalar clamp does). */
static inline __m256 finish(__m256 r, const gemm_epilogue *epi, int i)
{
    if (epi->bias)
        r = _mm256_add_ps(r, _mm256_broadcast_ss(epi->bias + i));
    if (epi->clamp) {
        r = _mm256_max_ps(_mm256_broadcast_ss(epi->clamp), r);
        r = _mm256_min_ps(_mm256_broadcast_ss(epi->clamp + 1), r);
    }
    return r;
}

/* c (m, 8 nv) = acc, with the epilogue: the bias and clamp tests taken
 * once for the tile, not per vector. */
static inline __attribute__((always_inline)) void
store_whole(__m256 acc[MR][NV], const int m, const int nv, float *c, int64_t ldc,
            const gemm_epilogue *epi)
{
    const float *bias = epi ? epi->bias : NULL, *clamp = epi ? epi->clamp : NULL;
    if (bias)
#pragma GCC unroll 8
        for (int i = 0; i < m; i++) {
            __m256 bi = _mm256_broadcast_ss(bias + i);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                acc[i][v] = _mm256_add_ps(acc[i][v], bi);
        }
    if (clamp) {
        __m256 lo = _mm256_broadcast_ss(clamp), hi = _mm256_broadcast_ss(clamp + 1);
#pragma GCC unroll 8
        for (int i = 0; i < m; i++)
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                acc[i][v] = _mm256_min_ps(hi, _mm256_max_ps(lo, acc[i][v]));
    }
#pragma GCC unroll 8
    for (int i = 0; i < m; i++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            _mm256_storeu_ps(c + i * ldc + 8 * v, acc[i][v]);
}

/* The m x nr tile (m <= MR, nr <= 8 nv) in m x nv vectors: a last panel of
 * at most 8 columns (a 7x7 map's 49 = 3 x 16 + 1) costs half the FMAs. */
static inline __attribute__((always_inline)) void
tile(const int m, const int nv, int64_t kc, const float *a, const float *b, int64_t ldb,
     const float *bfar, float *c, int64_t ldc, float alpha, float beta, int nr,
     const gemm_epilogue *epi)
{
    __m256 acc[MR][NV];
    /* the tile's rows of C (each may span two cache lines) start on their
     * way into L1 while the k loop runs */
#pragma GCC unroll 8
    for (int i = 0; i < m; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 8 * nv - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 8
    for (int i = 0; i < m; i++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            acc[i][v] = _mm256_setzero_ps();
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; k++) {
        __m256 bv[NV];
        _mm_prefetch((const char *)bfar, _MM_HINT_T1);
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            bv[v] = _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 8
        for (int i = 0; i < m; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
        }
        a += MR;
        b += ldb;
        bfar += ldb;
    }
    if (alpha == 1.0f && beta == 0.0f && nr == 8 * nv) {
        /* the common tile (a whole one, C overwritten): no scaling, no masks */
        store_whole(acc, m, nv, c, ldc, epi);
        return;
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i mask[NV];
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++)
        mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8 * v), lane);
#pragma GCC unroll 8
    for (int i = 0; i < m; i++) {
        float *ci = c + i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            __m256 r = _mm256_mul_ps(acc[i][v], va);
            if (beta != 0.0f)
                r = _mm256_fmadd_ps(vb, nr - 8 * v >= 8 ? _mm256_loadu_ps(ci + 8 * v)
                                                 : _mm256_maskload_ps(ci + 8 * v, mask[v]), r);
            if (epi)
                r = finish(r, epi, i);
            store_part8(ci + 8 * v, r, nr - 8 * v);
        }
    }
}

#define TILE_CASE(m)                                                        \
    case m:                                                                 \
        if (nr <= 8)                                                        \
            tile(m, 1, kc, a, b, ldb, bfar, c, ldc, alpha, beta, nr, epi);  \
        else                                                                \
            tile(m, NV, kc, a, b, ldb, bfar, c, ldc, alpha, beta, nr, epi); \
        break;

static void ukernel(int64_t kc, const float *a, const float *b, int64_t ldb, const float *bfar,
                    float *c, int64_t ldc, float alpha, float beta, int mr, int nr,
                    const gemm_epilogue *epi)
{
    switch (mr) {
    TILE_CASE(6) TILE_CASE(5) TILE_CASE(4) TILE_CASE(3) TILE_CASE(2) TILE_CASE(1)
    default: break;
    }
}

/* Lanes [0, n) of an 8-lane vector, as a maskload / maskstore mask. */
static inline __m256i first_lanes(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* gemm_transpose (kernel.h) in 8 x 8 register blocks; masked loads and
 * stores keep every access inside rows x cols of src and dst. Each block
 * prefetches into L2 the same columns of the next call's rows, as the
 * AVX-512 kernel does (pw_14's weight gradient, FASTCNN_ISA=avx2, 1 thread:
 * 9.24 -> 8.18 ms). */
static void transpose(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows,
                      int64_t cols)
{
    for (int64_t r0 = 0; r0 < rows; r0 += 8) {
        int rn = rows - r0 < 8 ? (int)(rows - r0) : 8;
        __m256i rmask = first_lanes(rn);
        for (int64_t c0 = 0; c0 < cols; c0 += 8) {
            int cn = cols - c0 < 8 ? (int)(cols - c0) : 8;
            __m256 r[8];
            for (int i = 0; i < rn; i++)
                _mm_prefetch((const char *)(src + (rows + r0 + i) * lds + c0), _MM_HINT_T1);
            if (cn == 8) {
                for (int i = 0; i < 8; i++)
                    r[i] = i < rn ? _mm256_loadu_ps(src + (r0 + i) * lds + c0)
                                  : _mm256_setzero_ps();
            } else {
                __m256i cmask = first_lanes(cn);
                for (int i = 0; i < 8; i++)
                    r[i] = i < rn ? _mm256_maskload_ps(src + (r0 + i) * lds + c0, cmask)
                                  : _mm256_setzero_ps();
            }
            transpose8(r);
            /* With ldd == rows < 8 (one block of rows), a full store writes
             * 8 - rows floats past column i, onto the columns after it, which
             * are stored later (in order) and overwrite them: only the stores
             * that would reach past the last column need the mask (masked
             * stores are slow on some CPUs). With more rows, the columns after
             * it already hold the earlier blocks' rows: masked. */
            for (int i = 0; i < cn; i++) {
                float *d = dst + (c0 + i) * ldd + r0;
                int inside = (c0 + i) * ldd + 8 <= cols * ldd;
                if (rn == 8 || (ldd == rows && r0 == 0 && inside))
                    _mm256_storeu_ps(d, r[i]);
                else
                    _mm256_maskstore_ps(d, rmask, r[i]);
            }
        }
    }
}

/* B in place up to 64 rows: from 65 to 256 it was 5-7% slower than packed
 * (Zen 4, FASTCNN_ISA=avx2: 128 x 1152 x 784, 256 x 256 x 3136, 160 x 960 x
 * 49): a 16-column row of B in place spans two cache lines unless aligned,
 * a packed one exactly one. */
const gemm_kernel gemm_kernel_avx2 = {"avx2", MR, NR, 256, 168, 4096, 64, ukernel, transpose};
