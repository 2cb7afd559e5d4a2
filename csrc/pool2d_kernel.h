/* pool2d_kernel.h - the 2x2 stride-2 max pooling of whole tiles (no padding,
 * H = 2P, W = 2Q: LeNet's and most CNNs' pooling), forward and backward, for
 * one plane (private to the pool2d family). Included by pool2d.c (portable
 * build) and by pool2d_avx2.c / pool2d_avx512.c, so each compiles the same
 * loops with its own instruction set; only inline code here.
 *
 * Same results as the general kernels: scan order (row by row, left to
 * right), first maximum wins, a NaN is the maximum (the last NaN wins). */
#ifndef FASTCNN_POOL2D_KERNEL_H
#define FASTCNN_POOL2D_KERNEL_H

#include <stdint.h>

/* One candidate of a window: take v if it beats m (or is NaN). */
#define POOL2D_TAKE(v, idx)                          \
    do {                                             \
        int take_ = ((v) > m) | ((v) != (v));        \
        m = take_ ? (v) : m;                         \
        i = take_ ? (idx) : i;                       \
    } while (0)

/* y, am (P, Q) = max and flat index h*W + w over each 2x2 tile of x (2P, W). */
static inline void max_tiles_2x2(float *restrict y, int32_t *restrict am,
                                 const float *restrict x, int64_t W, int64_t P, int64_t Q)
{
    for (int64_t p = 0; p < P; p++) {
        const float *r0 = x + 2 * p * W, *r1 = r0 + W;
        int32_t b0 = (int32_t)(2 * p * W), b1 = b0 + (int32_t)W;
        float *yr = y + p * Q;
        int32_t *ar = am + p * Q;
        for (int64_t q = 0; q < Q; q++) {
            /* max_window starts at -inf: the first element always replaces it,
             * or equals it with the same index */
            float m = r0[2 * q];
            int32_t i = b0 + (int32_t)(2 * q);
            POOL2D_TAKE(r0[2 * q + 1], b0 + (int32_t)(2 * q + 1));
            POOL2D_TAKE(r1[2 * q], b1 + (int32_t)(2 * q));
            POOL2D_TAKE(r1[2 * q + 1], b1 + (int32_t)(2 * q + 1));
            yr[q] = m;
            ar[q] = i;
        }
    }
}

/* y (P, Q) = max_tiles_2x2's y, without the indices (inference): the same
 * scan order and NaN rule, so the same values. */
static inline void max_values_2x2(float *restrict y, const float *restrict x, int64_t W,
                                  int64_t P, int64_t Q)
{
    for (int64_t p = 0; p < P; p++) {
        const float *r0 = x + 2 * p * W, *r1 = r0 + W;
        float *yr = y + p * Q;
        for (int64_t q = 0; q < Q; q++) {
            float m = r0[2 * q], v = r0[2 * q + 1];
            m = (v > m) | (v != v) ? v : m;
            v = r1[2 * q];
            m = (v > m) | (v != v) ? v : m;
            v = r1[2 * q + 1];
            yr[q] = (v > m) | (v != v) ? v : m;
        }
    }
}

/* dx (2P, 2Q) = gradient of max_tiles_2x2 from dy, am (P, Q): each position
 * gets its tile's gradient if it is the tile's argmax, else 0 (write-only).
 * With mask (2P, 2Q) non-NULL (a ReLU's output that was the pooling's
 * input) positions where mask <= 0 (or NaN) get 0: ReLU's backward, fused.
 * Returns the number of tiles whose index was found in the tile (P Q when
 * every index is valid); the caller redoes the plane otherwise, so the loop
 * stops after the first row of tiles with a miss (overlapping windows). */
static inline int64_t route_tiles_2x2(float *restrict dx, const float *restrict dy,
                                      const int32_t *restrict am, const float *restrict mask,
                                      int64_t P, int64_t Q)
{
    int64_t W = 2 * Q, hits = 0;
    for (int64_t p = 0; p < P; p++) {
        float *d0 = dx + 2 * p * W, *d1 = d0 + W;
        const float *g = dy + p * Q;
        const int32_t *a = am + p * Q;
        int32_t b0 = (int32_t)(2 * p * W), b1 = b0 + (int32_t)W;
        if (mask) {
            const float *m0 = mask + 2 * p * W, *m1 = m0 + W;
            for (int64_t q = 0; q < Q; q++) {
                float gq = g[q] + 0.0f;  /* -0 -> +0, as torch's 0 + dy */
                int32_t aq = a[q], c0 = b0 + (int32_t)(2 * q), c1 = b1 + (int32_t)(2 * q);
                int h00 = aq == c0, h01 = aq == c0 + 1, h10 = aq == c1, h11 = aq == c1 + 1;
                d0[2 * q] = h00 & (m0[2 * q] > 0.0f) ? gq : 0.0f;
                d0[2 * q + 1] = h01 & (m0[2 * q + 1] > 0.0f) ? gq : 0.0f;
                d1[2 * q] = h10 & (m1[2 * q] > 0.0f) ? gq : 0.0f;
                d1[2 * q + 1] = h11 & (m1[2 * q + 1] > 0.0f) ? gq : 0.0f;
                hits += h00 + h01 + h10 + h11;
            }
        } else {
            for (int64_t q = 0; q < Q; q++) {
                float gq = g[q] + 0.0f;
                int32_t aq = a[q], c0 = b0 + (int32_t)(2 * q), c1 = b1 + (int32_t)(2 * q);
                int h00 = aq == c0, h01 = aq == c0 + 1, h10 = aq == c1, h11 = aq == c1 + 1;
                d0[2 * q] = h00 ? gq : 0.0f;
                d0[2 * q + 1] = h01 ? gq : 0.0f;
                d1[2 * q] = h10 ? gq : 0.0f;
                d1[2 * q + 1] = h11 ? gq : 0.0f;
                hits += h00 + h01 + h10 + h11;
            }
        }
        if (hits != (p + 1) * Q)
            break;
    }
    return hits;
}

/* The per-ISA copies (pool2d_avx2.c, pool2d_avx512.c). */
void max_tiles_2x2_avx2(float *y, int32_t *am, const float *x, int64_t W, int64_t P, int64_t Q);
void max_tiles_2x2_avx512(float *y, int32_t *am, const float *x, int64_t W, int64_t P, int64_t Q);
void max_values_2x2_avx2(float *y, const float *x, int64_t W, int64_t P, int64_t Q);
void max_values_2x2_avx512(float *y, const float *x, int64_t W, int64_t P, int64_t Q);
int64_t route_tiles_2x2_avx2(float *dx, const float *dy, const int32_t *am, const float *mask,
                             int64_t P, int64_t Q);
int64_t route_tiles_2x2_avx512(float *dx, const float *dy, const int32_t *am, const float *mask,
                               int64_t P, int64_t Q);

#endif
