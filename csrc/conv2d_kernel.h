/* conv2d_kernel.h - inner loops of the conv2d family that are compiled once
 * per instruction set, private to the family: the direct forward
 * convolution for first layers (few input channels, stride 1), the
 * channel-vector convolution and weight gradient, and the stride-1 im2col
 * of one kernel tap. Without DIRECT_VBYTES defined it only declares them
 * (conv2d_internal.h); conv2d_generic.h, conv2d_avx2.h and conv2d_avx512.h
 * define DIRECT_VBYTES (vector width in bytes) and DIRECT_ACC (accumulator
 * registers of a tile) first, so each file that includes one of them
 * compiles the same loops with its own instruction set (GCC vector
 * extensions); only inline code here.
 *
 * Direct convolution, why: with C R S = 9..75 a GEMM over im2col has a depth of 9..75, so its
 * tiles write C after a few steps and the im2col copy costs as much as the
 * product. Here a tile keeps kn output channels x nv vectors of one output
 * row in registers (kn nv accumulators), loads each input row segment once
 * per tap (nv vector loads from a zero-padded copy of the image, so no
 * bounds tests) and multiplies it by kn broadcast weights:
 *   y (kn, row p, columns q0..) += w (kn, c, r, t) * xpad (c, p + r, q0 + t ..)
 */
#ifndef FASTCNN_CONV2D_KERNEL_H
#define FASTCNN_CONV2D_KERNEL_H

#include <stdint.h>
#include <string.h>

#include "fastcnn.h"

/* Indices i in [0, n) with 0 <= i * stride + off < size, as [lo, hi). */
typedef struct {
    int64_t lo, hi;
} span;

static inline span valid_span(int64_t off, int64_t stride, int64_t size, int64_t n)
{
    span v;
    v.lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
    v.hi = size - off <= 0 ? 0 : (size - off - 1) / stride + 1;
    if (v.hi > n) v.hi = n;
    if (v.lo > v.hi) v.lo = v.hi;
    return v;
}

/* One image's direct convolution, stride 1 or 2 (both ways):
 *   xpad (C, Hp, Wp): the image with its padding, zeros outside the image;
 *       stride 1: Hp = P + R - 1 rows of Wp = round_up(Q, VL) + S - 1
 *       columns (VL = floats per vector of the widest instruction set, 16);
 *       stride 2 (Wh > 0): Hp = 2 (P - 1) + R rows of Wp = 2 Wh floats,
 *       the padded row's even columns then its odd ones, Wh = round_up(Q,
 *       VL) + S / 2 each, so a tap reads its outputs' inputs as one run;
 *   y (K, P, Q) channels k0..k0+kn of this image; b (K) or NULL;
 *   wB (ceil(K / kb), C R S, kb): w (K, C, R, S) in blocks of kb output
 *       channels (the instruction set's DIRECT_KB_*), each block transposed
 *       so that a tap's kb weights are adjacent, zeros past K (packed by
 *       conv2d_direct.c). */
typedef struct {
    int64_t C, K, R, S, P, Q, Hp, Wp;
    int64_t clamp;      /* outputs clamped to [lo, hi] (conv2d_shape's clamp) */
    float lo, hi;
    int64_t Wh;         /* stride 2: the width of a row's column phase; stride 1: 0 */
} direct_geom;

#define DIRECT_WP_ALIGN 16

void conv2d_direct_block_avx512(float *y, const float *xpad, const float *wB, const float *b,
                                int64_t k0, int64_t kn, int64_t p0, int64_t p1,
                                const direct_geom *g);
void conv2d_direct_block_avx2(float *y, const float *xpad, const float *wB, const float *b,
                              int64_t k0, int64_t kn, int64_t p0, int64_t p1,
                              const direct_geom *g);
void conv2d_direct_block_generic(float *y, const float *xpad, const float *wB, const float *b,
                                 int64_t k0, int64_t kn, int64_t p0, int64_t p1,
                                 const direct_geom *g);

/* Channel-vector direct convolution (any stride, any K): a tile keeps np
 * output positions of one or two rows x kv vectors of output channels in
 * registers; per tap (c, r, t) it loads kv vectors of the blocked weights
 * wB (ceil(K / (kv VL)), C R S, kv VL) (each block of kv VL channels
 * transposed, so a tile reads its weights in order; zeros past K) and
 * broadcasts np input values from the zero-padded image xpad (C, Hp, Wp),
 * Hp = (P-1) sh + R, Wp = (Q-1) sw + S. y (K, P, Q) of one image, channels
 * k0 .. k0 + kv VL that are below K; b (as many floats as wB's blocks have
 * channels) or NULL. */
typedef struct {
    int64_t C, K, R, S, sh, sw, P, Q, Hp, Wp;   /* weight gradient: K a multiple of VL */
    int64_t clamp;      /* forward outputs clamped to [lo, hi] (conv2d_shape's clamp) */
    float lo, hi;
} kvec_geom;

void conv2d_kvec_block_avx512(float *y, const float *xpad, const float *wB, const float *b,
                              int64_t k0, int kv, int64_t p0, int64_t p1, const kvec_geom *g);
void conv2d_kvec_block_avx2(float *y, const float *xpad, const float *wB, const float *b,
                            int64_t k0, int kv, int64_t p0, int64_t p1, const kvec_geom *g);
void conv2d_kvec_block_generic(float *y, const float *xpad, const float *wB, const float *b,
                               int64_t k0, int kv, int64_t p0, int64_t p1, const kvec_geom *g);

