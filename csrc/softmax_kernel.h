/* softmax_kernel.h - the loops of softmax and log-softmax along one axis
 * (private to the softmax family). Included by softmax.c (portable build) and
 * by softmax_avx2.c / softmax_avx512.c, so each compiles the same loops with
 * its own instruction set; only inline code here.
 *
 * A slab is one outer index of the tensor seen as (outer, D, inner): x (D,
 * inner), the axis D with stride inner. With inner == 1 a slab is one
 * contiguous row; otherwise a call handles n <= SOFTMAX_BLOCK consecutive
 * inner positions, vectorized across them.
 *
 * softmax(x)_d = exp(x_d - m) / s, log_softmax(x)_d = (x_d - m) - log s,
 * m = max_d x_d, s = sum_d exp(x_d - m): exp never sees a positive argument.
 * A NaN makes its whole line NaN, as does an all -inf or a +inf line
 * (-inf - -inf, inf - inf), as in PyTorch; a -inf among finite values gives
 * 0 (softmax) or -inf (log_softmax). */
#ifndef FASTCNN_SOFTMAX_KERNEL_H
#define FASTCNN_SOFTMAX_KERNEL_H

#include <math.h>
#include <stdint.h>

#include "expf_vec.h"

#define SOFTMAX_BLOCK 256

/* y (D) = softmax (or log_softmax with log) of the row x (D). */
static inline void softmax_row(float *restrict y, const float *restrict x, int64_t D, int is_log)
{
    float m = x[0], s = 0.0f;
    #pragma omp simd reduction(max:m)
    for (int64_t d = 1; d < D; d++)
        m = x[d] > m ? x[d] : m;
    if (is_log) {
        #pragma omp simd reduction(+:s)
        for (int64_t d = 0; d < D; d++)
            s += exp_vec(x[d] - m);
        float ls = logf(s);
        #pragma omp simd
        for (int64_t d = 0; d < D; d++)
            y[d] = (x[d] - m) - ls;
        return;
    }
    s = softmax_exps(y, x, m, D);
    float inv = 1.0f / s;
    #pragma omp simd
    for (int64_t d = 0; d < D; d++)
        y[d] *= inv;
}

/* y (D, inner) = softmax (log_softmax) along D of x (D, inner), at the
 * inner positions [0, n), n <= SOFTMAX_BLOCK. */
static inline void softmax_cols(float *restrict y, const float *restrict x, int64_t D,
                                int64_t inner, int64_t n, int is_log)
{
    float m[SOFTMAX_BLOCK], s[SOFTMAX_BLOCK];
    for (int64_t j = 0; j < n; j++) {
        m[j] = x[j];
        s[j] = 0.0f;
    }
    for (int64_t d = 1; d < D; d++) {
        const float *xr = x + d * inner;
        #pragma omp simd
        for (int64_t j = 0; j < n; j++)
            m[j] = xr[j] > m[j] ? xr[j] : m[j];
    }
    for (int64_t d = 0; d < D; d++) {
        const float *xr = x + d * inner;
        float *yr = y + d * inner;
        #pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            float e = exp_vec(xr[j] - m[j]);
            yr[j] = is_log ? xr[j] - m[j] : e;
            s[j] += e;
        }
    }
    for (int64_t j = 0; j < n; j++)
        s[j] = is_log ? logf(s[j]) : 1.0f / s[j];
    for (int64_t d = 0; d < D; d++) {
        float *yr = y + d * inner;
        if (is_log) {
            #pragma omp simd
            for (int64_t j = 0; j < n; j++)
                yr[j] -= s[j];
        } else {
            #pragma omp simd
            for (int64_t j = 0; j < n; j++)
                yr[j] *= s[j];
        }
    }
}

/* One slab's forward: a row (inner == 1) or n inner positions. */
static inline void softmax_slab(float *y, const float *x, int64_t D, int64_t inner, int64_t n,
                                int is_log)
{
    if (inner == 1)
        softmax_row(y, x, D, is_log);
    else
        softmax_cols(y, x, D, inner, n, is_log);
}

/* dx (D) = gradient at the input of softmax_row from dy and its output y (D):
 * softmax  dx = y (dy - sum dy y),  log_softmax  dx = dy - exp(y) sum dy. */
static inline void softmax_row_backward(float *restrict dx, const float *restrict dy,
                                        const float *restrict y, int64_t D, int is_log)
{
    float t = 0.0f;
    if (is_log) {
        #pragma omp simd reduction(+:t)
        for (int64_t d = 0; d < D; d++)
            t += dy[d];
        #pragma omp simd
        for (int64_t d = 0; d < D; d++)
            dx[d] = dy[d] - exp_vec(y[d]) * t;
        return;
    }
    #pragma omp simd reduction(+:t)
    for (int64_t d = 0; d < D; d++)
        t += dy[d] * y[d];
    #pragma omp simd
    for (int64_t d = 0; d < D; d++)
        dx[d] = y[d] * (dy[d] - t);
}

/* dx (D, inner) = softmax_row_backward along D of dy and y (D, inner), at
 * the inner positions [0, n), n <= SOFTMAX_BLOCK. */
static inline void softmax_cols_backward(float *restrict dx, const float *restrict dy,
                                         const float *restrict y, int64_t D, int64_t inner,
                                         int64_t n, int is_log)
{
    float t[SOFTMAX_BLOCK];
    for (int64_t j = 0; j < n; j++)
        t[j] = 0.0f;
    for (int64_t d = 0; d < D; d++) {
        const float *g = dy + d * inner, *yr = y + d * inner;
        #pragma omp simd
        for (int64_t j = 0; j < n; j++)
            t[j] += is_log ? g[j] : g[j] * yr[j];
    }
    for (int64_t d = 0; d < D; d++) {
        const float *g = dy + d * inner, *yr = y + d * inner;
        float *o = dx + d * inner;
        if (is_log) {
            #pragma omp simd
            for (int64_t j = 0; j < n; j++)
                o[j] = g[j] - exp_vec(yr[j]) * t[j];
        } else {
            #pragma omp simd
            for (int64_t j = 0; j < n; j++)
                o[j] = yr[j] * (g[j] - t[j]);
        }
    }
}

/* One slab's backward: a row (inner == 1) or n inner positions. */
static inline void softmax_slab_backward(float *dx, const float *dy, const float *y, int64_t D,
                                         int64_t inner, int64_t n, int is_log)
{
    if (inner == 1)
        softmax_row_backward(dx, dy, y, D, is_log);
    else
        softmax_cols_backward(dx, dy, y, D, inner, n, is_log);
}

/* The per-ISA copies (softmax_avx2.c, softmax_avx512.c). */
void softmax_slab_avx2(float *y, const float *x, int64_t D, int64_t inner, int64_t n, int is_log);
void softmax_slab_avx512(float *y, const float *x, int64_t D, int64_t inner, int64_t n, int is_log);
void softmax_slab_backward_avx2(float *dx, const float *dy, const float *y, int64_t D,
                                int64_t inner, int64_t n, int is_log);
void softmax_slab_backward_avx512(float *dx, const float *dy, const float *y, int64_t D,
                                  int64_t inner, int64_t n, int is_log);

#endif
