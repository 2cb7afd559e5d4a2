/* conv2d_depthwise_kernel.h - the depthwise convolution's inner loops
 * (groups == C, K = m C), compiled once per instruction set and private to
 * the conv2d family. Without DEPTHWISE_VBYTES defined it only declares them
 * (conv2d_internal.h); conv2d_depthwise.c (16-byte vectors) and
 * conv2d_depthwise_avx2.c / _avx512.c (32 and 64 bytes) define it first and
 * so compile the same loops for their instruction set (GCC vector
 * extensions).
 *
 * Layout, why: every loop runs along an output row, one vector of output
 * columns at a time. A strided row is not contiguous in the input, so the
 * zero-padded input plane of one channel is first split into sw column
 * phases: phase f holds the padded columns f, f + sw, f + 2 sw, ..., and
 * kernel tap t of output column q then reads column q + (t dw) / sw of phase
 * (t dw) mod sw: a contiguous run for any stride and dilation. (The forward
 * of 3x3 filters at stride 1 or 2 along rows skips it: see below.)
 *   xph (sw, Hp, Wq): phase f, row h, column j = padded input (h, j sw + f);
 *   Hp = (P-1) sh + (R-1) dh + 1 padded rows read; Wq floats per phase row,
 *   a multiple of 16 with room for a whole vector past every row's last
 *   output (loads and the backward's stores may run up to 15 floats over).
 */
#ifndef FASTCNN_CONV2D_DEPTHWISE_KERNEL_H
#define FASTCNN_CONV2D_DEPTHWISE_KERNEL_H

#include <stdint.h>
#include <string.h>

/* m output channels per input channel; col_off[t] (S) = where tap t's run
 * starts in xph: ((t dw) mod sw) Hp Wq + (t dw) / sw. The phase split reads
 * rows x cols of an input plane of row length W, padded by ph rows and pw
 * columns; phase f's valid columns are [phase_lo[f], phase_hi[f]) (sw). */
typedef struct {
    int64_t m, R, S, sh, dh, P, Q, Hp, Wq;
    const int64_t *col_off;
    int64_t H, W, rows, cols, ph, pw, sw;
    int64_t Wp, dil_w;          /* padded columns read; the dilation along them */
    const int64_t *phase_lo, *phase_hi;
    int64_t clamp;              /* forward: outputs clamped to [lo, hi] (a fused hardtanh) */
    float lo, hi;
} depthwise_geom;

/* One input channel of one image:
 *   phases:        xph (sw, Hp, Wq) = the phases of plane x (H, W); positions
 *                  outside x keep the zeros they hold;
 *   forward:       y (m, P, Q) = w (m, R, S) * xph + b (m) (b may be NULL),
 *                  clamped to [lo, hi] when clamp (NaN passes);
 *   backward data: dxph (sw, Hp, Wq) += the taps of dy (m, P, Q) scattered
 *                  back through w; row (Q rounded up to 16) is scratch;
 *   weight grad:   dw (m, R, S) += dy (m, P, Q) * xph, summed in double;
 *                  row as above, acc (R S 16 floats) scratch. */
typedef void (*depthwise_phases_fn)(float *, const float *, const depthwise_geom *);
typedef void (*depthwise_forward_fn)(float *, const float *, const float *, const float *,
                                     const depthwise_geom *);
/*   forward_3x3:   forward's y from the plane x (H, W) itself, no phases:
 *                  3x3 filters, stride 1 or 2 along rows, no dilation along
 *                  them. */
typedef void (*depthwise_backward_data_fn)(float *, const float *, const float *, float *,
                                           const depthwise_geom *);
typedef void (*depthwise_wgrad_fn)(double *, const float *, const float *, float *, float *,
                                   const depthwise_geom *);
/* VL channels of one image (m == 1), channel vectors:
 *   vectors:       y (VL, P, Q) = wv (R S, VL) * x (VL, H, W) + b (VL; NULL: 0),
 *                  clamped as forward; xs (Hp, Wp, VL) is scratch whose
 *                  padding positions hold zeros, ys (P Q, VL) scratch. */
typedef void (*depthwise_vectors_fn)(float *, const float *, const float *, const float *,
                                     float *, float *, const depthwise_geom *);
/*   wgrad_vectors: sums (R S, VL) = each tap's sum over the positions of
 *                  dy (VL, P, Q) times x (VL, H, W) (the channels' weight
 *                  gradient from this image); xs as for vectors, ds (P Q,
 *                  VL) scratch. */
typedef void (*depthwise_wgrad_vectors_fn)(float *, const float *, const float *, float *,
                                           float *, const depthwise_geom *);
/*   backward_vectors: dx (VL, H, W) = dy (VL, P, Q) sent back through the taps
 *                  wv (R S, VL); dxs (Hp, Wp, VL) and ds (P Q, VL) scratch. */
typedef void (*depthwise_backward_vectors_fn)(float *, const float *, const float *, float *,
                                              float *, const depthwise_geom *);

#define DEPTHWISE_DECLARE(isa)                                                              \
    void conv2d_depthwise_phases_##isa(float *xph, const float *x, const depthwise_geom *g);  \
    void conv2d_depthwise_forward_##isa(float *y, const float *xph, const float *w,          \
                                        const float *b, const depthwise_geom *g);           \
    void conv2d_depthwise_forward_3x3_##isa(float *y, const float *x, const float *w,        \
                                            const float *b, const depthwise_geom *g);       \
    void conv2d_depthwise_backward_data_##isa(float *dxph, const float *dy, const float *w,  \
                                              float *row, const depthwise_geom *g);          \
    void conv2d_depthwise_wgrad_##isa(double *dw, const float *dy, const float *xph,         \
                                      float *row, float *acc, const depthwise_geom *g);      \
    void conv2d_depthwise_vectors_##isa(float *y, const float *x, const float *wv,           \
                                        const float *b, float *xs, float *ys,               \
                                        const depthwise_geom *g);                           \
    void conv2d_depthwise_wgrad_vectors_##isa(float *sums, const float *dy, const float *x,  \
                                              float *xs, float *ds, const depthwise_geom *g); \
    void conv2d_depthwise_backward_vectors_##isa(float *dx, const float *dy, const float *wv, \
                                                 float *dxs, float *ds,                      \
                                                 const depthwise_geom *g);
