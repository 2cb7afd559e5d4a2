/* kernel_avx512.c - AVX-512 sgemm micro-kernel: a 14 x 32 tile of C.
 *
 * Why 14 x 32: each row of the tile is two zmm accumulators, so the tile
 * holds 28 of the 32 zmm registers; the other 4 hold the two 16-float
 * vectors of B's row k and the broadcast A(i,k). Each k step issues 28
 * independent FMAs against 2 vector loads and 14 broadcasts: Zen 5 retires
 * 2 512-bit FMAs per cycle at 4 cycles latency, so >= 8 independent
 * accumulator chains keep both pipes busy (28 >> 8), and 16 loads per 14
 * cycles stay under its 2 loads per cycle. Rows beyond mr are never
 * computed (the tile is specialised for each mr); columns beyond nr are
 * masked off when C is read and written.
 *
 * Blocking (48 KiB L1d, 1 MiB L2 per core, 32 MiB shared L3):
 *   kc = 256: the kc x 32 B micro-panel is 32 KiB, two thirds of L1, while
 *             the 14 x kc A micro-panel (14 KiB) streams through it;
 *   mc = 336: the packed mc x kc block of A is 336 KiB, a third of L2, so
 *             it stays there while B panels stream (24 micro-panels of 14);
 *   nc = 4096: the packed kc x nc panel of B is 4 MiB of the 32 MiB L3,
 *             shared by the threads.
 *
 * Compiled with AVX-512 flags; calls nothing outside this file.
 */
#include <immintrin.h>

#include "kernel.h"

#define MR 14
#define NV 2            /* zmm vectors per row of the tile */
#define NR (16 * NV)

static inline __attribute__((always_inline)) void
tile(const int m, int64_t kc, const float *a, const float *b, int64_t ldb, float *c,
     int64_t ldc, float alpha, float beta, int nr)
{
    __m512 acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < m; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; k++) {
        __m512 bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 16
        for (int i = 0; i < m; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
        a += MR;
        b += ldb;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __mmask16 mask[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        int rem = nr - 16 * v;
        mask[v] = rem >= 16 ? (__mmask16)0xFFFF : rem <= 0 ? 0 : (__mmask16)((1u << rem) - 1);
    }
#pragma GCC unroll 16
    for (int i = 0; i < m; i++) {
        float *ci = c + i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            __m512 r = _mm512_mul_ps(acc[i][v], va);
            if (beta != 0.0f)
                r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[v], ci + 16 * v), r);
            _mm512_mask_storeu_ps(ci + 16 * v, mask[v], r);
        }
    }
}

#define TILE_CASE(m) case m: tile(m, kc, a, b, ldb, c, ldc, alpha, beta, nr); break;

static void ukernel(int64_t kc, const float *a, const float *b, int64_t ldb, float *c,
                    int64_t ldc, float alpha, float beta, int mr, int nr)
{
    switch (mr) {
    TILE_CASE(14) TILE_CASE(13) TILE_CASE(12) TILE_CASE(11) TILE_CASE(10) TILE_CASE(9)
    TILE_CASE(8) TILE_CASE(7) TILE_CASE(6) TILE_CASE(5) TILE_CASE(4) TILE_CASE(3)
    TILE_CASE(2) TILE_CASE(1)
    default: break;
    }
}

const gemm_kernel gemm_kernel_avx512 = {"avx512", MR, NR, 256, 336, 4096, ukernel};
