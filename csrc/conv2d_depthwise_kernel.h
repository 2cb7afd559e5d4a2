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
 * (t dw) mod sw: a contiguous run for any stride and dilation.
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
 * starts in xph: ((t dw) mod sw) Hp Wq + (t dw) / sw. */
typedef struct {
    int64_t m, R, S, sh, dh, P, Q, Hp, Wq;
    const int64_t *col_off;
} depthwise_geom;

/* One input channel of one image:
 *   forward:       y (m, P, Q) = w (m, R, S) * xph + b (m) (b may be NULL);
 *   backward data: dxph (sw, Hp, Wq) += the taps of dy (m, P, Q) scattered
 *                  back through w; row (Q rounded up to 16) is scratch;
 *   weight grad:   dw (m, R, S) += dy (m, P, Q) * xph, summed in double;
 *                  row as above, acc (R S 16 floats) scratch. */
typedef void (*depthwise_forward_fn)(float *, const float *, const float *, const float *,
                                     const depthwise_geom *);
typedef void (*depthwise_backward_data_fn)(float *, const float *, const float *, float *,
                                           const depthwise_geom *);
typedef void (*depthwise_wgrad_fn)(double *, const float *, const float *, float *, float *,
                                   const depthwise_geom *);

#define DEPTHWISE_DECLARE(isa)                                                              \
    void conv2d_depthwise_forward_##isa(float *y, const float *xph, const float *w,          \
                                        const float *b, const depthwise_geom *g);           \
    void conv2d_depthwise_backward_data_##isa(float *dxph, const float *dy, const float *w,  \
                                              float *row, const depthwise_geom *g);          \
    void conv2d_depthwise_wgrad_##isa(double *dw, const float *dy, const float *xph,         \
                                      float *row, float *acc, const depthwise_geom *g);
DEPTHWISE_DECLARE(generic)
DEPTHWISE_DECLARE(avx2)
DEPTHWISE_DECLARE(avx512)

#endif /* FASTCNN_CONV2D_DEPTHWISE_KERNEL_H */

#if defined(DEPTHWISE_VBYTES) && !defined(FASTCNN_CONV2D_DEPTHWISE_LOOPS)
#define FASTCNN_CONV2D_DEPTHWISE_LOOPS

#define DW_VL (DEPTHWISE_VBYTES / 4)
#define DW_RB 4                 /* output rows per forward block (independent sums) */
typedef float dwvec __attribute__((vector_size(DEPTHWISE_VBYTES), aligned(4), may_alias));

/* dst[0 .. min(n, VL)) = the first lanes of v. */
static inline void dw_store(float *dst, dwvec v, int64_t n)
{
    if (n >= DW_VL) {
        *(dwvec *)dst = v;
        return;
    }
    float lane[DW_VL];
    *(dwvec *)lane = v;
    memcpy(dst, lane, (size_t)n * sizeof(float));
}

/* Output rows p0 .. p0+rb-1 of y (P, Q) = w (R, S) * xph + bias; rb is a
 * constant at each call, so the rb sums of a vector stay in registers. */
static inline __attribute__((always_inline)) void
dw_forward_rows(float *restrict y, const float *restrict xph, const float *restrict w,
                float bias, int64_t p0, const int rb, const depthwise_geom *g)
{
    const int64_t row_step = g->sh * g->Wq;
    for (int64_t q0 = 0; q0 < g->Q; q0 += DW_VL) {
        dwvec acc[DW_RB];
        for (int i = 0; i < rb; i++) acc[i] = (dwvec){0} + bias;
        for (int64_t r = 0; r < g->R; r++) {
            const float *xr = xph + (p0 * g->sh + r * g->dh) * g->Wq + q0;
            for (int64_t t = 0; t < g->S; t++) {
                const float wv = w[r * g->S + t];
                const float *seg = xr + g->col_off[t];
                for (int i = 0; i < rb; i++) acc[i] += wv * *(const dwvec *)(seg + i * row_step);
            }
        }
        for (int i = 0; i < rb; i++) dw_store(y + (p0 + i) * g->Q + q0, acc[i], g->Q - q0);
    }
}

static inline void dw_forward(float *y, const float *xph, const float *w, const float *b,
                              const depthwise_geom *g)
{
    const int64_t RS = g->R * g->S, PQ = g->P * g->Q;
    for (int64_t j = 0; j < g->m; j++) {
        const float bias = b ? b[j] : 0.0f;
        int64_t p = 0;
        for (; p + DW_RB <= g->P; p += DW_RB)
            dw_forward_rows(y + j * PQ, xph, w + j * RS, bias, p, DW_RB, g);
        for (; p < g->P; p++)
            dw_forward_rows(y + j * PQ, xph, w + j * RS, bias, p, 1, g);
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

/* The entry points of one instruction set, named after `isa`. */
#define DEPTHWISE_DEFINE(isa)                                                               \
    void conv2d_depthwise_forward_##isa(float *y, const float *xph, const float *w,          \
                                        const float *b, const depthwise_geom *g)            \
    {                                                                                        \
        dw_forward(y, xph, w, b, g);                                                         \
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
    }

#endif /* DEPTHWISE_VBYTES */