DEPTHWISE_DECLARE(generic)
DEPTHWISE_DECLARE(avx2)
DEPTHWISE_DECLARE(avx512)

#endif /* FASTCNN_CONV2D_DEPTHWISE_KERNEL_H */

#if defined(DEPTHWISE_VBYTES) && !defined(FASTCNN_CONV2D_DEPTHWISE_LOOPS)
#define FASTCNN_CONV2D_DEPTHWISE_LOOPS

#define DW_VL (DEPTHWISE_VBYTES / 4)
#define DW_RB 4                 /* output rows per forward block */
#define DW_QB 2                 /* vectors per row of a forward block: DW_RB DW_QB sums */
typedef float dwvec __attribute__((vector_size(DEPTHWISE_VBYTES), aligned(4), may_alias));
typedef int32_t dwint __attribute__((vector_size(DEPTHWISE_VBYTES)));

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>

#include "store_part_avx2.h"
#endif

/* dst[0 .. n) = the first n < VL lanes of v (AVX-512: a masked store;
 * AVX2: store_part8, its masked store is slow on AMD). */
static inline void dw_store_part(float *dst, dwvec v, int64_t n)
{
#if DW_VL == 16 && defined(__AVX512F__)
    _mm512_mask_storeu_ps(dst, (__mmask16)((1u << n) - 1), (__m512)v);
#elif DW_VL == 8 && defined(__AVX2__)
    store_part8(dst, (__m256)v, (int)n);
#else
    for (int64_t l = 0; l < n; l++) dst[l] = v[l];
#endif
}

/* Every lane of v as hardtanh maps it: below lo -> lo, then above hi -> hi;
 * a NaN stays NaN, as the separate pass does (max and min return their
 * second operand when one is NaN). lo, hi: the bounds in every lane. */
static inline dwvec dw_clamp(dwvec v, dwvec lo, dwvec hi)
{
#if DW_VL == 16 && defined(__AVX512F__)
    return (dwvec)_mm512_min_ps((__m512)hi, _mm512_max_ps((__m512)lo, (__m512)v));
#elif DW_VL == 8 && defined(__AVX2__)
    return (dwvec)_mm256_min_ps((__m256)hi, _mm256_max_ps((__m256)lo, (__m256)v));
#else
    dwint below = v < lo;
    v = (dwvec)(((dwint)v & ~below) | ((dwint)lo & below));
    dwint above = v > hi;
    return (dwvec)(((dwint)v & ~above) | ((dwint)hi & above));
#endif
}

/* Output rows p0 .. p0+rb-1, vectors starting at columns qs[0 .. nq), of
 * y (P, Q) = w (R, S) * xph + bias; each vector stored whole (n == VL) or
 * its first n lanes. A short row's vector is stored whole too where its
 * spill stays inside y (P, Q): the rows after it, stored later, overwrite
 * the spilled lanes (a masked store is slow on some cores). rb, nq, R and
 * S are constants at each call, so the rb nq independent sums stay in
 * registers and the taps unroll. */
static inline __attribute__((always_inline)) void
dw_forward_block(float *restrict y, const float *restrict xph, const float *restrict w,
                 float bias, int64_t p0, const int rb, const int64_t *qs, const int nq,
                 int64_t n, const int64_t R, const int64_t S, const depthwise_geom *g)
{
    const int64_t row_step = g->sh * g->Wq;
    const int clamp = g->clamp != 0;
    const dwvec lo = g->lo - (dwvec){0}, hi = g->hi - (dwvec){0};   /* x - (+0) keeps -0 */
    dwvec acc[DW_RB][DW_QB];
    for (int i = 0; i < rb; i++)
        for (int v = 0; v < nq; v++) acc[i][v] = (dwvec){0} + bias;
    for (int64_t r = 0; r < R; r++) {
        const float *xr = xph + (p0 * g->sh + r * g->dh) * g->Wq;
        for (int64_t t = 0; t < S; t++) {
            const float wv = w[r * S + t];
            const float *seg = xr + g->col_off[t];
            for (int i = 0; i < rb; i++)
                for (int v = 0; v < nq; v++)
                    acc[i][v] += wv * *(const dwvec *)(seg + i * row_step + qs[v]);
        }
    }
    for (int i = 0; i < rb; i++)
        for (int v = 0; v < nq; v++) {
            float *dst = y + (p0 + i) * g->Q + qs[v];
            if (clamp)
                acc[i][v] = dw_clamp(acc[i][v], lo, hi);
            if (n == DW_VL || (p0 + i) * g->Q + qs[v] + DW_VL <= g->P * g->Q)
                *(dwvec *)dst = acc[i][v];
            else
                dw_store_part(dst, acc[i][v], n);
        }
}

/* Output rows p0 .. p0+rb-1 of y (P, Q), whole rows. A row of Q >= VL
 * columns is covered by whole vectors, the last one ending at column Q
 * (overlapping its neighbour, which stores the same values): no partial
 * store; a shorter row is one partial vector. */
static inline __attribute__((always_inline)) void
dw_forward_rows(float *y, const float *xph, const float *w, float bias, int64_t p0,
                const int rb, const int64_t R, const int64_t S, const depthwise_geom *g)
{
    const int64_t Q = g->Q, last = Q - DW_VL, nvec = (Q + DW_VL - 1) / DW_VL;
    if (Q < DW_VL) {
        const int64_t q0 = 0;
        dw_forward_block(y, xph, w, bias, p0, rb, &q0, 1, Q, R, S, g);
        return;
    }
    int64_t k = 0;
    for (; k + DW_QB <= nvec; k += DW_QB) {
        int64_t qs[DW_QB];
        for (int v = 0; v < DW_QB; v++) qs[v] = (k + v) * DW_VL < last ? (k + v) * DW_VL : last;
        dw_forward_block(y, xph, w, bias, p0, rb, qs, DW_QB, DW_VL, R, S, g);
    }
    for (; k < nvec; k++) {
        const int64_t q0 = k * DW_VL < last ? k * DW_VL : last;
        dw_forward_block(y, xph, w, bias, p0, rb, &q0, 1, DW_VL, R, S, g);
    }
}

