/* kernel_generic.c - portable plain-C sgemm micro-kernel: a 4 x 16 tile of C.
 *
 * Written so any C compiler can keep the tile in vector registers (fixed
 * bounds, fully unrolled): with SSE2 the 4 x 16 tile is 16 xmm registers
 * worth of accumulators; on 32-register targets (NEON, SVE) it fits
 * outright. Measured with gcc -O3 (x86-64 baseline, SSE2) in L1: 4x16 and
 * 4x8 ~42 GFLOP/s, 8x8 40, 6x8 33, 6x16 8 (spills). It computes the full MR x NR tile
 * (packed A and B are zero-padded) and writes only mr x nr of C.
 *
 * Blocking: kc = 256 (a 16 KiB B micro-panel in L1), mc = 128 (a 128 KiB
 * A block in L2), nc = 4096.
 */
#include "kernel.h"

#define MR 4
#define NR 16

static void ukernel(int64_t kc, const float *a, const float *b, int64_t ldb, const float *bfar,
                    float *c, int64_t ldc, float alpha, float beta, int mr, int nr,
                    const gemm_epilogue *epi)
{
    (void)bfar;     /* no prefetch in portable C */
    float acc[MR][NR] = {{0.0f}};
    for (int64_t k = 0; k < kc; k++) {
        float bk[NR];               /* B's row in a local: 3.5x faster with gcc -O3 */
        for (int j = 0; j < NR; j++)
            bk[j] = b[j];
        for (int i = 0; i < MR; i++) {
            float ai = a[i];
            for (int j = 0; j < NR; j++)
                acc[i][j] += ai * bk[j];
        }
        a += MR;
        b += ldb;
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            float r = alpha * acc[i][j];
            r = beta == 0.0f ? r : r + beta * c[i * ldc + j];
            if (epi && epi->bias)
                r += epi->bias[i];
            if (epi && epi->clamp) {
                r = r < epi->clamp[0] ? epi->clamp[0] : r;
                r = r > epi->clamp[1] ? epi->clamp[1] : r;
            }
            c[i * ldc + j] = r;
        }
}

const gemm_kernel gemm_kernel_generic = {"generic", MR, NR, 256, 128, 4096, 64, ukernel,
                                         gemm_transpose_scalar};
