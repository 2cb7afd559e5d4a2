/* linear_kernel.h - the forward pass of a fully connected layer over a few
 * rows (batch 1 inference...) as dot products of contiguous rows, without the
 * packing a matrix multiply pays for (private to the linear family). Included
 * by linear.c (portable build) and by linear_avx2.c / linear_avx512.c, so each
 * compiles the same loops with its own instruction set; only inline code here. */
#ifndef FASTCNN_LINEAR_KERNEL_H
#define FASTCNN_LINEAR_KERNEL_H

#include <stddef.h>
#include <stdint.h>

/* Rows up to which linear_forward uses linear_rows instead of sgemm. */
#define LINEAR_FEW_ROWS 8

#if defined(__AVX512F__)
#define LINEAR_VL 16
#elif defined(__AVX2__)
#define LINEAR_VL 8
#else
#define LINEAR_VL 4
#endif
typedef float linear_vec __attribute__((vector_size(4 * LINEAR_VL), aligned(4), may_alias));

/* s[0 .. rows) = the dot products of x (F) with the rows w0 .. w0 + (rows-1) F
 * (F apart); next: the rows after them, or NULL. While it streams its rows
 * it prefetches next's at the same columns: a row of a few KiB ends before
 * the hardware prefetchers are up to speed, so each group of rows would
 * otherwise start from memory's latency. rows (4 or 8) is a constant at
 * each call, so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void
linear_dot(float *s, const float *restrict x, const float *restrict w0, int64_t F,
           const float *next, const int rows)
{
    linear_vec acc[8];
    for (int r = 0; r < rows; r++) acc[r] = (linear_vec){0};
    int64_t f = 0;
    for (; f + LINEAR_VL <= F; f += LINEAR_VL) {
        if (next && f % (64 / (int64_t)sizeof(float)) == 0)
            for (int r = 0; r < rows; r++)
                __builtin_prefetch(next + r * F + f);
        const linear_vec xv = *(const linear_vec *)(x + f);
        for (int r = 0; r < rows; r++)
            acc[r] += xv * *(const linear_vec *)(w0 + r * F + f);
    }
    for (int r = 0; r < rows; r++) {
        float t = 0.0f;
        for (int64_t g = f; g < F; g++)
            t += x[g] * w0[r * F + g];
        for (int l = 0; l < LINEAR_VL; l++)
            t += acc[r][l];
        s[r] = t;
    }
}

/* y (N, O) outputs [o, o + rows) = x (N, F) w^T + b, from linear_dot: their
 * rows of w used for every row of x while they are in L1 (the weights are
 * read from memory once, whatever N); the next rows prefetched on x's first. */
static inline __attribute__((always_inline)) void
linear_group(float *restrict y, const float *restrict x, const float *restrict w,
             const float *restrict b, int64_t N, int64_t F, int64_t O, int64_t o,
             const int rows)
{
    const float *next = o + 2 * rows <= O ? w + (o + rows) * F : NULL;
    for (int64_t i = 0; i < N; i++) {
        float a[8];
        linear_dot(a, x + i * F, w + o * F, F, i == 0 ? next : NULL, rows);
        float *yi = y + i * O;
        for (int r = 0; r < rows; r++)
            yi[o + r] = b ? a[r] + b[o + r] : a[r];
    }
}

/* y (N,O) = x (N,F) w^T + b for the outputs [o0, o1); w (O,F), b (O) or NULL.
 * Eight outputs at a time (then four, then one by one): eight independent
 * accumulator chains, and eight rows of w streamed from memory at once. Zen
 * 4, 1000 x 1280 at batch 1, weights from memory, 1 thread: 16.5-18.8 GB/s
 * four at a time, 19.3-21.2 eight (AVX2 18.1 / 21.2), 21.1 sixteen (against
 * 23.4 for eight in that run). */
static inline void linear_rows(float *restrict y, const float *restrict x,
                               const float *restrict w, const float *restrict b,
                               int64_t N, int64_t F, int64_t O, int64_t o0, int64_t o1)
{
    int64_t o = o0;
    for (; o + 8 <= o1; o += 8)
        linear_group(y, x, w, b, N, F, O, o, 8);
    for (; o + 4 <= o1; o += 4)
        linear_group(y, x, w, b, N, F, O, o, 4);
    for (; o < o1; o++) {
        const float *wo = w + o * F;
        for (int64_t i = 0; i < N; i++) {
            const float *xi = x + i * F;
            float a = 0.0f;
            #pragma omp simd reduction(+ : a)
            for (int64_t f = 0; f < F; f++)
                a += xi[f] * wo[f];
            y[i * O + o] = b ? a + b[o] : a;
        }
    }
}

void linear_rows_avx2(float *y, const float *x, const float *w, const float *b, int64_t N,
                      int64_t F, int64_t O, int64_t o0, int64_t o1);
void linear_rows_avx512(float *y, const float *x, const float *w, const float *b, int64_t N,
                        int64_t F, int64_t O, int64_t o0, int64_t o1);

#endif