/* y (m, P, Q) = w (m, R, S) * xph + b: blocks of DW_RB rows, then the rest. */
static inline __attribute__((always_inline)) void
dw_forward_plane(float *y, const float *xph, const float *w, const float *b, const int64_t R,
                 const int64_t S, const depthwise_geom *g)
{
    const int64_t PQ = g->P * g->Q;
    for (int64_t j = 0; j < g->m; j++) {
        const float bias = b ? b[j] : 0.0f;
        float *yj = y + j * PQ;
        const float *wj = w + j * R * S;
        int64_t p = 0;
        for (; p + DW_RB <= g->P; p += DW_RB)
            dw_forward_rows(yj, xph, wj, bias, p, DW_RB, R, S, g);
        switch (g->P - p) {
        case 3: dw_forward_rows(yj, xph, wj, bias, p, 3, R, S, g); break;
        case 2: dw_forward_rows(yj, xph, wj, bias, p, 2, R, S, g); break;
        case 1: dw_forward_rows(yj, xph, wj, bias, p, 1, R, S, g); break;
        default: break;
        }
    }
}

/* 3x3 filters (MobileNet's, EfficientNet's) with their taps unrolled. */
static inline void dw_forward(float *y, const float *xph, const float *w, const float *b,
                              const depthwise_geom *g)
{
    if (g->R == 3 && g->S == 3)
        dw_forward_plane(y, xph, w, b, 3, 3, g);
    else
        dw_forward_plane(y, xph, w, b, g->R, g->S, g);
}

/* ---- 3x3 filters at stride 1 or 2 along rows, from the plane itself ----
 * Output column q's taps read input columns SW q - pw + (0, 1, 2). For a
 * vector of outputs from q0, a0 = SW q0 - pw:
 *   stride 1: the runs of VL floats from a0, a0 + 1 and a0 + 2;
 *   stride 2: the even lanes of the 2 VL floats from a0, their odd lanes,
 *     and the even lanes one on: loads A = [a0, a0 + VL), B = [a0 + VL,
 *     a0 + 2 VL) and C = [a0 + VL + 1, a0 + 2 VL + 1), three two-source
 *     shuffles.
 * No padded copy (stride 1) or phase split (stride 2) of the plane is
 * written and read back (at stride 2 the split took more time than the
 * taps: 44% against 33% of MobileNetV2's 96 x 112 x 112 layer, AVX-512).
 * Where a vector's loads would leave the row: the first vector at padding
 * 1 loads from column 0 and moves a zero in (DW_PAD1); at stride 1 the
 * last vector at padding 1, whose third tap would read one column past the
 * row, moves a zero in at the top (DW_END1); elsewhere masked loads. Taps on
 * padding rows add w * 0: the sums are the row loops', in their order. */

enum { DW_IN, DW_PAD1, DW_END1, DW_MASKED };    /* how a vector's loads lie */

/* the lanes [first, last) of the load from p (0 <= first, last <= VL) */
typedef struct {
    int64_t first, last;
} dw_lanes;

static inline dw_lanes dw_lanes_of(int64_t a, int64_t W)
{
    const int64_t first = -a > 0 ? -a : 0, last = W - a < DW_VL ? W - a : DW_VL;
    return (dw_lanes){first, last > first ? last : first};
}

/* p[0 .. VL) with the lanes outside l zero; only lanes inside are read (a
 * masked load where the instruction set has one) */
static inline dwvec dw_load_lanes(const float *p, dw_lanes l)
{
    if (l.first == 0 && l.last == DW_VL)
        return *(const dwvec *)p;
#if DW_VL == 16 && defined(__AVX512F__)
    return (dwvec)_mm512_maskz_loadu_ps((__mmask16)((1u << l.last) - (1u << l.first)), p);
#elif DW_VL == 8 && defined(__AVX2__)
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i in = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)l.first), lane),
                                           _mm256_cmpgt_epi32(_mm256_set1_epi32((int)l.last), lane));
    return (dwvec)_mm256_maskload_ps(p, in);
#else
    dwvec v = {0};
    for (int64_t i = l.first; i < l.last; i++) v[i] = p[i];
    return v;
#endif
}

#if DW_VL == 16
#define DW_EVEN {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}
#define DW_ODD {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}
#define DW_NEXT {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 31}
#define DW_UP {16, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}
#define DW_DOWN {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
#elif DW_VL == 8
#define DW_EVEN {0, 2, 4, 6, 8, 10, 12, 14}
#define DW_ODD {1, 3, 5, 7, 9, 11, 13, 15}
#define DW_NEXT {1, 2, 3, 4, 5, 6, 7, 15}
#define DW_UP {8, 0, 1, 2, 3, 4, 5, 6}
#define DW_DOWN {1, 2, 3, 4, 5, 6, 7, 8}
#else
#define DW_EVEN {0, 2, 4, 6}
#define DW_ODD {1, 3, 5, 7}
#define DW_NEXT {1, 2, 3, 7}
#define DW_UP {4, 0, 1, 2}
#define DW_DOWN {1, 2, 3, 4}
#endif

/* where (above) the loads of the vector whose first tap reads column a0
 * lie in a row of W columns */
static inline int dw_where(int64_t a0, const int SW, int64_t W)
{
    const int64_t end = SW == 1 ? a0 + DW_VL + 1 : a0 + 2 * DW_VL;     /* last column read */
    if (a0 >= 0 && end < W)
        return DW_IN;
    if (a0 == -1 && (SW == 1 ? end < W : end <= W))    /* stride 2 reads one column less */
        return DW_PAD1;
    if (SW == 1 && a0 >= 0 && end == W)
        return DW_END1;
    return DW_MASKED;
}

/* the lanes of the three loads of a DW_MASKED vector at a0 */
static inline void dw_plane_lanes(dw_lanes l[3], int64_t a0, const int SW, int64_t W)
{
    for (int k = 0; k < 3; k++)
        l[k] = dw_lanes_of(SW == 1 ? a0 + k : k ? a0 + DW_VL + k - 1 : a0, W);
}

