/* activation.c - element-wise ReLU and sigmoid, forward and backward.
 * Every buffer is (n). Backward kernels take the forward output y. */
#include <math.h>

#include "expf_vec.h"
#include "fastcnn.h"

void relu_forward_ref(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i];  /* NaN passes through, as in torch */
}

void relu_backward_ref(float *dx, const float *dy, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void sigmoid_forward_ref(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)(1.0 / (1.0 + exp(-(double)x[i])));
}

void sigmoid_backward_ref(float *dx, const float *dy, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

void relu_forward(float *y, const float *x, int64_t n, int nthreads)
{
    int nt = fastcnn_threads_for(n, nthreads);
    if (nt == 1) {  /* no OpenMP call at all for small work */
        #pragma omp simd
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] < 0.0f ? 0.0f : x[i];
        return;
    }
    /* each i written once */
    #pragma omp parallel for simd num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

void relu_backward(float *dx, const float *dy, const float *y, int64_t n, int nthreads)
{
    int nt = fastcnn_threads_for(n, nthreads);
    /* dy is loaded unconditionally (a select, not a branch): the loops vectorize */
    if (nt == 1) {  /* no OpenMP call at all for small work */
        #pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float d = dy[i];
            dx[i] = y[i] > 0.0f ? d : 0.0f;
        }
        return;
    }
    /* each i written once */
    #pragma omp parallel for simd num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float d = dy[i];
        dx[i] = y[i] > 0.0f ? d : 0.0f;
    }
}

/* Stable for large |x|: exp of a non-positive number only. exp_vec (not
 * expf), and a select of the numerator (not of two products, which gcc
 * turns into a branch), so the loops below vectorize. */
static inline float sigmoid1(float x)
{
    float e = exp_vec(-fabsf(x));
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

void sigmoid_forward(float *y, const float *x, int64_t n, int nthreads)
{
    int nt = fastcnn_threads_for(n * 16, nthreads);
    if (nt == 1) {  /* no OpenMP call at all for small work */
        #pragma omp simd
        for (int64_t i = 0; i < n; i++)
            y[i] = sigmoid1(x[i]);
        return;
    }
    /* each i written once */
    #pragma omp parallel for simd num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = sigmoid1(x[i]);
}

void sigmoid_backward(float *dx, const float *dy, const float *y, int64_t n, int nthreads)
{
    int nt = fastcnn_threads_for(n, nthreads);
    if (nt == 1) {  /* no OpenMP call at all for small work */
        #pragma omp simd
        for (int64_t i = 0; i < n; i++)
            dx[i] = dy[i] * y[i] * (1.0f - y[i]);
        return;
    }
    /* each i written once */
    #pragma omp parallel for simd num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++)
        dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}