/* Channel-vector weight gradient of one image (g->K a multiple of the
 * vector length, 1 <= S <= WGRAD_MAX_S): dwT (C R S, K) += sum over the positions (p, q) of
 * xpad (c, p sh + r, q sw + t) dyT (p Q + q, K), with xpad the padded image
 * as above and dyT (P Q, K) the image's output gradient transposed. A tile
 * keeps up to KVEC_MP taps (whole kernel rows) x kv channel vectors in
 * registers and runs over every position. */
void conv2d_wgrad_image_avx512(float *dwT, const float *xpad, const float *dyT,
                               const kvec_geom *g);
void conv2d_wgrad_image_avx2(float *dwT, const float *xpad, const float *dyT,
                             const kvec_geom *g);
void conv2d_wgrad_image_generic(float *dwT, const float *xpad, const float *dyT,
                                const kvec_geom *g);

/* Position-vector weight gradient of one kernel row's taps and one image
 * (stride 1; first layers, few channels): the vector vsums[t K + k] (t < ns
 * <= WGRAD_ROW_NS_MAX, k < kn <= the ISA's DIRECT_KB; vectors of the ISA's
 * kernel table's vl floats) += the lanes' sums over positions (p, q) of dy
 * (k0 + k, p, q) xpad (c, p + r, q + t0 + t), xpad (C, Hp, Wp) the
 * zero-padded image (wgrad_row below); the caller adds the lanes up once. */
#define WGRAD_ROW_NS_MAX 7        /* the widest tile */
void conv2d_wgrad_row_avx512(float *vsums, int64_t K, const float *xpad, const float *dy,
                             int64_t c, int64_t r, int64_t t0, int ns, int64_t k0, int64_t kn,
                             const direct_geom *g);
void conv2d_wgrad_row_avx2(float *vsums, int64_t K, const float *xpad, const float *dy,
                           int64_t c, int64_t r, int64_t t0, int ns, int64_t k0, int64_t kn,
                           const direct_geom *g);
void conv2d_wgrad_row_generic(float *vsums, int64_t K, const float *xpad, const float *dy,
                              int64_t c, int64_t r, int64_t t0, int ns, int64_t k0, int64_t kn,
                              const direct_geom *g);

/* im2col of kernel tap (r, t) for cnt images, column stride 1: out (P, Q),
 * image i at out + i ostride, from the input plane xc (H, W), image i at
 * xc + i xstride (s->sw == 1 only; any s->sh). */
void conv2d_im2col_tap_avx512(float *out, const float *xc, int64_t cnt, int64_t ostride,
                              int64_t xstride, int64_t r, int64_t t, const conv2d_shape *s);
void conv2d_im2col_tap_avx2(float *out, const float *xc, int64_t cnt, int64_t ostride,
                            int64_t xstride, int64_t r, int64_t t, const conv2d_shape *s);

/* col2im of kernel tap (r, t) for cnt images, any stride: the input plane
 * dxc (H, W), image i at dxc + i xstride, += the plane in (P, Q), image i at
 * in + i istride, scattered back through the tap (the portable one in
 * conv2d_im2col.c, which the others call at column strides above 1). */
void conv2d_col2im_tap_generic(float *dxc, const float *in, int64_t cnt, int64_t xstride,
                               int64_t istride, int64_t r, int64_t t, const conv2d_shape *s);
void conv2d_col2im_tap_avx512(float *dxc, const float *in, int64_t cnt, int64_t xstride,
                              int64_t istride, int64_t r, int64_t t, const conv2d_shape *s);
void conv2d_col2im_tap_avx2(float *dxc, const float *in, int64_t cnt, int64_t xstride,
                            int64_t istride, int64_t r, int64_t t, const conv2d_shape *s);

/* col2im of one channel, every tap at once: the planes dxc (H, W), image i
 * at dxc + i xstride, = the sums of the channel's rows of col scattered back
 * (tap (r, t)'s row at colc + (r S + t) cnt P Q, image i at + i P Q), each
 * float of dx written once; kernels of at most CONV2D_COL2IM_MAX_R rows and
 * columns. AVX-512 only: at column stride 2, and at column stride 1 (planes
 * wider than a vector; with AVX2, the masked loads lost to col2im_tap on
 * Zen 4). */
#define CONV2D_COL2IM_MAX_R 16
void conv2d_col2im_s2_avx512(float *dxc, const float *colc, int64_t cnt, int64_t xstride,
                             const conv2d_shape *s);
void conv2d_col2im_s1_avx512(float *dxc, const float *colc, int64_t cnt, int64_t xstride,
                             const conv2d_shape *s);

/* Output channels per block (the largest kn a tile takes) for an instruction set. */
#define DIRECT_KB_AVX512 8
#define DIRECT_KB_AVX2 4
#define DIRECT_KB_GENERIC 4

/* Widest kernel rows (S) of the channel-vector weight gradient for an
 * instruction set (its WGRAD_MAX_S below). */
#define WGRAD_MAX_S_AVX512 7
#define WGRAD_MAX_S_AVX2 6
#define WGRAD_MAX_S_GENERIC 6

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

typedef int32_t divec __attribute__((vector_size(DIRECT_VBYTES)));

/* DIRECT_LOAD_PART(src, n): the first n (< VL) floats at src, the other
 * lanes zero, nothing past them read: a masked load where the including
 * file defines DIRECT_LOAD_RANGE, else a plain loop. */
#ifdef DIRECT_LOAD_RANGE
#define DIRECT_LOAD_PART(src, n) DIRECT_LOAD_RANGE(src, 0, n)
#else
#define DIRECT_LOAD_PART(src, n) direct_load_part(src, n)
static inline dvec direct_load_part(const float *src, int64_t n)
{
    float tmp[DIRECT_VL] = {0};
    for (int64_t j = 0; j < n; j++) tmp[j] = src[j];
    dvec v;
    memcpy(&v, tmp, sizeof v);
    return v;
}
#endif

