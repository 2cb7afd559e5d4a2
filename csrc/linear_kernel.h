/* linear_kernel.h - the forward pass of a fully connected layer over a few
 * rows (batch 1 inference...) as dot products of contiguous rows, without the
 * packing a matrix multiply pays for (private to the linear family). Included
 * by linear.c (portable build) and by linear_avx2.c / linear_avx512.c, so each
 * compiles the same loops with its own instruction set; only inline code here. */
#ifndef FASTCNN_LINEAR_KERNEL_H
#define FASTCNN_LINEAR_KERNEL_H

#include <stdint.h>

/* Rows up to which linear_forward uses linear_rows instead of sgemm. */
#define LINEAR_FEW_ROWS 8

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
        const float *w0 = w + o * F, *w1 = w0 + F, *w2 = w1 + F, *w3 = w2 + F;
        for (int64_t i = 0; i < N; i++) {
            const float *xi = x + i * F;
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            #pragma omp simd reduction(+ : a0, a1, a2, a3)
            for (int64_t f = 0; f < F; f++) {
                a0 += xi[f] * w0[f];
                a1 += xi[f] * w1[f];
                a2 += xi[f] * w2[f];
                a3 += xi[f] * w3[f];
            }
            float *yi = y + i * O;
            yi[o] = b ? a0 + b[o] : a0;
            yi[o + 1] = b ? a1 + b[o + 1] : a1;
            yi[o + 2] = b ? a2 + b[o + 2] : a2;
            yi[o + 3] = b ? a3 + b[o + 3] : a3;
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
