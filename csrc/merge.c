/* merge.c - element-wise merges of branches: y = a + b, y = a * b, and the
 * gradient accumulation y += x of a tensor read by several ops. Every buffer
 * is (n). */
#include "fastcnn.h"

void add_forward_ref(float *y, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

void add_accumulate_ref(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

void mul_forward_ref(float *y, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] * b[i];
}

/* y may be a or b (in place) */
void add_forward(float *y, const float *a, const float *b, int64_t n, int nthreads)
{
    int nt = fastcnn_threads_for(n, nthreads);
    if (nt == 1) {  /* no OpenMP call at all for small work */
        #pragma omp simd
        for (int64_t i = 0; i < n; i++)
            y[i] = a[i] + b[i];
        return;
    }
    /* each i written once */
    #pragma omp parallel for simd num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

void add_accumulate(float *y, const float *x, int64_t n, int nthreads)
{
    add_forward(y, y, x, n, nthreads);
}

/* y may be a or b (in place) */
void mul_forward(float *y, const float *a, const float *b, int64_t n, int nthreads)
{
    int nt = fastcnn_threads_for(n, nthreads);
    if (nt == 1) {  /* no OpenMP call at all for small work */
        #pragma omp simd
        for (int64_t i = 0; i < n; i++)
            y[i] = a[i] * b[i];
        return;
    }
    /* each i written once */
    #pragma omp parallel for simd num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] * b[i];
}