/* tap[0 .. 3) = the three taps of a vector whose first tap reads column a0
 * of row xr, its loads lying as `where` says (l: their lanes, DW_MASKED) */
static inline __attribute__((always_inline)) void
dw_plane_taps(dwvec tap[3], const float *xr, int64_t a0, const int SW, const int where,
              const dw_lanes *l)
{
    const dwint even = DW_EVEN, odd = DW_ODD, next = DW_NEXT, up = DW_UP, down = DW_DOWN;
    const dwvec zero = {0};
    const float *p = xr + a0;
    if (SW == 1) {
        if (where == DW_PAD1) {
            const dwvec A = *(const dwvec *)xr;
            tap[0] = __builtin_shuffle(A, zero, up);
            tap[1] = A;
            tap[2] = *(const dwvec *)(xr + 1);
        } else if (where == DW_END1) {
            const dwvec B = *(const dwvec *)(p + 1);
            tap[0] = *(const dwvec *)p;
            tap[1] = B;
            tap[2] = __builtin_shuffle(B, zero, down);
        } else {
            for (int k = 0; k < 3; k++)
                tap[k] = where == DW_MASKED ? dw_load_lanes(p + k, l[k]) : *(const dwvec *)(p + k);
        }
        return;
    }
    dwvec A, B, C;
    if (where == DW_PAD1) {
        A = *(const dwvec *)xr;
        B = *(const dwvec *)(xr + DW_VL);
        tap[1] = __builtin_shuffle(A, B, even);
        tap[2] = __builtin_shuffle(A, B, odd);
        tap[0] = __builtin_shuffle(tap[2], zero, up);
        return;
    }
    if (where == DW_MASKED) {
        A = dw_load_lanes(p, l[0]);
        B = dw_load_lanes(p + DW_VL, l[1]);
        C = dw_load_lanes(p + DW_VL + 1, l[2]);
    } else {
        A = *(const dwvec *)p;
        B = *(const dwvec *)(p + DW_VL);
        C = *(const dwvec *)(p + DW_VL + 1);
    }
    tap[0] = __builtin_shuffle(A, B, even);
    tap[1] = __builtin_shuffle(A, B, odd);
    tap[2] = __builtin_shuffle(tap[0], C, next);
}

/* Output rows p0 .. p0+rb-1, vectors at columns qs[0 .. nq) of y (P, Q) =
 * w (3, 3) * x + bias at stride SW along rows, stored as dw_forward_block
 * stores; w0, w1: where the first and the second vector's loads lie; rows:
 * some tap row may be padding. rb, nq, w0, w1, rows and SW are constants at
 * each call. */
static inline __attribute__((always_inline)) void
dw_plane_block(float *restrict y, const float *restrict x, const float *restrict w, float bias,
               int64_t p0, const int rb, const int64_t *qs, const int nq, const int w0,
               const int w1, const int rows, const int SW, const depthwise_geom *g)
{
    dwvec acc[DW_RB][DW_QB];
    dw_lanes lanes[DW_QB][3];
    for (int v = 0; v < nq; v++) {
        if ((v ? w1 : w0) == DW_MASKED)
            dw_plane_lanes(lanes[v], SW * qs[v] - g->pw, SW, g->W);
        for (int i = 0; i < rb; i++) acc[i][v] = (dwvec){0} + bias;
    }
    for (int64_t r = 0; r < 3; r++) {
        const float w_0 = w[r * 3], w_1 = w[r * 3 + 1], w_2 = w[r * 3 + 2];
        for (int i = 0; i < rb; i++) {
            const int64_t h = (p0 + i) * g->sh + r * g->dh - g->ph;
            for (int v = 0; v < nq; v++) {
                dwvec tap[3] = {{0}, {0}, {0}};
                if (!rows || (h >= 0 && h < g->H))
                    dw_plane_taps(tap, x + h * g->W, SW * qs[v] - g->pw, SW, v ? w1 : w0,
                                  lanes[v]);
                acc[i][v] += w_0 * tap[0];
                acc[i][v] += w_1 * tap[1];
                acc[i][v] += w_2 * tap[2];
            }
        }
    }
    const dwvec lo = g->lo - (dwvec){0}, hi = g->hi - (dwvec){0};
    for (int i = 0; i < rb; i++)
        for (int v = 0; v < nq; v++) {
            const int64_t at = (p0 + i) * g->Q + qs[v];
            if (g->clamp)
                acc[i][v] = dw_clamp(acc[i][v], lo, hi);
            if (qs[v] + DW_VL <= g->Q || at + DW_VL <= g->P * g->Q)
                *(dwvec *)(y + at) = acc[i][v];
            else
                dw_store_part(y + at, acc[i][v], g->Q - qs[v]);
        }
}

/* Output rows p0 .. p0+rb-1 of y (P, Q), whole vectors placed as
 * dw_forward_rows places them, in pairs. inner: blocks of DW_RB rows whose
 * taps all read inside x, the vectors' loads as they lie; else (rb = 1,
 * the rows at the ends) every load masked, tap rows checked. */
