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

/* s[0 .. 4) = the dot products of x (F) with the rows w0 .. w0 + 3F (F
 * apart); next: the four rows after them, or NULL. While it streams its
 * rows it prefetches next's at the same columns: a row of a few KiB ends
 * before the hardware prefetchers are up to speed, so each group of rows
 * would otherwise start from memory's latency. */
static inline void linear_dot4(float s[4], const float *restrict x, const float *restrict w0,
                               int64_t F, const float *next)
{
    linear_vec acc[4] = {{0}, {0}, {0}, {0}};
    int64_t f = 0;
    for (; f + LINEAR_VL <= F; f += LINEAR_VL) {
        if (next && f % (64 / (int64_t)sizeof(float)) == 0)
            for (int r = 0; r < 4; r++)
                __builtin_prefetch(next + r * F + f);
        const linear_vec xv = *(const linear_vec *)(x + f);
        for (int r = 0; r < 4; r++)
            acc[r] += xv * *(const linear_vec *)(w0 + r * F + f);
    }
    for (int r = 0; r < 4; r++) {
        float t = 0.0f;
        for (int64_t g = f; g < F; g++)
            t += x[g] * w0[r * F + g];
        for (int l = 0; l < LINEAR_VL; l++)
            t += acc[r][l];
        s[r] = t;
    }
}

/* y (N,O) = x (N,F) w^T + b for the outputs [o0, o1); w (O,F), b (O) or NULL.
 * Four outputs at a time: four independent accumulator chains, their four
 * weight rows used for every row of x while they are in L1 (the weights are
 * read from memory once, whatever N). */
static inline void linear_rows(float *restrict y, const float *restrict x,
                               const float *restrict w, const float *restrict b,
                               int64_t N, int64_t F, int64_t O, int64_t o0, int64_t o1)
{
    int64_t o = o0;
    for (; o + 4 <= o1; o += 4) {
        const float *next = o + 8 <= O ? w + (o + 4) * F : NULL;
        for (int64_t i = 0; i < N; i++) {
            float a[4];
            linear_dot4(a, x + i * F, w + o * F, F, i == 0 ? next : NULL);
            float *yi = y + i * O;
            for (int r = 0; r < 4; r++)
                yi[o + r] = b ? a[r] + b[o + r] : a[r];
        }
    }
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