/* v clamped to [lo, hi] lane by lane as hardtanh does (a NaN lane passes). */
static inline dvec clamp_vec(dvec v, float lo, float hi)
{
    dvec vlo = (dvec){0} + lo, vhi = (dvec){0} + hi;
    divec below = v < vlo;
    v = (dvec)(((divec)v & ~below) | ((divec)vlo & below));
    divec above = v > vhi;
    return (dvec)(((divec)v & ~above) | ((divec)vhi & above));
}

/* y rows p of channels k0..k0+kn, columns q0..q0+min(Q - q0, nv VL);
 * taps: S when known at compile time (unrolled), else 0; stride: 1, or 2
 * (rows of column phases, g->Wh). */
static inline __attribute__((always_inline)) void
direct_tile(const int kn, const int nv, const int taps, const int stride, float *y,
            const float *xpad, const float *wB, const float *b, int64_t k0, int64_t p,
            int64_t q0, const direct_geom *g)
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
            const float *xr = xpad + (c * g->Hp + p * stride + r) * g->Wp + q0;
            const float *wr = wB + k0 * CRS + (c * g->R + r) * g->S * DIRECT_KB;
            const int64_t S = taps ? taps : g->S;
#pragma GCC unroll 8
            for (int64_t t = 0; t < S; t++) {
                /* stride 2: input column 2 q + t is q + t / 2 of phase t % 2 */
                const float *xt = stride == 2 ? xr + (t & 1) * g->Wh + (t >> 1) : xr + t;
                dvec xv[DIRECT_NVMAX];
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    xv[v] = *(const dvec *)(xt + v * DIRECT_VL);
#pragma GCC unroll 16
                for (int k = 0; k < kn; k++) {
                    float wk = wr[t * DIRECT_KB + k];
#pragma GCC unroll 4
                    for (int v = 0; v < nv; v++)
                        acc[k][v] += wk * xv[v];
                }
            }
        }
    if (g->clamp)
#pragma GCC unroll 16
        for (int k = 0; k < kn; k++)
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                acc[k][v] = clamp_vec(acc[k][v], g->lo, g->hi);
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
    if (g->Wh && g->S == 3)                                                         \
        direct_tile(kn, nv, 3, 2, y, xpad, wB, b, k0, p, q0, g);                    \
    else if (g->Wh && g->S == 7)                                                    \
        direct_tile(kn, nv, 7, 2, y, xpad, wB, b, k0, p, q0, g);                    \
    else if (g->Wh)                                                                 \
        direct_tile(kn, nv, 0, 2, y, xpad, wB, b, k0, p, q0, g);                    \
    else if (g->S == 3)                                                             \
        direct_tile(kn, nv, 3, 1, y, xpad, wB, b, k0, p, q0, g);                    \
    else if (g->S == 5)                                                             \
        direct_tile(kn, nv, 5, 1, y, xpad, wB, b, k0, p, q0, g);                    \
    else                                                                            \
        direct_tile(kn, nv, 0, 1, y, xpad, wB, b, k0, p, q0, g);

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

/* Channels k0..k0+kn (kn <= DIRECT_KB) of one image, output rows p0 .. p1 - 1,
 * every column: each row in the fewest tiles of at most DIRECT_NVMAX vectors, evened out
 * (a row of 4 vectors is 2 + 2, not 3 + 1: a one-vector tile keeps too few
 * accumulators to cover the multiply-add latency; 3x32x32 -> 32 at batch
 * 256: 48 -> 57 GFLOP/s on Zen 3). */
static inline void direct_block(float *y, const float *xpad, const float *wB, const float *b,
                                int64_t k0, int64_t kn, int64_t p0, int64_t p1,
                                const direct_geom *g)
{
    int64_t vecs = (g->Q + DIRECT_VL - 1) / DIRECT_VL;
    int64_t tiles = (vecs + DIRECT_NVMAX - 1) / DIRECT_NVMAX;
    int64_t even = (vecs + tiles - 1) / tiles;
    for (int64_t p = p0; p < p1; p++)
        for (int64_t q0 = 0; q0 < g->Q; q0 += even * DIRECT_VL) {
            int64_t rest = (g->Q - q0 + DIRECT_VL - 1) / DIRECT_VL;
            int nv = rest < even ? (int)rest : (int)even;
            switch (kn) {
#if DIRECT_KB >= 8
            DIRECT_NV_CASES(8) DIRECT_NV_CASES(7) DIRECT_NV_CASES(6) DIRECT_NV_CASES(5)
#endif
            DIRECT_NV_CASES(4) DIRECT_NV_CASES(3) DIRECT_NV_CASES(2) DIRECT_NV_CASES(1)
            default: break;
            }
        }
}

/* ---- channel-vector direct convolution ---- */

/* Accumulators of a tile (the including file may set more); a tile holds
 * up to KVEC_MP output positions of one row for 2 channel vectors. */
#ifndef KVEC_ACC
#define KVEC_ACC DIRECT_ACC
#endif
#define KVEC_MP (KVEC_ACC / 2)

/* (Predictive commoning would carry the input of position i + 1, tap t
 * into tap t + 1 of position i, spilling the accumulators: off.) */
#define KVEC_OPT __attribute__((optimize("no-predictive-commoning")))

/* KVEC_TRANSPOSE(m): the VL x VL floats of m[0 .. VL) transposed in place;
 * KVEC_STORE_RUN(dst, vec, lo, hi): lanes lo .. hi of vec to dst[0 .. hi -
 * lo). An including file may define them with shuffles and masked stores,
 * else plain loops. */