static inline __attribute__((always_inline)) void
dw_plane_rows(float *y, const float *x, const float *w, float bias, int64_t p0,
              const int inner, const int SW, const depthwise_geom *g)
{
    const int64_t Q = g->Q, last = Q > DW_VL ? Q - DW_VL : 0, nvec = (Q + DW_VL - 1) / DW_VL;
    for (int64_t k = 0; k < nvec; k += DW_QB) {
        const int nq = nvec - k < DW_QB ? (int)(nvec - k) : DW_QB;
        int64_t qs[DW_QB];
        int at[DW_QB] = {DW_MASKED, DW_MASKED};
        for (int v = 0; v < nq; v++) {
            qs[v] = (k + v) * DW_VL < last ? (k + v) * DW_VL : last;
            at[v] = dw_where(SW * qs[v] - g->pw, SW, g->W);
        }
#define DW_BLOCK(n, a, b) dw_plane_block(y, x, w, bias, p0, DW_RB, qs, n, a, b, 0, SW, g)
        if (!inner)
            dw_plane_block(y, x, w, bias, p0, 1, qs, nq, DW_MASKED, DW_MASKED, 1, SW, g);
        else if (nq == 1)
            switch (at[0]) {
            case DW_IN: DW_BLOCK(1, DW_IN, DW_IN); break;
            case DW_PAD1: DW_BLOCK(1, DW_PAD1, DW_IN); break;
            case DW_END1: DW_BLOCK(1, DW_END1, DW_IN); break;
            default: DW_BLOCK(1, DW_MASKED, DW_IN); break;
            }
        else if (at[0] == DW_IN && at[1] == DW_IN)
            DW_BLOCK(DW_QB, DW_IN, DW_IN);
        else if (at[0] == DW_PAD1 && at[1] == DW_IN)
            DW_BLOCK(DW_QB, DW_PAD1, DW_IN);
        else if (at[0] == DW_IN && at[1] == DW_END1)
            DW_BLOCK(DW_QB, DW_IN, DW_END1);
        else if (at[0] == DW_PAD1 && at[1] == DW_END1)
            DW_BLOCK(DW_QB, DW_PAD1, DW_END1);
        else
            DW_BLOCK(DW_QB, DW_MASKED, DW_MASKED);
#undef DW_BLOCK
    }
}

/* y (P, Q) = w (3, 3) * x (H, W) + bias at stride SW along rows: the rows
 * whose taps all read inside x in blocks of DW_RB (the last block moved up
 * over rows already done, which it stores again with the same values,
 * where fewer rows are left), the others one at a time. */
static inline __attribute__((always_inline)) void
dw_plane_3x3(float *y, const float *x, const float *w, float bias, const int SW,
             const depthwise_geom *g)
{
#define DW_INSIDE(q) ((q) * g->sh - g->ph >= 0 && (q) * g->sh + 2 * g->dh - g->ph < g->H)
    int64_t p = 0;
    for (; p < g->P && !DW_INSIDE(p); p++)
        dw_plane_rows(y, x, w, bias, p, 0, SW, g);
    const int64_t first = p;
    for (; p + DW_RB <= g->P && DW_INSIDE(p + DW_RB - 1); p += DW_RB)
        dw_plane_rows(y, x, w, bias, p, 1, SW, g);
    if (p > first && p < g->P && DW_INSIDE(g->P - 1)) {
        dw_plane_rows(y, x, w, bias, g->P - DW_RB, 1, SW, g);
        p = g->P;
    }
    for (; p < g->P; p++)
        dw_plane_rows(y, x, w, bias, p, 0, SW, g);
#undef DW_INSIDE
}

/* y (m, P, Q) = w (m, 3, 3) * x (H, W) + b at stride 1 or 2 along rows
 * (g->sw), no dilation along them */
static inline void dw_forward_3x3(float *y, const float *x, const float *w, const float *b,
                                  const depthwise_geom *g)
{
    for (int64_t j = 0; j < g->m; j++) {
        const float bias = b ? b[j] : 0.0f;
        float *yj = y + j * g->P * g->Q;
        if (g->sw == 1)
            dw_plane_3x3(yj, x, w + j * 9, bias, 1, g);
        else
            dw_plane_3x3(yj, x, w + j * 9, bias, 2, g);
    }
}

/* Input row xr (cols) split into its two phase rows: padded column c + pw
 * goes to phase (c + pw) mod 2, column (c + pw) / 2 - the even input
 * columns to one phase, the odd ones to the other, in one pass. */
static inline void dw_split_row2(float *restrict ph0, float *restrict ph1,
                                 const float *restrict xr, int64_t cols, int64_t pw)
{
    float *restrict even = (pw & 1 ? ph1 : ph0) + pw / 2;
    float *restrict odd = (pw & 1 ? ph0 : ph1) + (pw + 1) / 2;
    int64_t k = 0;
    for (; 2 * k + 1 < cols; k++) {
        even[k] = xr[2 * k];
        odd[k] = xr[2 * k + 1];
    }
    if (2 * k < cols)
        even[k] = xr[2 * k];
}

/* xph (sw, Hp, Wq) = the phases of plane x (H, W): phase f, row h + ph,
 * column j = x (h, j sw + f - pw) for j in [phase_lo[f], phase_hi[f]);
 * strides 1 and 2 copy a row in one pass. */
static inline void dw_to_phases(float *restrict xph, const float *restrict x,
                                const depthwise_geom *g)
{
    const int64_t phase = g->Hp * g->Wq;
    for (int64_t h = 0; h < g->rows; h++) {
        const float *restrict xr = x + h * g->W;
        float *restrict dst = xph + (h + g->ph) * g->Wq;
        if (g->sw == 1) {
            for (int64_t c = 0; c < g->cols; c++) dst[g->pw + c] = xr[c];
            continue;
        }
        if (g->sw == 2) {
            dw_split_row2(dst, dst + phase, xr, g->cols, g->pw);
            continue;
        }
        for (int64_t f = 0; f < g->sw; f++) {
            const float *src = xr + f - g->pw;      /* phase f's dst[j] = src[j sw] */
            for (int64_t j = g->phase_lo[f]; j < g->phase_hi[f]; j++)
                dst[f * phase + j] = src[j * g->sw];
        }
    }
}

/* row (Qv) = dy row (Q), zeros after it, so whole vectors can be read. */
static inline void dw_padded_row(float *row, const float *dy, int64_t Q)
{
    memcpy(row, dy, (size_t)Q * sizeof(float));
    for (int64_t q = Q; q < ((Q + 15) & ~(int64_t)15); q++) row[q] = 0.0f;
}

