/* gemm.h - fastcnn's single-precision matrix multiply (the engine under
 * convolution and linear layers).
 *
 * Row-major. C (M,N) = alpha * op(A) op(B) + beta * C, where op(A) is (M,K)
 * and op(B) is (K,N). A is stored (M,K) with row stride lda, or (K,M) if
 * transa; B is stored (K,N) with row stride ldb, or (N,K) if transb.
 * C has row stride ldc. beta == 0 means C is not read (NaN in C is
 * overwritten), as in BLAS.
 */
#ifndef FASTCNN_GEMM_H
#define FASTCNN_GEMM_H

#include <stdint.h>

/* Returns FASTCNN_OK, or FASTCNN_ENOMEM if packing buffers cannot be had. */
int sgemm(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
          const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
          float *C, int64_t ldc, int nthreads);

/* sgemm, then C[i, j] += bias[i] (bias (M), or NULL), added to each tile of C
 * as it is finished, while it is in cache. */
int sgemm_bias(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
               float *C, int64_t ldc, const float *bias, int nthreads);

/* sgemm_bias, then C[i, j] clamped to [clamp[0], clamp[1]] as hardtanh does
 * (NaN passes; clamp NULL: no clamp), in each tile as it is finished. */
int sgemm_bias_clamp(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                     float *C, int64_t ldc, const float *bias, const float *clamp,
                     int nthreads);

/* op(A) packed ahead, for products that reuse one A (a frozen model's
 * weights). The packed layout is a kernel's: sgemm_packed_a_kernel is the
 * number of the kernel sgemm would run for an M x N product;
 * sgemm_pack_a packs op(A) (M, K; stored as for sgemm) for kernel number
 * `kernel` into packed (sgemm_packed_a_floats floats); and
 * sgemm_packed_bias_clamp is sgemm_bias_clamp with alpha 1, beta 0 and that
 * packed A (same kernel, M and K), on that kernel. */
int sgemm_packed_a_kernel(int64_t M, int64_t N);
int64_t sgemm_packed_a_floats(int kernel, int64_t M, int64_t K);
void sgemm_pack_a(float *packed, int kernel, int transa, int64_t M, int64_t K, const float *A,
                  int64_t lda, int nthreads);
int sgemm_packed_bias_clamp(const float *packed, int kernel, int64_t M, int64_t N, int64_t K,
                            const float *B, int64_t ldb, float *C, int64_t ldc,
                            const float *bias, const float *clamp, int nthreads);

/* op(B) packed ahead likewise (a frozen model's weights as the right-hand
 * operand): sgemm_pack_b packs op(B) (K, N; stored as for sgemm) for kernel
 * number `kernel` (sgemm_packed_a_kernel of the product's M x N) into packed
 * (sgemm_packed_b_floats floats); sgemm_packed_b_bias_clamp is
 * sgemm_bias_clamp with alpha 1, beta 0 and that packed B (same kernel, K and
 * N), on that kernel. */
int64_t sgemm_packed_b_floats(int kernel, int64_t K, int64_t N);
void sgemm_pack_b(float *packed, int kernel, int transb, int64_t K, int64_t N, const float *B,
                  int64_t ldb, int nthreads);
int sgemm_packed_b_bias_clamp(const float *packed, int kernel, int transa, int64_t M, int64_t N,
                              int64_t K, const float *A, int64_t lda, float *C, int64_t ldc,
                              const float *bias, const float *clamp, int nthreads);

/* Test hook: how C is cut among the threads: 0 by cost, 1 along M, 2 along
 * N, 3 along both where a grid fits the threads, 4 along M or N as the cost
 * would without grids. Returns the old mode. */
int sgemm_set_split(int mode);

/* The register tile (rows, columns of C) of GEMM kernel number `kernel`. */
void sgemm_tile(int kernel, int *mr, int *nr);

/* dst[c ldd + r] = src[r lds + c] for r < rows (<= ldd), c < cols: the
 * transposing copy that packs operands, in the instruction set's registers. */
void sgemm_transpose(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows,
                     int64_t cols);

/* Plain triple loop with a double accumulator: the oracle. */
void sgemm_ref(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
               float *C, int64_t ldc);

#endif /* FASTCNN_GEMM_H */
