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
 *   c  element (i,j) at c[i*ldc + j]; only i < mr, j < nr is read or written.
 * 1 <= mr <= MR, 1 <= nr <= NR, kc >= 1.
 */
#ifndef FASTCNN_GEMM_KERNEL_H
#define FASTCNN_GEMM_KERNEL_H

#include <stdint.h>

typedef void (*gemm_ukernel)(int64_t kc, const float *a, const float *b, int64_t ldb,
                             float *c, int64_t ldc, float alpha, float beta, int mr, int nr);

/* A micro-kernel and the cache blocking that suits it. */
typedef struct {
    const char *name;
    int mr, nr;     /* register tile */
    int kc;         /* depth of a block: a kc x NR panel of B stays in L1 */
    int mc;         /* rows of a packed mc x kc block of A, kept in L2 */
    int nc;         /* columns of a packed kc x nc panel of B, kept in L3 */
    gemm_ukernel ukernel;
} gemm_kernel;

extern const gemm_kernel gemm_kernel_generic;
#ifdef FASTCNN_X86_KERNELS
extern const gemm_kernel gemm_kernel_avx2;
extern const gemm_kernel gemm_kernel_avx512;
#endif

#endif /* FASTCNN_GEMM_KERNEL_H */