static inline void dw_backward_data(float *dxph, const float *dy, const float *w, float *row,
                                    const depthwise_geom *g)
{
    const int64_t RS = g->R * g->S;
    for (int64_t j = 0; j < g->m; j++)
        for (int64_t p = 0; p < g->P; p++) {
            dw_padded_row(row, dy + (j * g->P + p) * g->Q, g->Q);
            for (int64_t r = 0; r < g->R; r++) {
                float *dr = dxph + (p * g->sh + r * g->dh) * g->Wq;
                for (int64_t t = 0; t < g->S; t++) {
                    const float wv = w[j * RS + r * g->S + t];
                    float *seg = dr + g->col_off[t];
                    for (int64_t q0 = 0; q0 < g->Q; q0 += DW_VL)
                        *(dwvec *)(seg + q0) += wv * *(const dwvec *)(row + q0);
                }
            }
        }
}

static inline void dw_wgrad(double *dw, const float *dy, const float *xph, float *row,
                            float *acc, const depthwise_geom *g)
{
    const int64_t RS = g->R * g->S;
    dwvec *sums = (dwvec *)acc;
    for (int64_t j = 0; j < g->m; j++) {
        for (int64_t i = 0; i < RS; i++) sums[i] = (dwvec){0};
        for (int64_t p = 0; p < g->P; p++) {
            dw_padded_row(row, dy + (j * g->P + p) * g->Q, g->Q);
            for (int64_t r = 0; r < g->R; r++) {
                const float *xr = xph + (p * g->sh + r * g->dh) * g->Wq;
                for (int64_t t = 0; t < g->S; t++) {
                    const float *seg = xr + g->col_off[t];
                    dwvec s = sums[r * g->S + t];
                    for (int64_t q0 = 0; q0 < g->Q; q0 += DW_VL)
                        s += *(const dwvec *)(row + q0) * *(const dwvec *)(seg + q0);
                    sums[r * g->S + t] = s;
                }
            }
        }
        for (int64_t i = 0; i < RS; i++) {
            double total = 0.0;
            for (int l = 0; l < DW_VL; l++) total += sums[i][l];
            dw[j * RS + i] += total;
        }
    }
}

/* ---- channel vectors: VL channels of one image at a time ----
 * The planes are transposed to one vector of channels per position (xs),
 * so every tap of every output is one aligned vector load and one FMA
 * whatever the stride, and a short row fills whole vectors; the outputs
 * (ys) are transposed back. */

#define DW_CB 8                 /* output positions per block of the row loop */

#if DW_VL == 16 && defined(__AVX512F__)
#include "transpose_regs.h"
#define DW_TRANSPOSE(m) transpose16((__m512 *)(m))
#elif DW_VL == 8 && defined(__AVX2__)
#include "transpose_regs.h"
#define DW_TRANSPOSE(m) transpose8((__m256 *)(m))
#else
#define DW_TRANSPOSE(m) dw_transpose_lanes(m)
static inline void dw_transpose_lanes(dwvec m[DW_VL])
{
    float t[DW_VL][DW_VL];
    memcpy(t, m, sizeof t);
    for (int i = 0; i < DW_VL; i++)
        for (int j = 0; j < DW_VL; j++) m[i][j] = t[j][i];
}
#endif

/* xs (Hp, Wp, VL): padded position (h + ph, w + pw), lane l = x (l, h, w)
 * for the rows x cols of the planes that are read, VL consecutive positions
 * of the planes at a time (a chunk's runs along rows stored in turn); the
 * padding keeps its zeros. */
static inline void dw_vectors_in(float *restrict xs, const float *restrict x,
                                 const depthwise_geom *g)
{
    /* g's fields in locals: the vector stores may alias them */
    const int64_t HW = g->H * g->W, W = g->W, cols = g->cols, n = g->rows * W;
    float *restrict dst = xs + (g->ph * g->Wp + g->pw) * DW_VL;     /* position (0, 0) */
    const int64_t skip = (g->Wp - W) * DW_VL;     /* a row's end to the next row's start */
    int64_t w = 0;
    for (int64_t i0 = 0; i0 < n; i0 += DW_VL) {
        const int64_t cnt = n - i0 < DW_VL ? n - i0 : DW_VL;
        dwvec m[DW_VL] __attribute__((aligned(DEPTHWISE_VBYTES)));
        const float *src = x + i0;
        if (cnt == DW_VL)
            for (int l = 0; l < DW_VL; l++, src += HW) m[l] = *(const dwvec *)src;
        else
            for (int l = 0; l < DW_VL; l++, src += HW) m[l] = dw_load_lanes(src, (dw_lanes){0, cnt});
        DW_TRANSPOSE(m);
#pragma GCC unroll 16
        for (int j = 0; j < DW_VL; j++) {   /* unrolled: m stays in registers */
            if (j < cnt && w < cols)
                *(dwvec *)dst = m[j];
            dst += DW_VL;
            if (++w == W)
                w = 0, dst += skip;
        }
    }
}

/* ys positions (p, q0) .. (p, q0 + nb) = bias + the taps wv (R S) times xs,
 * clamped as the forward; the same sums in the same order as the row
 * loops. nb, R, S, and SW and DW (the stride and dilation along rows; 0:
 * g's) are constants at each call. */
static inline __attribute__((always_inline)) void
dw_vectors_block(float *restrict ys, const float *restrict xs, const dwvec *wv, dwvec bias,
                 int64_t p, int64_t q0, const int nb, const int64_t R, const int64_t S,
                 const int64_t SW, const int64_t DW, const depthwise_geom *g)
{
    const int64_t sw = SW ? SW : g->sw, dil = DW ? DW : g->dil_w;
    dwvec acc[DW_CB];
    for (int j = 0; j < nb; j++) acc[j] = bias;
    for (int64_t r = 0; r < R; r++) {
        const dwvec *row = (const dwvec *)xs + (p * g->sh + r * g->dh) * g->Wp + q0 * sw;
        for (int64_t t = 0; t < S; t++) {
            const dwvec wt = wv[r * S + t];
            for (int j = 0; j < nb; j++) acc[j] += wt * row[t * dil + j * sw];
        }
    }
    const dwvec lo = g->lo - (dwvec){0}, hi = g->hi - (dwvec){0};
    dwvec *out = (dwvec *)ys + p * g->Q + q0;
    for (int j = 0; j < nb; j++) out[j] = g->clamp ? dw_clamp(acc[j], lo, hi) : acc[j];
}