#ifndef KVEC_TRANSPOSE
#define KVEC_TRANSPOSE(m) transpose_lanes(m)
static inline void transpose_lanes(dvec m[DIRECT_VL])
{
    float t[DIRECT_VL][DIRECT_VL];
    memcpy(t, m, sizeof t);
    for (int i = 0; i < DIRECT_VL; i++)
        for (int j = 0; j < DIRECT_VL; j++)
            m[i][j] = t[j][i];
}
#endif
#ifndef KVEC_STORE_RUN
#define KVEC_STORE_RUN(dst, vec, lo, hi) store_run(dst, vec, lo, hi)
static inline void store_run(float *dst, dvec vec, int lo, int hi)
{
    for (int l = lo; l < hi; l++)
        dst[l - lo] = vec[l];
}
#endif

/* Tile positions lo .. hi stored at offset `at` of an output plane onward. */
typedef struct {
    int lo, hi;
    int64_t at;
} kvec_run;

/* The runs of a tile's np positions from q0 (of row p; wide: of the grid of
 * padded-width rows) that are outputs, one per output row they cross; their
 * number. */
static inline int kvec_runs(kvec_run *runs, int wide, int64_t p, int64_t q0, int np,
                            const kvec_geom *g)
{
    int n = 0;
    for (int i = 0; i < np;) {
        int64_t j = q0 + i, row = wide ? j / g->Wp : p, col = wide ? j % g->Wp : j;
        int64_t len = wide ? g->Wp - col : np - i, keep = g->Q - col;
        len = len < np - i ? len : np - i;
        keep = keep < 0 ? 0 : keep < len ? keep : len;
        if (keep > 0)
            runs[n++] = (kvec_run){i, i + (int)keep, row * g->Q + col};
        i += (int)len;
    }
    return n;
}

/* The output lines a 1x1 tile stores at its end, prefetched into L2 at its
 * start: its rows of K channels (a plane apart) miss the cache otherwise,
 * and the masked stores wait on them, a larger share of a 1x1 tile (C
 * multiply-adds per output) than of a 3x3 one. AVX-512, 1 thread, kvec
 * forced, in one process: pw_14's forward 8.45 -> 8.11 ms. 3x3 tiles are
 * left out: 0.996-1.02x with AVX-512, 0.95-0.96x with AVX2 (where an A/A
 * run of one build against its copy spread 0.97-1.00). */
static inline __attribute__((always_inline)) void
kvec_prefetch_rows(float *y, int64_t k0, int kv, int nr, int np, int64_t p, int64_t q0,
                   const kvec_geom *g)
{
    const int64_t PQ = g->P * g->Q;
    int64_t lanes = g->K - k0 < kv * DIRECT_VL ? g->K - k0 : kv * DIRECT_VL;
    for (int o = 0; o < nr; o++)
        for (int64_t l = 0; l < lanes; l++) {
            const float *row = y + (k0 + l) * PQ + (p + o) * g->Q + q0;
            __builtin_prefetch(row, 1, 2);
            __builtin_prefetch(row + np - 1, 1, 2);
        }
}

/* y (channels k0 .. k0 + kv VL, rows p .. p + nr, columns q0 .. q0 + np) of
 * one image (kv nr <= 2). sw: the column stride when known at compile time
 * (1 or 2), else 0: then the input of position i is xr[i g->sw + t]
 * through a runtime multiply. wide (stride 1, p = 0, nr = 1): the positions
 * are q0 .. q0 + np of the grid whose rows are as wide as the padded
 * image's (Wp), so a tile runs on across rows; its columns Q .. Wp - 1 are
 * computed and not stored. */
static inline __attribute__((always_inline)) KVEC_OPT void
kvec_tile(const int kv, const int nr, const int np, const int sw, const int wide, float *y,
          const float *xpad, const float *wB, const float *b, int64_t k0, int64_t p,
          int64_t q0, const kvec_geom *g)
{
    const int64_t PQ = g->P * g->Q, HW = g->Hp * g->Wp, SW = sw ? sw : g->sw;
    const int64_t down = g->sh * g->Wp;     /* from row p to row p + 1 of the input */
    dvec acc[2][KVEC_MP][2];
#pragma GCC unroll 2
    for (int o = 0; o < nr; o++)
#pragma GCC unroll 32
        for (int i = 0; i < np; i++)
#pragma GCC unroll 2
            for (int v = 0; v < kv; v++)
                acc[o][i][v] = (dvec){0};
    const float *wrow = wB + k0 * g->C * g->R * g->S;     /* block k0 / (kv VL) */
    if (!wide && g->R * g->S == 1)
        kvec_prefetch_rows(y, k0, kv, nr, np, p, q0, g);
    for (int64_t c = 0; c < g->C; c++)
        for (int64_t r = 0; r < g->R; r++) {
            const float *xr = xpad + c * HW + (p * g->sh + r) * g->Wp + q0 * SW;
            for (int64_t t = 0; t < g->S; t++, wrow += kv * DIRECT_VL) {
                dvec wv[2];
#pragma GCC unroll 2
                for (int v = 0; v < kv; v++)
                    wv[v] = *(const dvec *)(wrow + v * DIRECT_VL);
#pragma GCC unroll 2
                for (int o = 0; o < nr; o++)
#pragma GCC unroll 32
                    for (int i = 0; i < np; i++) {
                        float xi = xr[o * down + i * SW + t];
#pragma GCC unroll 2
                        for (int v = 0; v < kv; v++)
                            acc[o][i][v] += xi * wv[v];
                    }
            }
        }
    dvec bias[2];
#pragma GCC unroll 2
    for (int v = 0; v < kv; v++)
        bias[v] = b ? *(const dvec *)(b + k0 + v * DIRECT_VL) : (dvec){0};
    /* positions c0 .. c0 + VL at a time, transposed to channel rows */
#pragma GCC unroll 2
    for (int o = 0; o < nr; o++)
#pragma GCC unroll 4
        for (int c0 = 0; c0 < np; c0 += DIRECT_VL) {
            int cnt = np - c0 < DIRECT_VL ? np - c0 : DIRECT_VL;
            kvec_run runs[DIRECT_VL];
            int nrun = kvec_runs(runs, wide, p + o, q0 + c0, cnt, g);
#pragma GCC unroll 2
            for (int v = 0; v < kv; v++) {
                /* aligned as the ISA's vector type: KVEC_TRANSPOSE may access it as one */
                dvec m[DIRECT_VL] __attribute__((aligned(DIRECT_VBYTES)));
#pragma GCC unroll 16
                for (int i = 0; i < DIRECT_VL; i++) {
                    m[i] = (dvec){0};
                    if (i < cnt)
                        m[i] = acc[o][c0 + i][v] + bias[v];
                    if (g->clamp)
                        m[i] = clamp_vec(m[i], g->lo, g->hi);
                }
                KVEC_TRANSPOSE(m);
                int64_t lanes = g->K - k0 - v * DIRECT_VL;  /* past K: zero weights */
                for (int l = 0; l < DIRECT_VL && l < lanes; l++) {
                    float *yk = y + (k0 + v * DIRECT_VL + l) * PQ;
                    for (int j = 0; j < nrun; j++)
                        KVEC_STORE_RUN(yk + runs[j].at, m[l], runs[j].lo, runs[j].hi);
                }
            }
        }
}

