/* pool2d_kernel.h - the 2x2 stride-2 max pooling of whole tiles (no padding,
 * H = 2P, W = 2Q: LeNet's and most CNNs' pooling), forward and backward, for
 * one plane, the values-only rows of any max pooling window (inference) and
 * the rows of an average pooling (private to the pool2d family). Included by pool2d.c (portable build) and
 * by pool2d_avx2.c / pool2d_avx512.c, so each compiles the same loops with
 * its own instruction set; only inline code here.
 *
 * Same results as the general kernels: scan order (row by row, left to
 * right), first maximum wins, a NaN is the maximum (the last NaN wins). */
#ifndef FASTCNN_POOL2D_KERNEL_H
#define FASTCNN_POOL2D_KERNEL_H

#include <math.h>
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

/* The scan's step: m, or v if v beats it (greater, or NaN). */
#define POOL2D_BEAT(m, v) (((v) > (m)) | ((v) != (v)) ? (v) : (m))

/* Output columns per block of max_values_cols (its stack buffers). */
#define POOL2D_VALUES_BLOCK 256

/* t[k] = the scan of r[k sw + j dw] over j < S, for k < n: one input row's
 * part of n windows (its first maximum, or its last NaN). At stride 2 the
 * columns the windows reach are first split into the even and odd ones
 * (ev, od: n + 8 floats each, so windows up to 17 wide), so that every
 * read has unit stride and the loops vectorize. */
static inline __attribute__((always_inline)) void
row_windows(float *restrict t, const float *restrict r, int n, int S, int64_t sw, int64_t dw,
            float *restrict ev, float *restrict od)
{
    if (sw == 2 && dw == 1 && S <= 17) {
        int ne = n + (S - 1) / 2, no = n + S / 2 - 1;      /* columns 2k, 2k + 1 reached */
        for (int k = 0; k < no; k++) {
            ev[k] = r[2 * k];
            od[k] = r[2 * k + 1];
        }
        if (ne > no)
            ev[no] = r[2 * no];
        for (int k = 0; k < n; k++)
            t[k] = ev[k];
        for (int j = 1; j < S; j++) {
            const float *c = (j & 1 ? od : ev) + j / 2;
            for (int k = 0; k < n; k++)
                t[k] = POOL2D_BEAT(t[k], c[k]);
        }
        return;
    }
    for (int k = 0; k < n; k++)
        t[k] = r[k * sw];
    for (int j = 1; j < S; j++)
        for (int k = 0; k < n; k++)
            t[k] = POOL2D_BEAT(t[k], r[k * sw + j * dw]);
}

/* One output row of a max pooling by any window (inference: values, no
 * indices), its interior columns [qa, qb) (windows inside the row): y[q] =
 * the scan of rows h0, h0 + dh, .. < h1 of x (.., W), columns q sw - pw + j
 * dw (j < S) of each. Each row's windows are scanned first, then those
 * results top to bottom by the same rule: the row-major scan of the whole
 * window, so the same value bit for bit (signed zeros, which NaN). Inlined
 * with S, sw and dw constant, the loops vectorize. */
static inline __attribute__((always_inline)) void
max_values_cols(float *restrict y, const float *restrict x, int64_t W, int64_t h0, int64_t h1,
                int64_t dh, int64_t qa, int64_t qb, int S, int64_t sw, int64_t dw, int64_t pw)
{
    float t[POOL2D_VALUES_BLOCK], ev[POOL2D_VALUES_BLOCK + 8], od[POOL2D_VALUES_BLOCK + 8];
    for (int64_t q0 = qa; q0 < qb; q0 += POOL2D_VALUES_BLOCK) {
        int n = (int)(qb - q0 < POOL2D_VALUES_BLOCK ? qb - q0 : POOL2D_VALUES_BLOCK);
        float *yb = y + q0;
        row_windows(yb, x + h0 * W - pw + q0 * sw, n, S, sw, dw, ev, od);
        for (int64_t h = h0 + dh; h < h1; h += dh) {
            row_windows(t, x + h * W - pw + q0 * sw, n, S, sw, dw, ev, od);
            for (int k = 0; k < n; k++)
                yb[k] = POOL2D_BEAT(yb[k], t[k]);
        }
    }
}

/* max_values_cols for the common windows (3 or 2 wide at stride 2, 3 wide
 * at stride 1, undilated) with those constant, else as given. */