static inline __attribute__((always_inline)) void
dw_vectors_rows(float *ys, const float *xs, const dwvec *wv, dwvec bias, const int64_t R,
                const int64_t S, const int64_t SW, const int64_t DW, const depthwise_geom *g)
{
#define DW_BLOCK(nb) dw_vectors_block(ys, xs, wv, bias, p, q0, nb, R, S, SW, DW, g)
    for (int64_t p = 0; p < g->P; p++) {
        int64_t q0 = 0;
        for (; q0 + DW_CB <= g->Q; q0 += DW_CB)
            DW_BLOCK(DW_CB);
        switch (g->Q - q0) {
        case 7: DW_BLOCK(7); break;
        case 6: DW_BLOCK(6); break;
        case 5: DW_BLOCK(5); break;
        case 4: DW_BLOCK(4); break;
        case 3: DW_BLOCK(3); break;
        case 2: DW_BLOCK(2); break;
        case 1: DW_BLOCK(1); break;
        default: break;
        }
    }
#undef DW_BLOCK
}

/* y (VL, P Q) = ys (P Q, VL) transposed, VL positions at a time. */
static inline void dw_vectors_out(float *restrict y, const float *restrict ys,
                                  const depthwise_geom *g)
{
    const int64_t PQ = g->P * g->Q;
    for (int64_t i0 = 0; i0 < PQ; i0 += DW_VL) {
        const int64_t cnt = PQ - i0 < DW_VL ? PQ - i0 : DW_VL;
        dwvec m[DW_VL] __attribute__((aligned(DEPTHWISE_VBYTES)));
        for (int j = 0; j < DW_VL; j++)
            m[j] = *(const dwvec *)(ys + (i0 + (j < cnt ? j : 0)) * DW_VL);
        DW_TRANSPOSE(m);
        float *dst = y + i0;
        for (int l = 0; l < DW_VL; l++, dst += PQ) {
            if (cnt == DW_VL)
                *(dwvec *)dst = m[l];
            else
                dw_store_part(dst, m[l], cnt);
        }
    }
}

static inline void dw_vectors(float *y, const float *x, const float *wv, const float *b,
                              float *xs, float *ys, const depthwise_geom *g)
{
    /* 0 + b, as the row loops start: a bias of -0 sums as +0 */
    const dwvec bias = (dwvec){0} + (b ? *(const dwvec *)b : (dwvec){0});
    const dwvec *taps = (const dwvec *)wv;
    dw_vectors_in(xs, x, g);
    if (g->R == 3 && g->S == 3 && g->dil_w == 1 && g->sw == 1)
        dw_vectors_rows(ys, xs, taps, bias, 3, 3, 1, 1, g);
    else if (g->R == 3 && g->S == 3 && g->dil_w == 1 && g->sw == 2)
        dw_vectors_rows(ys, xs, taps, bias, 3, 3, 2, 1, g);
    else
        dw_vectors_rows(ys, xs, taps, bias, g->R, g->S, 0, 0, g);
    dw_vectors_out(y, ys, g);
}

/* ds (P Q, VL) = dy (VL, P Q) transposed, VL positions at a time (the
 * inverse of dw_vectors_out). */
static inline void dw_grads_in(float *restrict ds, const float *restrict dy,
                               const depthwise_geom *g)
{
    const int64_t PQ = g->P * g->Q;
    for (int64_t i0 = 0; i0 < PQ; i0 += DW_VL) {
        const int64_t cnt = PQ - i0 < DW_VL ? PQ - i0 : DW_VL;
        dwvec m[DW_VL] __attribute__((aligned(DEPTHWISE_VBYTES)));
        const float *src = dy + i0;
        if (cnt == DW_VL)
            for (int l = 0; l < DW_VL; l++, src += PQ) m[l] = *(const dwvec *)src;
        else
            for (int l = 0; l < DW_VL; l++, src += PQ) m[l] = dw_load_lanes(src, (dw_lanes){0, cnt});
        DW_TRANSPOSE(m);
        dwvec *dst = (dwvec *)(ds + i0 * DW_VL);
#pragma GCC unroll 16
        for (int j = 0; j < DW_VL; j++)     /* unrolled: m stays in registers */
            if (j < cnt)
                dst[j] = m[j];
    }
}

/* sums (R S, VL) = each tap's sum over the positions (p, q), in order, of
 * ds (p Q + q) times xs at the tap: one accumulator per tap. R, S, and SW
 * and DW (the stride and dilation along rows; 0: g's) are constants at the
 * common call sites. */
static inline __attribute__((always_inline)) void
dw_wgrad_sums(float *restrict sums, const float *restrict xs, const float *restrict ds,
              const int64_t R, const int64_t S, const int64_t SW, const int64_t DW,
              const depthwise_geom *g)
{
    const int64_t sw = SW ? SW : g->sw, dil = DW ? DW : g->dil_w;
    dwvec acc[R * S];
    for (int64_t i = 0; i < R * S; i++) acc[i] = (dwvec){0};
    for (int64_t p = 0; p < g->P; p++)
        for (int64_t q = 0; q < g->Q; q++) {
            const dwvec d = *(const dwvec *)(ds + (p * g->Q + q) * DW_VL);
            for (int64_t r = 0; r < R; r++) {
                const dwvec *row = (const dwvec *)xs + (p * g->sh + r * g->dh) * g->Wp + q * sw;
                for (int64_t t = 0; t < S; t++) acc[r * S + t] += d * row[t * dil];
            }
        }
    for (int64_t i = 0; i < R * S; i++) *(dwvec *)(sums + i * DW_VL) = acc[i];
}

static inline void dw_wgrad_vectors(float *sums, const float *dy, const float *x, float *xs,
                                    float *ds, const depthwise_geom *g)
{
    dw_vectors_in(xs, x, g);
    dw_grads_in(ds, dy, g);
    if (g->R == 3 && g->S == 3 && g->dil_w == 1 && g->sw == 1)
        dw_wgrad_sums(sums, xs, ds, 3, 3, 1, 1, g);
    else if (g->R == 3 && g->S == 3 && g->dil_w == 1 && g->sw == 2)
        dw_wgrad_sums(sums, xs, ds, 3, 3, 2, 1, g);
    else
        dw_wgrad_sums(sums, xs, ds, g->R, g->S, 0, 0, g);
}

