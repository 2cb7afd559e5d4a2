/* sgemm.c - row-major single-precision GEMM (see gemm.h).
 * Interim engine: rows of C split across threads, inner loop over a
 * contiguous row of B so it vectorizes. The packed, register-blocked
 * engine replaces the body of sgemm() without changing its contract. */
#include <stddef.h>

#include "fastcnn.h"
#include "gemm.h"

static inline float at(const float *X, int trans, int64_t ld, int64_t r, int64_t c)
{
    return trans ? X[c * ld + r] : X[r * ld + c];
}

void sgemm_ref(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
               float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0.0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)at(A, transa, lda, i, k) * at(B, transb, ldb, k, j);
            float old = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
            C[i * ldc + j] = (float)(alpha * acc) + old;
        }
}

/* One row of C: c (N) = alpha * a_row (K) op(B) + beta * c. */
static void gemm_row(int transa, int transb, int64_t i, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                     float *c)
{
    if (beta == 0.0f)
        for (int64_t j = 0; j < N; j++) c[j] = 0.0f;
    else if (beta != 1.0f)
        for (int64_t j = 0; j < N; j++) c[j] *= beta;
    for (int64_t k = 0; k < K; k++) {
        float a = alpha * at(A, transa, lda, i, k);
        if (transb)
            for (int64_t j = 0; j < N; j++) c[j] += a * B[j * ldb + k];
        else
            for (int64_t j = 0; j < N; j++) c[j] += a * B[k * ldb + j];
    }
}

int sgemm(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
          const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
          float *C, int64_t ldc, int nthreads)
{
    int nt = fastcnn_threads_for(M * N * K, nthreads);
    /* rows of C are disjoint */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t i = 0; i < M; i++)
        gemm_row(transa, transb, i, N, K, alpha, A, lda, B, ldb, beta, C + i * ldc);
    return FASTCNN_OK;
}