static inline void max_values_row(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                                  int64_t dh, int64_t qa, int64_t qb, int S, int64_t sw,
                                  int64_t dw, int64_t pw)
{
    if (S == 3 && sw == 2 && dw == 1)
        max_values_cols(y, x, W, h0, h1, dh, qa, qb, 3, 2, 1, pw);
    else if (S == 2 && sw == 2 && dw == 1)
        max_values_cols(y, x, W, h0, h1, dh, qa, qb, 2, 2, 1, pw);
    else if (S == 3 && sw == 1 && dw == 1)
        max_values_cols(y, x, W, h0, h1, dh, qa, qb, 3, 1, 1, pw);
    else
        max_values_cols(y, x, W, h0, h1, dh, qa, qb, S, sw, dw, pw);
}

/* One output row of an average pooling, its interior columns [qa, qb): y[q]
 * = the sum over rows [h0, h1) of x (.., W), columns q sw - pw + j (j < S)
 * of each, row by row and in column order (the border windows' order),
 * divided by n. Inlined with S and sw constant. */
static inline __attribute__((always_inline)) void
avg_values_cols(float *restrict y, const float *restrict x, int64_t W, int64_t h0, int64_t h1,
                int64_t qa, int64_t qb, int S, int64_t sw, int64_t pw, float n)
{
    for (int64_t q = qa; q < qb; q++)
        y[q] = 0.0f;
    for (int64_t h = h0; h < h1; h++) {
        const float *row = x + h * W - pw;
        for (int64_t q = qa; q < qb; q++) {
            float acc = y[q];
            for (int j = 0; j < S; j++)
                acc += row[q * sw + j];
            y[q] = acc;
        }
    }
    for (int64_t q = qa; q < qb; q++)
        y[q] /= n;
}

/* avg_values_cols for the common windows (3 or 2 wide at stride 2) with
 * those constant, else as given. */
static inline void avg_values_row(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                                  int64_t qa, int64_t qb, int S, int64_t sw, int64_t pw, float n)
{
    if (S == 3 && sw == 2)
        avg_values_cols(y, x, W, h0, h1, qa, qb, 3, 2, pw, n);
    else if (S == 2 && sw == 2)
        avg_values_cols(y, x, W, h0, h1, qa, qb, 2, 2, pw, n);
    else
        avg_values_cols(y, x, W, h0, h1, qa, qb, S, sw, pw, n);
}

/* The per-ISA copies (pool2d_avx2.c, pool2d_avx512.c). */
void max_tiles_2x2_avx2(float *y, int32_t *am, const float *x, int64_t W, int64_t P, int64_t Q);
void max_tiles_2x2_avx512(float *y, int32_t *am, const float *x, int64_t W, int64_t P, int64_t Q);
void max_values_2x2_avx2(float *y, const float *x, int64_t W, int64_t P, int64_t Q);
void max_values_2x2_avx512(float *y, const float *x, int64_t W, int64_t P, int64_t Q);
void max_values_row_avx2(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                        int64_t dh, int64_t qa, int64_t qb, int S, int64_t sw, int64_t dw,
                        int64_t pw);
void avg_values_row_avx2(float *y, const float *x, int64_t W, int64_t h0, int64_t h1, int64_t qa,
                         int64_t qb, int S, int64_t sw, int64_t pw, float n);
void avg_values_row_avx512(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                           int64_t qa, int64_t qb, int S, int64_t sw, int64_t pw, float n);
void max_values_row_avx512(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                          int64_t dh, int64_t qa, int64_t qb, int S, int64_t sw, int64_t dw,
                          int64_t pw);
void max_indexed_3s2_avx2(float *y, int32_t *am, const float *x, int64_t W, int64_t h0,
                          int64_t h1, int64_t dh, int64_t qa, int64_t qb, int64_t pw);
void max_indexed_3s2_avx512(float *y, int32_t *am, const float *x, int64_t W, int64_t h0,
                            int64_t h1, int64_t dh, int64_t qa, int64_t qb, int64_t pw);
int64_t route_tiles_2x2_avx2(float *dx, const float *dy, const int32_t *am, const float *mask,
                             int64_t P, int64_t Q);
int64_t route_tiles_2x2_avx512(float *dx, const float *dy, const int32_t *am, const float *mask,
                               int64_t P, int64_t Q);

/* route_tiles_2x2 for planes of at most ROUTE_SMALL_TILES tiles (LeNet's
 * 5x5 after 10x10, CIFAR-net's 4x4): dx runs flat, 16 floats at a time,
 * each taking its tile's (tile_of[i], 2P 2Q entries) gradient and index
 * from the plane's dy and am held in two vectors; the same values, and the
 * hits counted over the whole plane. AVX-512 only. */
#define ROUTE_SMALL_TILES 32
int64_t route_small_2x2_avx512(float *dx, const float *dy, const int32_t *am, const float *mask,
                               const int32_t *tile_of, int64_t P, int64_t Q);

#endif