#define KVEC_SW(kv, nr, np)                                                         \
    {                                                                               \
        if (g->sw == 1)                                                             \
            kvec_tile(kv, nr, np, 1, 0, y, xpad, wB, b, k0, p, q0, g);              \
        else if (g->sw == 2)                                                        \
            kvec_tile(kv, nr, np, 2, 0, y, xpad, wB, b, k0, p, q0, g);              \
        else                                                                        \
            kvec_tile(kv, nr, np, 0, 0, y, xpad, wB, b, k0, p, q0, g);              \
    }

#define KVEC_WIDE_CASE(np)                                                          \
    case np:                                                                        \
        kvec_tile(2, 1, np, 1, 1, y, xpad, wB, b, k0, 0, j0, g);                    \
        break;

/* Stride 1, two channel vectors, and a map so narrow that the grid of
 * padded-width rows fills the tiles better (at least 10% more used
 * accumulators) than tiles cut from each row. */
static inline int kvec_wide(const kvec_geom *g, int kv)
{
    int64_t tiles = (g->Q + KVEC_MP - 1) / KVEC_MP;
    return kv == 2 && g->sh == 1 && g->sw == 1 && tiles * KVEC_MP * 10 > 11 * g->Wp;
}

/* Output rows p0 .. p1 - 1 of one image for channels k0 .. k0 + 2 VL on the
 * grid of padded-width rows, in tiles of KVEC_MP positions. */
static inline KVEC_OPT void kvec_block_wide(float *y, const float *xpad, const float *wB,
                                            const float *b, int64_t k0, int64_t p0, int64_t p1,
                                            const kvec_geom *g)
{
    int64_t end = (p1 - 1) * g->Wp + g->Q;
    for (int64_t j0 = p0 * g->Wp; j0 < end; j0 += KVEC_MP) {
        int np = (int)(end - j0 < KVEC_MP ? end - j0 : KVEC_MP);
        switch (np) {
#if KVEC_MP >= 14
        KVEC_WIDE_CASE(14) KVEC_WIDE_CASE(13) KVEC_WIDE_CASE(12) KVEC_WIDE_CASE(11)
        KVEC_WIDE_CASE(10) KVEC_WIDE_CASE(9) KVEC_WIDE_CASE(8) KVEC_WIDE_CASE(7)
#endif
        KVEC_WIDE_CASE(6) KVEC_WIDE_CASE(5) KVEC_WIDE_CASE(4) KVEC_WIDE_CASE(3)
        KVEC_WIDE_CASE(2) KVEC_WIDE_CASE(1)
        default: break;
        }
    }
}

#define KVEC_NP_CASE(np)                                                            \
    case np:                                                                        \
        if (kv == 2)                                                                \
            KVEC_SW(2, 1, np)                                                       \
        else if (nr == 2)                                                           \
            KVEC_SW(1, 2, np)                                                       \
        else                                                                        \
            KVEC_SW(1, 1, np)                                                       \
        break;

/* Output rows p0 .. p1 - 1 of one image for channels k0 .. k0 + kv VL (kv 1
 * or 2): each row in the fewest tiles of at most KVEC_MP positions, evened
 * out; with one channel vector, two rows per tile; narrow maps on the grid
 * of padded-width rows (kvec_wide). */
static inline KVEC_OPT void kvec_block(float *y, const float *xpad, const float *wB,
                                       const float *b, int64_t k0, int kv, int64_t p0,
                                       int64_t p1, const kvec_geom *g)
{
    if (kvec_wide(g, kv)) {
        kvec_block_wide(y, xpad, wB, b, k0, p0, p1, g);
        return;
    }
    int64_t tiles = (g->Q + KVEC_MP - 1) / KVEC_MP;
    int64_t width = (g->Q + tiles - 1) / tiles;
    for (int64_t p = p0; p < p1;) {
        int nr = kv == 1 && p + 1 < p1 ? 2 : 1;
        for (int64_t q0 = 0; q0 < g->Q; q0 += width) {
            int np = (int)(g->Q - q0 < width ? g->Q - q0 : width);
            switch (np) {
#if KVEC_MP >= 14
            KVEC_NP_CASE(14) KVEC_NP_CASE(13) KVEC_NP_CASE(12) KVEC_NP_CASE(11)
            KVEC_NP_CASE(10) KVEC_NP_CASE(9) KVEC_NP_CASE(8) KVEC_NP_CASE(7)
#endif
            KVEC_NP_CASE(6) KVEC_NP_CASE(5) KVEC_NP_CASE(4) KVEC_NP_CASE(3)
            KVEC_NP_CASE(2) KVEC_NP_CASE(1)
            default: break;
            }
        }
        p += nr;
    }
}