/* dxs (Hp, Wp, VL) += each position's ds (p Q + q) times the taps wv at the
 * padded positions they read (zeroed first by the caller). R, S, and SW and
 * DW (the stride and dilation along rows; 0: g's) are constants at the
 * common call sites. */
static inline __attribute__((always_inline)) void
dw_scatter_taps(float *restrict dxs, const float *restrict ds, const dwvec *wv, const int64_t R,
                const int64_t S, const int64_t SW, const int64_t DW, const depthwise_geom *g)
{
    const int64_t sw = SW ? SW : g->sw, dil = DW ? DW : g->dil_w;
    for (int64_t p = 0; p < g->P; p++)
        for (int64_t q = 0; q < g->Q; q++) {
            const dwvec d = *(const dwvec *)(ds + (p * g->Q + q) * DW_VL);
            for (int64_t r = 0; r < R; r++) {
                dwvec *row = (dwvec *)dxs + (p * g->sh + r * g->dh) * g->Wp + q * sw;
                for (int64_t t = 0; t < S; t++) row[t * dil] += d * wv[r * S + t];
            }
        }
}

/* dx (VL, H, W) = dxs (Hp, Wp, VL) at (h + ph, w + pw) transposed, VL
 * positions of the planes at a time; 0 where no tap reads (rows and
 * columns past g's rows and cols). */
static inline void dw_vectors_back(float *restrict dx, const float *restrict dxs,
                                   const depthwise_geom *g)
{
    /* g's fields in locals: the vector stores may alias them */
    const int64_t HW = g->H * g->W, W = g->W, rows = g->rows, cols = g->cols;
    const float *src = dxs + (g->ph * g->Wp + g->pw) * DW_VL;     /* position (0, 0) */
    const int64_t skip = (g->Wp - W) * DW_VL;     /* a row's end to the next row's start */
    int64_t h = 0, w = 0;
    for (int64_t i0 = 0; i0 < HW; i0 += DW_VL) {
        const int64_t cnt = HW - i0 < DW_VL ? HW - i0 : DW_VL;
        dwvec m[DW_VL] __attribute__((aligned(DEPTHWISE_VBYTES)));
#pragma GCC unroll 16
        for (int j = 0; j < DW_VL; j++) {   /* unrolled: m stays in registers */
            m[j] = j < cnt && h < rows && w < cols ? *(const dwvec *)src : (dwvec){0};
            src += DW_VL;
            if (++w == W)
                w = 0, h++, src += skip;
        }
        DW_TRANSPOSE(m);
        float *dst = dx + i0;
        for (int l = 0; l < DW_VL; l++, dst += HW) {
            if (cnt == DW_VL)
                *(dwvec *)dst = m[l];
            else
                dw_store_part(dst, m[l], cnt);
        }
    }
}

static inline void dw_backward_vectors(float *dx, const float *dy, const float *wv, float *dxs,
                                       float *ds, const depthwise_geom *g)
{
    const dwvec *taps = (const dwvec *)wv;
    memset(dxs, 0, (size_t)(g->Hp * g->Wp * DW_VL) * sizeof(float));
    dw_grads_in(ds, dy, g);
    if (g->R == 3 && g->S == 3 && g->dil_w == 1 && g->sw == 2)
        dw_scatter_taps(dxs, ds, taps, 3, 3, 2, 1, g);
    else
        dw_scatter_taps(dxs, ds, taps, g->R, g->S, 0, 0, g);
    dw_vectors_back(dx, dxs, g);
}

/* The entry points of one instruction set, named after `isa`. */
#define DEPTHWISE_DEFINE(isa)                                                               \
    void conv2d_depthwise_phases_##isa(float *xph, const float *x, const depthwise_geom *g)   \
    {                                                                                        \
        dw_to_phases(xph, x, g);                                                             \
    }                                                                                        \
    void conv2d_depthwise_forward_##isa(float *y, const float *xph, const float *w,          \
                                        const float *b, const depthwise_geom *g)            \
    {                                                                                        \
        dw_forward(y, xph, w, b, g);                                                         \
    }                                                                                        \
    void conv2d_depthwise_forward_3x3_##isa(float *y, const float *x, const float *w,        \
                                            const float *b, const depthwise_geom *g)        \
    {                                                                                        \
        dw_forward_3x3(y, x, w, b, g);                                                       \
    }                                                                                        \
    void conv2d_depthwise_backward_data_##isa(float *dxph, const float *dy, const float *w,  \
                                              float *row, const depthwise_geom *g)           \
    {                                                                                        \
        dw_backward_data(dxph, dy, w, row, g);                                               \
    }                                                                                        \
    void conv2d_depthwise_wgrad_##isa(double *dw, const float *dy, const float *xph,         \
                                      float *row, float *acc, const depthwise_geom *g)       \
    {                                                                                        \
        dw_wgrad(dw, dy, xph, row, acc, g);                                                  \
    }                                                                                        \
    void conv2d_depthwise_vectors_##isa(float *y, const float *x, const float *wv,           \
                                        const float *b, float *xs, float *ys,               \
                                        const depthwise_geom *g)                            \
    {                                                                                        \
        dw_vectors(y, x, wv, b, xs, ys, g);                                                  \
    }                                                                                        \
    void conv2d_depthwise_wgrad_vectors_##isa(float *sums, const float *dy, const float *x,  \
                                              float *xs, float *ds, const depthwise_geom *g) \
    {                                                                                        \
        dw_wgrad_vectors(sums, dy, x, xs, ds, g);                                            \
    }                                                                                        \
    void conv2d_depthwise_backward_vectors_##isa(float *dx, const float *dy, const float *wv, \
                                                 float *dxs, float *ds,                      \
                                                 const depthwise_geom *g)                    \
    {                                                                                        \
        dw_backward_vectors(dx, dy, wv, dxs, ds, g);                                         \
    }

#endif /* DEPTHWISE_VBYTES */
