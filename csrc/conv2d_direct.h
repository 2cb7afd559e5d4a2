/* conv2d_direct.h - the direct forward convolution for first layers (few
 * input channels, stride 1), private to the conv2d family. Included by
 * conv2d.c (portable build) and by conv2d_direct_avx2.c /
 * conv2d_direct_avx512.c, each of which defines DIRECT_VBYTES (vector width
 * in bytes) and DIRECT_ACC (accumulator registers of a tile) first, so each
 * compiles the same loops with its own instruction set (GCC vector
 * extensions); only inline code here.
 *
 * Why: with C R S = 9..75 a GEMM over im2col has a depth of 9..75, so its
 * tiles write C after a few steps and the im2col copy costs as much as the
 * product. Here a tile keeps kn output channels x nv vectors of one output
 * row in registers (kn nv accumulators), loads each input row segment once
 * per tap (nv vector loads from a zero-padded copy of the image, so no
 * bounds tests) and multiplies it by kn broadcast weights:
 *   y (kn, row p, columns q0..) += w (kn, c, r, t) * xpad (c, p + r, q0 + t ..)
 */
#ifndef FASTCNN_CONV2D_DIRECT_H
#define FASTCNN_CONV2D_DIRECT_H

#include <stdint.h>
#include <string.h>

/* One image's direct convolution, stride 1:
 *   xpad (C, Hp, Wp): the image with its padding, Hp = P + R - 1 rows and
 *       Wp = round_up(Q, VL) + S - 1 columns (VL = floats per vector of the
 *       widest instruction set, 16), zeros outside the image;
 *   y (K, P, Q) channels k0..k0+kn of this image; w (K, C, R, S); b (K) or NULL. */
typedef struct {
    int64_t C, K, R, S, P, Q, Hp, Wp;
} direct_geom;

#define DIRECT_WP_ALIGN 16

void conv2d_direct_block_avx512(float *y, const float *xpad, const float *w, const float *b,
                                int64_t k0, int64_t kn, const direct_geom *g);
void conv2d_direct_block_avx2(float *y, const float *xpad, const float *w, const float *b,
                              int64_t k0, int64_t kn, const direct_geom *g);
void conv2d_direct_block_generic(float *y, const float *xpad, const float *w, const float *b,
                                 int64_t k0, int64_t kn, const direct_geom *g);

/* Output channels per block (the largest kn a tile takes) for an instruction set. */
#define DIRECT_KB_AVX512 8
#define DIRECT_KB_AVX2 4
#define DIRECT_KB_GENERIC 4

#ifdef DIRECT_VBYTES

#define DIRECT_VL (DIRECT_VBYTES / 4)
#define DIRECT_NVMAX 3                  /* vectors of a row segment per tile */
#define DIRECT_KB (DIRECT_ACC / DIRECT_NVMAX)

typedef float dvec __attribute__((vector_size(DIRECT_VBYTES), aligned(4), may_alias));

/* DIRECT_STORE_PART(dst, vec, n): store the first n (< VL) floats of vec;
 * an including file may define a masked store, else a plain loop. */
#ifndef DIRECT_STORE_PART
#define DIRECT_STORE_PART(dst, vec, n) direct_store_part(dst, vec, n)
static inline void direct_store_part(float *dst, dvec vec, int n)
{
    float tmp[DIRECT_VL];
    memcpy(tmp, &vec, sizeof tmp);
    for (int j = 0; j < n; j++) dst[j] = tmp[j];
}
#endif

/* y rows p of channels k0..k0+kn, columns q0..q0+min(Q - q0, nv VL);
 * taps: S when known at compile time (unrolled), else 0. */
static inline __attribute__((always_inline)) void
direct_tile(const int kn, const int nv, const int taps, float *y, const float *xpad, const float *w,
            const float *b, int64_t k0, int64_t p, int64_t q0, const direct_geom *g)
{
    const int64_t CRS = g->C * g->R * g->S, PQ = g->P * g->Q;
    dvec acc[DIRECT_KB][DIRECT_NVMAX];
#pragma GCC unroll 16
    for (int k = 0; k < kn; k++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            acc[k][v] = (dvec){0} + (b ? b[k0 + k] : 0.0f);
    for (int64_t c = 0; c < g->C; c++)
        for (int64_t r = 0; r < g->R; r++) {
            const float *xr = xpad + (c * g->Hp + p + r) * g->Wp + q0;
            const float *wr = w + k0 * CRS + (c * g->R + r) * g->S;
            const int64_t S = taps ? taps : g->S;
#pragma GCC unroll 8
            for (int64_t t = 0; t < S; t++) {
                dvec xv[DIRECT_NVMAX];
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    xv[v] = *(const dvec *)(xr + t + v * DIRECT_VL);
#pragma GCC unroll 16
                for (int k = 0; k < kn; k++) {
                    float wk = wr[k * CRS + t];
#pragma GCC unroll 4
                    for (int v = 0; v < nv; v++)
                        acc[k][v] += wk * xv[v];
                }
            }
        }
    int64_t width = g->Q - q0;
#pragma GCC unroll 16
    for (int k = 0; k < kn; k++) {
        float *yr = y + (k0 + k) * PQ + p * g->Q + q0;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            int64_t left = width - v * DIRECT_VL;
            if (left >= DIRECT_VL) {
                *(dvec *)(yr + v * DIRECT_VL) = acc[k][v];
            } else {
                DIRECT_STORE_PART(yr + v * DIRECT_VL, acc[k][v], (int)left);
            }
        }
    }
}

#define DIRECT_TAPS(kn, nv)                                                         \
    if (g->S == 3)                                                                  \
        direct_tile(kn, nv, 3, y, xpad, w, b, k0, p, q0, g);                        \
    else if (g->S == 5)                                                             \
        direct_tile(kn, nv, 5, y, xpad, w, b, k0, p, q0, g);                        \
    else                                                                            \
        direct_tile(kn, nv, 0, y, xpad, w, b, k0, p, q0, g);

#define DIRECT_NV_CASES(kn)                                                         \
    case kn:                                                                        \
        if (nv == 3) {                                                              \
            DIRECT_TAPS(kn, 3)                                                      \
        } else if (nv == 2) {                                                       \
            DIRECT_TAPS(kn, 2)                                                      \
        } else {                                                                    \
            DIRECT_TAPS(kn, 1)                                                      \
        }                                                                           \
        break;

/* Channels k0..k0+kn (kn <= DIRECT_KB) of one image, every row and column. */
static inline void direct_block(float *y, const float *xpad, const float *w, const float *b,
                                int64_t k0, int64_t kn, const direct_geom *g)
{
    for (int64_t p = 0; p < g->P; p++)
        for (int64_t q0 = 0; q0 < g->Q; q0 += DIRECT_NVMAX * DIRECT_VL) {
            int64_t rest = (g->Q - q0 + DIRECT_VL - 1) / DIRECT_VL;
            int nv = rest < DIRECT_NVMAX ? (int)rest : DIRECT_NVMAX;
            switch (kn) {
#if DIRECT_KB >= 8
            DIRECT_NV_CASES(8) DIRECT_NV_CASES(7) DIRECT_NV_CASES(6) DIRECT_NV_CASES(5)
#endif
            DIRECT_NV_CASES(4) DIRECT_NV_CASES(3) DIRECT_NV_CASES(2) DIRECT_NV_CASES(1)
            default: break;
            }
        }
}

#endif /* DIRECT_VBYTES */
#endif /* FASTCNN_CONV2D_DIRECT_H */
