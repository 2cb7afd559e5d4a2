/* kernel.h - the interface between the portable sgemm driver (sgemm.c) and
 * the micro-kernels, one per instruction set, each in its own file compiled
 * with its own flags (kernel_generic.c, kernel_avx2.c, kernel_avx512.c).
 *
 * A micro-kernel updates one register tile of C:
 *   c (mr,nr) = alpha * a (mr,kc) b (kc,nr) + beta * c     (beta == 0: c not read)
 * where
 *   a  packed A micro-panel: element (i,k) at a[k*MR + i], i < MR, k < kc
 *      (rows mr..MR-1 may be garbage and are never used),
 *   b  B micro-panel: element (k,j) at b[k*ldb + j]; all NR columns of each of
 *      the kc rows are readable (a packed, zero-padded panel has ldb = NR;
 *      a full panel of the caller's B is used in place with B's row stride),
 *   bfar  lines the k loop prefetches into L2 as it goes, NR floats at
 *      bfar + k*ldb in step k (B's lines still far away: rows further down
 *      this panel, or the next panel of B in place; never dereferenced),
 *   c  element (i,j) at c[i*ldc + j]; only i < mr, j < nr is read or written.
 * 1 <= mr <= MR, 1 <= nr <= NR, kc >= 1. With an epilogue (bias, clamp) the
 * stored value is clamp(alpha a b + beta c + bias[i]), each step rounded as
 * written.
 */
#ifndef FASTCNN_GEMM_KERNEL_H
#define FASTCNN_GEMM_KERNEL_H

#include <stdint.h>

/* What a tile's last k block adds before its store (after alpha and beta):
 * bias[i] on row i (bias NULL: none), then a clamp to [clamp[0], clamp[1]]
 * as hardtanh does, a NaN passing (clamp NULL: none). */
typedef struct {
    const float *bias, *clamp;
} gemm_epilogue;

/* epi: NULL, or the epilogue of the tile's final k block (bias from its first row). */
typedef void (*gemm_ukernel)(int64_t kc, const float *a, const float *b, int64_t ldb,
                             const float *bfar, float *c, int64_t ldc, float alpha, float beta,
                             int mr, int nr, const gemm_epilogue *epi);

/* Transposing copy used to pack the operand stored across the panel (A when
 * not transposed, B when transposed):
 *   dst[c*ldd + r] = src[r*lds + c]   for r < rows (rows <= ldd), c < cols. */
typedef void (*gemm_transpose)(float *dst, int64_t ldd, const float *src, int64_t lds,
                               int64_t rows, int64_t cols);

/* A micro-kernel and the cache blocking that suits it. */
typedef struct {
    const char *name;
    int mr, nr;     /* register tile */
    int kc;         /* depth of a block */
    int mc;         /* rows of a packed mc x kc block of A, kept in L2 */
    int nc;         /* columns of a packed kc x nc panel of B, kept in L3 */
    int direct_rows;    /* up to this many rows of C, B is read in place (sgemm.c) */
    gemm_ukernel ukernel;
    gemm_transpose transpose;
} gemm_kernel;

/* The portable transposing copy, 16 columns at a time so that each source
 * cache line is used whole while it is in L1 (a header inline, so that the
 * per-ISA files can use it without calling into another file). */
static inline void gemm_transpose_scalar(float *dst, int64_t ldd, const float *src, int64_t lds,
                                         int64_t rows, int64_t cols)
{
    for (int64_t c0 = 0; c0 < cols; c0 += 16) {
        int64_t cn = cols - c0 < 16 ? cols - c0 : 16;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cn; c++)
                dst[(c0 + c) * ldd + r] = src[r * lds + c0 + c];
    }
}

extern const gemm_kernel gemm_kernel_generic;
#ifdef FASTCNN_X86_KERNELS
extern const gemm_kernel gemm_kernel_avx2;
extern const gemm_kernel gemm_kernel_avx512;
extern const gemm_kernel gemm_kernel_avx512_8x48;
#endif

#endif /* FASTCNN_GEMM_KERNEL_H */