/* ---- channel-vector weight gradient ---- */

/* dwT rows of taps (c, r0 .. r0 + nr, 0 .. S), channels k0 .. k0 + kv VL,
 * += this image's sum over positions. */
static inline __attribute__((always_inline)) KVEC_OPT void
wgrad_tile(const int kv, const int nr, const int S, float *dwT, const float *xpad,
           const float *dyT, int64_t c, int64_t r0, int64_t k0, const kvec_geom *g)
{
    const int64_t HW = g->Hp * g->Wp, K = g->K;
    float *d = dwT + ((c * g->R + r0) * S) * K + k0;
    dvec acc[KVEC_MP][2];
#pragma GCC unroll 16
    for (int i = 0; i < nr * S; i++)
#pragma GCC unroll 2
        for (int v = 0; v < kv; v++)
            acc[i][v] = *(const dvec *)(d + i * K + v * DIRECT_VL);
    const float *dq = dyT + k0;
    for (int64_t p = 0; p < g->P; p++) {
        /* a pointer per kernel row: indexed as xr[o Wp + t] from one, the
         * row offsets were spilled and reloaded each position (AVX-512,
         * res_s2's weight gradient 40.2 -> 37.0 ms, bench/CONV2D.md) */
        const float *xo[4];
#pragma GCC unroll 4
        for (int o = 0; o < nr; o++)
            xo[o] = xpad + c * HW + (p * g->sh + r0 + o) * g->Wp;
        for (int64_t q = 0; q < g->Q; q++, dq += K) {
            dvec wv[2];
#pragma GCC unroll 2
            for (int v = 0; v < kv; v++)
                wv[v] = *(const dvec *)(dq + v * DIRECT_VL);
#pragma GCC unroll 4
            for (int o = 0; o < nr; o++)
#pragma GCC unroll 8
                for (int t = 0; t < S; t++) {
                    float xi = xo[o][q * g->sw + t];
#pragma GCC unroll 2
                    for (int v = 0; v < kv; v++)
                        acc[o * S + t][v] += xi * wv[v];
                }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < nr * S; i++)
#pragma GCC unroll 2
        for (int v = 0; v < kv; v++)
            *(dvec *)(d + i * K + v * DIRECT_VL) = acc[i][v];
}

/* Kernel rows per tile for S taps a row. */
#define WGRAD_ROWS(S) (KVEC_MP / (S) < 4 ? KVEC_MP / (S) : 4)

#define WGRAD_NR(kv, S)                                                             \
    {                                                                               \
        int nr = (int)(g->R - r0 < WGRAD_ROWS(S) ? g->R - r0 : WGRAD_ROWS(S));      \
        if (nr == 4 && WGRAD_ROWS(S) >= 4)                                          \
            wgrad_tile(kv, WGRAD_ROWS(S) >= 4 ? 4 : 1, S, dwT, xpad, dyT, c, r0, k0, g); \
        else if (nr == 3 && WGRAD_ROWS(S) >= 3)                                     \
            wgrad_tile(kv, WGRAD_ROWS(S) >= 3 ? 3 : 1, S, dwT, xpad, dyT, c, r0, k0, g); \
        else if (nr == 2 && WGRAD_ROWS(S) >= 2)                                     \
            wgrad_tile(kv, WGRAD_ROWS(S) >= 2 ? 2 : 1, S, dwT, xpad, dyT, c, r0, k0, g); \
        else                                                                        \
            wgrad_tile(kv, 1, S, dwT, xpad, dyT, c, r0, k0, g);                     \
        r0 += nr;                                                                   \
    }

/* The widest kernel rows wgrad_image takes: a tile holds a row's S taps. */
#define WGRAD_MAX_S (KVEC_MP < 7 ? KVEC_MP : 7)

#define WGRAD_S_CASE(S)         \
    case S:                     \
        if (kv == 2)            \
            WGRAD_NR(2, S)      \
        else                    \
            WGRAD_NR(1, S)      \
        break;

/* conv2d_wgrad_image_* (above), for 1 <= S <= WGRAD_MAX_S. */
static inline KVEC_OPT void wgrad_image(float *dwT, const float *xpad, const float *dyT,
                                        const kvec_geom *g)
{
    int64_t vecs = g->K / DIRECT_VL;
    int kv = vecs % 2 == 0 ? 2 : 1;
    for (int64_t c = 0; c < g->C; c++)
        for (int64_t k0 = 0; k0 < g->K; k0 += kv * DIRECT_VL)
            for (int64_t r0 = 0; r0 < g->R;)
                switch (g->S) {
                WGRAD_S_CASE(1) WGRAD_S_CASE(2) WGRAD_S_CASE(3) WGRAD_S_CASE(4)
                WGRAD_S_CASE(5) WGRAD_S_CASE(6)
#if KVEC_MP >= 7
                WGRAD_S_CASE(7)
#endif
                default: return;        /* not taken: conv2d.c checks S */
                }
}

/* ---- position-vector weight gradient (first layers: few channels) ---- */

/* KEEP_IN_REGISTER(v): v is loaded into a register once. Without it gcc
 * folds a dy vector's load into each of the ns FMAs that read it
 * (AVX-512: 6 channels x 3 taps, 18 loads where 6 do), and the tile below
 * ran 1.6x slower on CIFAR-net's first layer (bench/CONV2D.md). */
#if defined(__x86_64__) || defined(__i386__)
#define KEEP_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define KEEP_IN_REGISTER(v) ((void)0)
#endif

/* Channels of a wgrad_row tile of ns taps: kn ns accumulators, kn vectors
 * of dy and one of x in registers. */
#define WGRAD_ROW_KN(ns) (DIRECT_ACC / ((ns) + 1) < DIRECT_KB ? DIRECT_ACC / ((ns) + 1) : DIRECT_KB)

/* vsums[t K + k] (t < ns, k < kn; vectors) += one image's weight gradient
 * of tap (c, r, t0 + t) for output channel k0 + k, by lanes (a horizontal
 * sum per call took a fifth of LeNet-5's first layer), stride 1: dy (K, P,
 * Q) times the zero-padded image xpad (C, Hp, Wp) shifted by the tap, summed over the
 * positions in vectors along the rows. A vector of dy serves the row's ns
 * taps, one of x the kn channels. A row's last partial vector loads both
 * factors' lanes past Q as zeros (0 times a NaN would be NaN, and dy may
 * end there). */
static inline __attribute__((always_inline)) void
wgrad_row_tile(const int kn, const int ns, float *vsums, int64_t K, const float *xpad,
               const float *dy, int64_t c, int64_t r, int64_t t0, int64_t k0,
               const direct_geom *g)
{
    const int64_t PQ = g->P * g->Q, full = g->Q / DIRECT_VL * DIRECT_VL;
    dvec acc[DIRECT_KB][WGRAD_ROW_NS_MAX], d[DIRECT_KB];
#pragma GCC unroll 8
    for (int k = 0; k < kn; k++)
#pragma GCC unroll 7
        for (int t = 0; t < ns; t++)
            acc[k][t] = (dvec){0};
    for (int64_t p = 0; p < g->P; p++) {
        const float *xr = xpad + (c * g->Hp + p + r) * g->Wp + t0;
        const float *dr = dy + k0 * PQ + p * g->Q;
        for (int64_t q = 0; q < full; q += DIRECT_VL) {
#pragma GCC unroll 8
            for (int k = 0; k < kn; k++) {
                d[k] = *(const dvec *)(dr + k * PQ + q);
                KEEP_IN_REGISTER(d[k]);
            }
#pragma GCC unroll 7
            for (int t = 0; t < ns; t++) {
                dvec xv = *(const dvec *)(xr + q + t);
#pragma GCC unroll 8
                for (int k = 0; k < kn; k++)
                    acc[k][t] += d[k] * xv;
            }
        }
        if (full < g->Q) {
#pragma GCC unroll 8
            for (int k = 0; k < kn; k++)
                d[k] = DIRECT_LOAD_PART(dr + k * PQ + full, g->Q - full);
#pragma GCC unroll 7
            for (int t = 0; t < ns; t++) {
                dvec xv = DIRECT_LOAD_PART(xr + full + t, g->Q - full);
#pragma GCC unroll 8
                for (int k = 0; k < kn; k++)
                    acc[k][t] += d[k] * xv;
            }
        }
    }
#pragma GCC unroll 8
    for (int k = 0; k < kn; k++)
#pragma GCC unroll 7
        for (int t = 0; t < ns; t++)
            *(dvec *)(vsums + (t * K + k) * DIRECT_VL) += acc[k][t];
}

/* wgrad_row_tile for kn <= WGRAD_ROW_KN(ns) channels, in a switch on kn. */
#define WGRAD_ROW_KN_CASE(ns, kn)                                                   \
    case kn:                                                                        \
        if ((kn) <= WGRAD_ROW_KN(ns))                                               \
            wgrad_row_tile((kn) <= WGRAD_ROW_KN(ns) ? (kn) : 1, ns, vsums, K, xpad, dy, c, r, \
                           t0, k0, g);                                              \
        break;

#define WGRAD_ROW_NS_CASE(ns)                                                       \
    case ns:                                                                        \
        for (int64_t j = 0; j < kn; j += WGRAD_ROW_KN(ns),                          \
                     vsums += WGRAD_ROW_KN(ns) * DIRECT_VL, k0 += WGRAD_ROW_KN(ns))  \
            switch (kn - j < WGRAD_ROW_KN(ns) ? kn - j : WGRAD_ROW_KN(ns)) {        \
            WGRAD_ROW_KN_CASE(ns, 8) WGRAD_ROW_KN_CASE(ns, 7) WGRAD_ROW_KN_CASE(ns, 6) \
            WGRAD_ROW_KN_CASE(ns, 5) WGRAD_ROW_KN_CASE(ns, 4) WGRAD_ROW_KN_CASE(ns, 3) \
            WGRAD_ROW_KN_CASE(ns, 2) WGRAD_ROW_KN_CASE(ns, 1)                       \
            default: break;                                                         \
            }                                                                       \
        break;

/* conv2d_wgrad_row_* (above): taps t0 .. t0 + ns of kernel row r (1 <= ns
 * <= WGRAD_ROW_NS_MAX), channels k0 .. k0 + kn (kn <= DIRECT_KB), in tiles of
 * WGRAD_ROW_KN(ns) channels. */
static inline void wgrad_row(float *vsums, int64_t K, const float *xpad, const float *dy,
                             int64_t c, int64_t r, int64_t t0, int ns, int64_t k0, int64_t kn,
                             const direct_geom *g)
{
    switch (ns) {
    WGRAD_ROW_NS_CASE(1) WGRAD_ROW_NS_CASE(2) WGRAD_ROW_NS_CASE(3) WGRAD_ROW_NS_CASE(4)
    WGRAD_ROW_NS_CASE(5) WGRAD_ROW_NS_CASE(6) WGRAD_ROW_NS_CASE(7)
    default: break;     /* not taken: the caller splits rows into at most WGRAD_ROW_NS_MAX */
    }
}

#ifdef DIRECT_LOAD_RANGE
/* For planes of at most VL floats in (H W) and out (P Q): idx[j] = where
 * output j of the tap at offset (r, t) reads the input plane, and bit j of
 * the returned mask set where that is inside it (clear: padding, 0). */
static inline uint32_t small_tap_index(int32_t idx[DIRECT_VL], int64_t r, int64_t t,
                                       const conv2d_shape *s)
{
    uint32_t keep = 0;
    for (int64_t j = 0; j < DIRECT_VL; j++) {
        int64_t h = j / s->Q * s->sh - s->ph + r, w = j % s->Q * s->sw - s->pw + t;
        int inside = j < s->P * s->Q && h >= 0 && h < s->H && w >= 0 && w < s->W;
        idx[j] = inside ? (int32_t)(h * s->W + w) : 0;
        keep |= (uint32_t)inside << j;
    }
    return keep;
}

/* For planes of at most VL floats in (H W) and out (P Q): inv[k] = the
 * output that the tap at offset (r, t) reads input k from (one at most: a
 * tap reads each input once), and bit k of the returned mask set where there
 * is one. */
static inline uint32_t small_col2im_index(int32_t inv[DIRECT_VL], int64_t r, int64_t t,
                                          const conv2d_shape *s)
{
    int32_t idx[DIRECT_VL];
    uint32_t keep = small_tap_index(idx, r, t, s), back = 0;
    for (int64_t k = 0; k < DIRECT_VL; k++) inv[k] = 0;
    for (int64_t j = 0; j < DIRECT_VL; j++)
        if (keep >> j & 1) {
            inv[idx[j]] = (int32_t)j;
            back |= 1u << idx[j];
        }
    return back;
}

/* conv2d_im2col_tap_* (above). DIRECT_LOAD_RANGE(src, lo, hi): a vector
 * whose lanes j in [lo, hi) come from src[j] (no other lane is read), the
 * rest zero; defined by the including file (masked loads). */
static inline void im2col_tap(float *restrict out, const float *restrict xc, int64_t cnt,
                              int64_t ostride, int64_t xstride, int64_t r, int64_t t,
                              const conv2d_shape *s)
{
    span ps = valid_span(r - s->ph, s->sh, s->H, s->P);
    span qs = valid_span(t - s->pw, 1, s->W, s->Q);
    if (qs.lo == qs.hi)
        ps.hi = ps.lo;      /* no tap column inside the input: the whole plane is zero */
    const int64_t Q = s->Q, PQ = s->P * s->Q;
    const dvec zero = {0};
    for (int64_t i = 0; i < cnt; i++) {
        float *restrict o = out + i * ostride;
        int64_t j = 0;
        for (; j + DIRECT_VL <= ps.lo * Q; j += DIRECT_VL) *(dvec *)(o + j) = zero;
        for (; j < ps.lo * Q; j++) o[j] = 0.0f;
        for (int64_t p = ps.lo; p < ps.hi; p++) {
            /* xr[q] is input (p sh - ph + r, q - pw + t), inside for q in [qs.lo, qs.hi) */
            const float *xr = xc + i * xstride + (p * s->sh - s->ph + r) * s->W + t - s->pw;
            float *op = o + p * Q;
            int64_t q0 = 0;
            for (; q0 + DIRECT_VL <= Q; q0 += DIRECT_VL)
                *(dvec *)(op + q0) = DIRECT_LOAD_RANGE(xr + q0, qs.lo - q0, qs.hi - q0);
            if (q0 < Q)
                DIRECT_STORE_PART(op + q0, DIRECT_LOAD_RANGE(xr + q0, qs.lo - q0, qs.hi - q0),
                                  (int)(Q - q0));
        }
        j = ps.hi * Q;
        for (; j < PQ && (j & (DIRECT_VL - 1)); j++) o[j] = 0.0f;
        for (; j + DIRECT_VL <= PQ; j += DIRECT_VL) *(dvec *)(o + j) = zero;
        for (; j < PQ; j++) o[j] = 0.0f;
    }
}

/* col2im of kernel tap (r, t) at column stride 1 (see
 * conv2d_col2im_tap_generic): each output row's run of columns that land
 * inside the input is added to its input row a vector at a time. */
static inline void col2im_tap(float *restrict dxc, const float *restrict in, int64_t cnt,
                              int64_t xstride, int64_t istride, int64_t r, int64_t t,
                              const conv2d_shape *s)
{
    span ps = valid_span(r - s->ph, s->sh, s->H, s->P);
    span qs = valid_span(t - s->pw, 1, s->W, s->Q);
    const int64_t n = qs.hi - qs.lo;
    for (int64_t i = 0; i < cnt && n > 0; i++)
        for (int64_t p = ps.lo; p < ps.hi; p++) {
            const float *restrict ip = in + i * istride + p * s->Q + qs.lo;
            float *restrict dr = dxc + i * xstride + (p * s->sh - s->ph + r) * s->W + t - s->pw
                               + qs.lo;
            int64_t k = 0;
            for (; k + DIRECT_VL <= n; k += DIRECT_VL) *(dvec *)(dr + k) += *(const dvec *)(ip + k);
            for (; k < n; k++) dr[k] += ip[k];
        }
}
#endif /* DIRECT_LOAD_RANGE */

#endif /* DIRECT_VBYTES */
#endif /* FASTCNN_CONV2D_KERNEL_H */
