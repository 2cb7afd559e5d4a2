/* pool2d.c - max and average 2-d pooling, forward and backward, with
 * PyTorch's semantics: floor or ceil mode (the caller's P and Q); windows
 * (dilated for the max) are clipped to the image, so padding never wins a
 * max; the first maximum wins a tie and the last NaN in a window wins over
 * everything (torch's `v > max || isnan(v)` scan, row by row); the average
 * divides by the window size within the padded image (count_include_pad; a
 * ceil-mode window past the right padding is clipped to it) or within the
 * image.
 *
 * The N*C planes are independent: the fast kernels run them in parallel.
 * Forward, within a plane, they go output row by output row; the columns
 * whose window lies inside the image (the interior) run through a loop with
 * a fixed window width and stride that the compiler vectorizes (stride 2 via
 * an even/odd split of the input row), the few border columns through the
 * plain per-window code the reference kernels use. In inference (and
 * whenever the caller asks for no indices) the max runs values-only loops:
 * 2x2 tiles and any other window (pool2d_kernel.h, per instruction set), the
 * same values bit for bit; the average's rows run there too. The
 * average's backward spreads each output row along one row, then adds it to
 * the input rows it covers; the max's backward writes tiled planes (2x2
 * stride 2 ...) without a scatter and scatters otherwise.
 *
 * Adaptive pooling (windows of uneven sizes, torch's floor/ceil rule) runs
 * the plain per-window code on each plane, the planes in parallel; its max
 * shares the max's backward (a scatter through the indices). */
#include <math.h>
#include <stdint.h>
#include <stdatomic.h>
#include <string.h>

#include "dispatch.h"
#include "fastcnn.h"
#include "pool2d_kernel.h"


#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* The loops of one instruction set (defined with its tables below). */
typedef struct pool2d_kernels pool2d_kernels;

/* ---- windows ------------------------------------------------------------ */

/* First input coordinate of output coordinate o's window (k taps dil
 * apart) that lies in [0, n): the first tap at or after 0. */
static inline int64_t win_lo(int64_t o, int64_t stride, int64_t pad, int64_t dil)
{
    int64_t a = o * stride - pad;
    return a < 0 ? a + (-a + dil - 1) / dil * dil : a;
}

/* One past the last input coordinate of o's window, clipped to n. */
static inline int64_t win_hi(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t dil,
                             int64_t n)
{
    int64_t b = o * stride - pad + (k - 1) * dil + 1;
    return b > n ? n : b;
}

/* Window length along one axis (no dilation) that the average divides by:
 * with count_include_pad its part inside the padded extent [-pad, n + pad)
 * (all k in floor mode), else its part inside [0, n). */
static inline int64_t win_count(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t n,
                                int count_include_pad)
{
    int64_t a = o * stride - pad, b = a + k;
    if (count_include_pad)
        return (b > n + pad ? n + pad : b) - a;
    return win_hi(o, stride, pad, k, 1, n) - win_lo(o, stride, pad, 1);
}

/* Rows [row_lo, row_hi) (every dh-th) of output row p's window, columns
 * [col_lo, col_hi) (every dw-th) of output column q's (max pooling). */
static inline int64_t row_lo(const pool2d_shape *s, int64_t p) { return win_lo(p, s->sh, s->ph, s->dh); }
static inline int64_t row_hi(const pool2d_shape *s, int64_t p) { return win_hi(p, s->sh, s->ph, s->R, s->dh, s->H); }
static inline int64_t col_lo(const pool2d_shape *s, int64_t q) { return win_lo(q, s->sw, s->pw, s->dw); }
static inline int64_t col_hi(const pool2d_shape *s, int64_t q) { return win_hi(q, s->sw, s->pw, s->S, s->dw, s->W); }

/* The same without dilation (average pooling: the constant folds the
 * division away), and the windows' lengths in the average's divisor. */
static inline int64_t avg_row_lo(const pool2d_shape *s, int64_t p) { return win_lo(p, s->sh, s->ph, 1); }
static inline int64_t avg_row_hi(const pool2d_shape *s, int64_t p) { return win_hi(p, s->sh, s->ph, s->R, 1, s->H); }
static inline int64_t avg_col_lo(const pool2d_shape *s, int64_t q) { return win_lo(q, s->sw, s->pw, 1); }
static inline int64_t avg_col_hi(const pool2d_shape *s, int64_t q) { return win_hi(q, s->sw, s->pw, s->S, 1, s->W); }
static inline int64_t row_count(const pool2d_shape *s, int64_t p, int incl)
{
    return win_count(p, s->sh, s->ph, s->R, s->H, incl);
}
static inline int64_t col_count(const pool2d_shape *s, int64_t q, int incl)
{
    return win_count(q, s->sw, s->pw, s->S, s->W, incl);
}

/* Output columns [*qa, *qb) whose windows lie inside [0, W): the interior. */
static void interior_cols(const pool2d_shape *s, int64_t *qa, int64_t *qb)
{
    int64_t a = (s->pw + s->sw - 1) / s->sw;
    int64_t last = s->W + s->pw - (s->S - 1) * s->dw - 1; /* q sw must not exceed this */
    int64_t b = last < 0 ? 0 : last / s->sw + 1;
    if (a > s->Q)
        a = s->Q;
    if (b > s->Q)
        b = s->Q;
    *qa = a;
    *qb = b < a ? a : b;
}

/* ---- one window (reference kernels and border columns) ------------------ */

/* *m, *i = v, idx where v beats *m (v > *m, or v is NaN), by bit masks: gcc
 * compiles selects on these comparisons into branches, which random data
 * mispredicts (30% of a 3x3 stride-2 pooling's time went to its border
 * column's windows on Zen 5). */
static inline void take_masked(float *m, int64_t *i, float v, int64_t idx)
{
    uint32_t mb, vb, t = 0u - (uint32_t)((v > *m) | (v != v));
    uint64_t t64 = (uint64_t)0 - (t & 1u);
    memcpy(&mb, m, sizeof mb);
    memcpy(&vb, &v, sizeof vb);
    mb = (vb & t) | (mb & ~t);
    memcpy(m, &mb, sizeof mb);
    *i = (int64_t)(((uint64_t)idx & t64) | ((uint64_t)*i & ~t64));
}

/* y, am = max and its flat index over every dh-th row of [h0,h1) and every
 * dw-th column of [w0,w1) of the plane x (H, W), scanned as torch does. */
static void max_window(float *y, int32_t *am, const float *x, int64_t W,
                       int64_t h0, int64_t h1, int64_t dh, int64_t w0, int64_t w1, int64_t dw)
{
    float m = -INFINITY;
    int64_t i = h0 * W + w0;
    for (int64_t h = h0; h < h1; h += dh)
        for (int64_t w = w0; w < w1; w += dw)
            take_masked(&m, &i, x[h * W + w], h * W + w);
    *y = m;
    *am = (int32_t)i;
}

/* Sum over rows [h0,h1), columns [w0,w1) of the plane x (H, W), in float and
 * in torch's order. */
static float sum_window(const float *x, int64_t W, int64_t h0, int64_t h1, int64_t w0, int64_t w1)
{
    float acc = 0.0f;
    for (int64_t h = h0; h < h1; h++)
        for (int64_t w = w0; w < w1; w++)
            acc += x[h * W + w];
    return acc;
}

/* dx (H, W) plane += g over rows [h0,h1), columns [w0,w1). */
static void add_window(float *dx, float g, int64_t W, int64_t h0, int64_t h1, int64_t w0, int64_t w1)
{
    for (int64_t h = h0; h < h1; h++)
        for (int64_t w = w0; w < w1; w++)
            dx[h * W + w] += g;
}

/* ---- reference kernels --------------------------------------------------- */

/* y, argmax (N,C,P,Q); x (N,C,H,W) */
void maxpool2d_forward_ref(float *y, int32_t *argmax, const float *x, const pool2d_shape *s)
{
    for (int64_t nc = 0; nc < s->N * s->C; nc++)
        for (int64_t p = 0; p < s->P; p++)
            for (int64_t q = 0; q < s->Q; q++) {
                int64_t o = (nc * s->P + p) * s->Q + q;
                max_window(&y[o], &argmax[o], x + nc * s->H * s->W, s->W,
                           row_lo(s, p), row_hi(s, p), s->dh, col_lo(s, q), col_hi(s, q), s->dw);
            }
}

/* dx (N,C,H,W); dy, argmax (N,C,P,Q). Indices outside [0, H*W) are skipped
 * and counted: returns their number. */
int64_t maxpool2d_backward_ref(float *dx, const float *dy, const int32_t *argmax,
                               const pool2d_shape *s)
{
    int64_t HW = s->H * s->W, PQ = s->P * s->Q, bad = 0;
    for (int64_t i = 0; i < s->N * s->C * HW; i++)
        dx[i] = 0.0f;
    for (int64_t nc = 0; nc < s->N * s->C; nc++)
        for (int64_t k = 0; k < PQ; k++) {
            int64_t i = argmax[nc * PQ + k];
            if (i < 0 || i >= HW)
                bad++;
            else
                dx[nc * HW + i] += dy[nc * PQ + k];
        }
    return bad;
}

/* dx (N,C,H,W); dy, argmax (N,C,P,Q); y (N,C,H,W): maxpool2d_relu_backward's twin. */
int64_t maxpool2d_relu_backward_ref(float *dx, const float *dy, const int32_t *argmax,
                                    const float *y, const pool2d_shape *s)
{
    int64_t bad = maxpool2d_backward_ref(dx, dy, argmax, s);
    relu_backward_ref(dx, dx, y, s->N * s->C * s->H * s->W);
    return bad;
}

/* y (N,C,P,Q); x (N,C,H,W). Sums in double. */
void avgpool2d_forward_ref(float *y, const float *x, const pool2d_shape *s, int count_include_pad)
{
    for (int64_t nc = 0; nc < s->N * s->C; nc++)
        for (int64_t p = 0; p < s->P; p++)
            for (int64_t q = 0; q < s->Q; q++) {
                const float *plane = x + nc * s->H * s->W;
                double acc = 0.0;
                for (int64_t h = avg_row_lo(s, p); h < avg_row_hi(s, p); h++)
                    for (int64_t w = avg_col_lo(s, q); w < avg_col_hi(s, q); w++)
                        acc += plane[h * s->W + w];
                int64_t n = row_count(s, p, count_include_pad) * col_count(s, q, count_include_pad);
                y[(nc * s->P + p) * s->Q + q] = (float)(acc / (double)n);
            }
}

/* dx (N,C,H,W); dy (N,C,P,Q) */
void avgpool2d_backward_ref(float *dx, const float *dy, const pool2d_shape *s, int count_include_pad)
{
    int64_t HW = s->H * s->W;
    for (int64_t i = 0; i < s->N * s->C * HW; i++)
        dx[i] = 0.0f;
    for (int64_t nc = 0; nc < s->N * s->C; nc++)
        for (int64_t p = 0; p < s->P; p++)
            for (int64_t q = 0; q < s->Q; q++) {
                int64_t n = row_count(s, p, count_include_pad) * col_count(s, q, count_include_pad);
                add_window(dx + nc * HW, dy[(nc * s->P + p) * s->Q + q] / (float)n, s->W,
                           avg_row_lo(s, p), avg_row_hi(s, p), avg_col_lo(s, q), avg_col_hi(s, q));
            }
}

/* ---- fast kernels: one output row's interior columns ----------------------- */

/* Running max y and argmax am (Q) of interior columns [qa, qb) over every
 * dh-th row of [h0, h1) of the plane x (H, W), the window's S columns dw
 * apart; S, sw and dw are constants at the common call sites, so the column
 * loop vectorizes. Same scan order as max_window. */
ALWAYS_INLINE void max_cols(float *restrict y, int32_t *restrict am, const float *restrict x,
                            int64_t W, int64_t h0, int64_t h1, int64_t dh, int64_t qa,
                            int64_t qb, int64_t S, int64_t sw, int64_t dw, int64_t pw)
{
    int32_t first = (int32_t)(h0 * W - pw);
    for (int64_t q = qa; q < qb; q++) {
        y[q] = -INFINITY;
        am[q] = first + (int32_t)(q * sw);
    }
    for (int64_t h = h0; h < h1; h += dh) {
        const float *row = x + h * W - pw;
        int32_t base = (int32_t)(h * W - pw);
        for (int64_t q = qa; q < qb; q++) {
            float m = y[q];
            int32_t i = am[q];
            for (int64_t j = 0; j < S; j++) {
                float v = row[q * sw + j * dw];
                int take = (v > m) | (v != v);
                m = take ? v : m;
                i = take ? base + (int32_t)(q * sw + j * dw) : i;
            }
            y[q] = m;
            am[q] = i;
        }
    }
}

/* Interior columns per block of max_cols_s2 (its stack buffers). */
#define S2_BLOCK 256

/* max_cols for stride 2 and S <= 3: each input row's block is first split
 * into its even and odd columns, so the window loop reads with unit stride
 * (and vectorizes well); same scan order as max_window. */
ALWAYS_INLINE void max_cols_s2(float *restrict y, int32_t *restrict am, const float *restrict x,
                               int64_t W, int64_t h0, int64_t h1, int64_t qa, int64_t qb,
                               int S, int64_t pw)
{
    float even[S2_BLOCK + 1], odd[S2_BLOCK + 1];
    for (int64_t q0 = qa; q0 < qb; q0 += S2_BLOCK) {
        int n = (int)(qb - q0 < S2_BLOCK ? qb - q0 : S2_BLOCK);
        int ne = n + (S - 1) / 2, no = n + (S - 2) / 2; /* columns the windows reach */
        float *yb = y + q0;
        int32_t *ab = am + q0;
        int32_t first = (int32_t)(h0 * W + 2 * q0 - pw);
        for (int k = 0; k < n; k++) {
            yb[k] = -INFINITY;
            ab[k] = first + 2 * k;
        }
        for (int64_t h = h0; h < h1; h++) {
            const float *row = x + h * W + 2 * q0 - pw;
            int32_t base = (int32_t)(h * W + 2 * q0 - pw);
            for (int k = 0; k < no; k++) {
                even[k] = row[2 * k];
                odd[k] = row[2 * k + 1];
            }
            if (ne > no)
                even[no] = row[2 * no];
            for (int k = 0; k < n; k++) {
                float m = yb[k];
                int32_t i = ab[k];
                for (int j = 0; j < S; j++) {
                    float v = (j & 1) ? odd[k + j / 2] : even[k + j / 2];
                    int take = (v > m) | (v != v);
                    m = take ? v : m;
                    i = take ? base + 2 * k + j : i;
                }
                yb[k] = m;
                ab[k] = i;
            }
        }
    }
}

/* c ((Q - 1) sw + S) = the row g (Q) of window gradients spread along one
 * row of the padded image: c[w] = sum of g[q] over the windows q covering
 * column w, q ascending (the two common cases without a read-modify-write
 * chain, so they vectorize). */
static void spread_row(float *restrict c, const float *restrict g, int64_t Q, int64_t S, int64_t sw)
{
    if (S == 2 && sw == 2) {
        for (int64_t q = 0; q < Q; q++) {
            c[2 * q] = g[q];
            c[2 * q + 1] = g[q];
        }
    } else if (S == 3 && sw == 2) {
        c[0] = g[0];
        for (int64_t q = 0; q + 1 < Q; q++) {
            c[2 * q + 1] = g[q];
            c[2 * q + 2] = g[q] + g[q + 1];
        }
        c[2 * Q - 1] = g[Q - 1];
        c[2 * Q] = g[Q - 1];
    } else {
        memset(c, 0, (size_t)((Q - 1) * sw + S) * sizeof(float));
        for (int64_t q = 0; q < Q; q++)
            for (int64_t j = 0; j < S; j++)
                c[q * sw + j] += g[q];
    }
}

/* ---- fast kernels: one plane ---------------------------------------------- */

/* Spread rows a slot keeps for avg_plane_backward: at most this many
 * windows cover one input row. */
static int64_t avg_ring_rows(const pool2d_shape *s)
{
    return (s->R + s->sh - 1) / s->sh;
}

/* dx (H, W) = gradient of avg_plane from dy (P, Q), each row written once:
 * output row p's window gradients g (Q), spread along a row of the padded
 * image (cw = (Q - 1) sw + S floats, slot p % avg_ring_rows of the ring c),
 * and input row h the sum of the spread rows whose windows cover it, p
 * ascending (zeros where none does; + 0.0f: a -0 gradient gives +0, as
 * torch's zeroed sum does). cols (Q): each window's width in the divisor. */
static void avg_plane_backward(float *dx, const float *dy, const pool2d_shape *s,
                               const float *cols, float *g, float *c, int count_include_pad)
{
    int64_t W = s->W, pw = s->pw, cw = (s->Q - 1) * s->sw + s->S, ring = avg_ring_rows(s);
    int64_t wn = cw - pw < W ? cw - pw : W;    /* columns the windows reach */
    int64_t p0 = 0, p1 = 0;     /* the windows covering row h: [p0, p1), spread */
    for (int64_t h = 0; h < s->H; h++) {
        float *restrict row = dx + h * W;
        while (p0 < s->P && avg_row_hi(s, p0) <= h)
            p0++;
        for (; p1 < s->P && avg_row_lo(s, p1) <= h; p1++) {
            float rows = (float)row_count(s, p1, count_include_pad);
            for (int64_t q = 0; q < s->Q; q++)
                g[q] = dy[p1 * s->Q + q] / (rows * cols[q]);
            spread_row(c + p1 % ring * cw, g, s->Q, s->S, s->sw);
        }
        int64_t w = 0;
        if (p0 < p1) {
            const float *restrict c0 = c + p0 % ring * cw + pw;
            for (; w < wn; w++)
                row[w] = c0[w] + 0.0f;
            for (int64_t p = p0 + 1; p < p1; p++) {
                const float *restrict cp = c + p % ring * cw + pw;
                for (int64_t v = 0; v < wn; v++)
                    row[v] += cp[v];
            }
        }
        for (; w < W; w++)
            row[w] = 0.0f;
    }
}

/* dx (H, W) = dy (P, Q) scattered (added) to am (P, Q), skipping indices
 * outside [0, H W); returns their number. */
static int64_t scatter_plane(float *dx, const float *dy, const int32_t *am, int64_t HW, int64_t PQ)
{
    int64_t bad = 0;
    memset(dx, 0, (size_t)HW * sizeof(float));
    for (int64_t k = 0; k < PQ; k++) {
        if ((uint64_t)(int64_t)am[k] < (uint64_t)HW)
            dx[am[k]] += dy[k];
        else
            bad++;
    }
    return bad;
}

/* dx (P th, Q tw) from dy, am (P, Q) when the windows are the th x tw tiles
 * of the plane: each position gets its tile's gradient if it is the tile's
 * argmax, else 0 (write-only, no scatter). Returns 0 if an index was not in
 * its tile, leaving dx to be redone. tw is a constant at each call site. */
ALWAYS_INLINE int route_tiles(float *restrict dx, const float *restrict dy,
                              const int32_t *restrict am, int64_t P, int64_t Q, int64_t th,
                              int64_t tw)
{
    int64_t W = Q * tw, hits = 0;
    for (int64_t p = 0; p < P; p++)
        for (int64_t r = 0; r < th; r++) {
            int64_t h = p * th + r;
            float *row = dx + h * W;
            const float *g = dy + p * Q;
            const int32_t *a = am + p * Q;
            int32_t base = (int32_t)(h * W);
            for (int64_t q = 0; q < Q; q++) {
                float gq = g[q] + 0.0f; /* -0 -> +0, as torch's 0 + dy */
                for (int64_t j = 0; j < tw; j++) {
                    int hit = a[q] == base + (int32_t)(q * tw + j);
                    row[q * tw + j] = hit ? gq : 0.0f;
                    hits += hit;
                }
            }
        }
    return hits == P * Q;
}

/* dx (H, W) = gradient of max pooling from dy, am (P, Q); returns the number
 * of indices outside the plane. When P and Q divide H and W, the windows
 * are most likely the tiles (2x2 stride 2 on even sizes...): routed without
 * a scatter if every index lies in its tile, else scattered. */
static int64_t max_plane_backward(float *dx, const float *dy, const int32_t *am,
                                  const pool2d_shape *s)
{
    int64_t th = s->H / s->P, tw = s->W / s->Q;
    if (th * s->P == s->H && tw * s->Q == s->W) {
        int routed = tw == 2 ? route_tiles(dx, dy, am, s->P, s->Q, th, 2)
                             : route_tiles(dx, dy, am, s->P, s->Q, th, tw);
        if (routed)
            return 0;
    }
    return scatter_plane(dx, dy, am, s->H * s->W, s->P * s->Q);
}

/* The pool2d family's loops of one instruction set (pool2d_kernel.h). */
struct pool2d_kernels {
    /* y, am (P, Q) = the 2x2 forward tile loop over x (2P, W) */
    void (*max_tiles_2x2)(float *y, int32_t *am, const float *x, int64_t W, int64_t P,
                          int64_t Q);
    /* y (P, Q) = the same without the indices (inference) */
    void (*max_values_2x2)(float *y, const float *x, int64_t W, int64_t P, int64_t Q);
    /* dx (2P, 2Q) = dy (P, Q) routed to am's positions in their tiles (and
     * masked); returns the hits */
    int64_t (*route_tiles_2x2)(float *dx, const float *dy, const int32_t *am, const float *mask,
                               int64_t P, int64_t Q);
    /* the same for at most ROUTE_SMALL_TILES tiles, dx flat through tile_of
     * (or NULL: route_tiles_2x2 for every plane) */
    int64_t (*route_small_2x2)(float *dx, const float *dy, const int32_t *am, const float *mask,
                               const int32_t *tile_of, int64_t P, int64_t Q);
    /* y (.., Q) = one output row's interior columns [qa, qb), values only,
     * any window (max_values_row's arguments) */
    void (*max_values_row)(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                           int64_t dh, int64_t qa, int64_t qb, int S, int64_t sw, int64_t dw,
                           int64_t pw);
    /* y (.., Q) = one output row's interior columns [qa, qb) of an average
     * (avg_values_row's arguments) */
    void (*avg_values_row)(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                           int64_t qa, int64_t qb, int S, int64_t sw, int64_t pw, float n);
    /* y, am (.., Q) = one output row's interior columns [qa, qb), values and
     * indices, of 3-wide windows at stride 2, undilated (max_cols_s2's) */
    void (*max_indexed_3s2)(float *y, int32_t *am, const float *x, int64_t W, int64_t h0,
                            int64_t h1, int64_t dh, int64_t qa, int64_t qb, int64_t pw);
};

static void max_tiles_2x2_generic(float *y, int32_t *am, const float *x, int64_t W, int64_t P,
                                  int64_t Q)
{
    max_tiles_2x2(y, am, x, W, P, Q);
}

static void max_values_2x2_generic(float *y, const float *x, int64_t W, int64_t P, int64_t Q)
{
    max_values_2x2(y, x, W, P, Q);
}

static int64_t route_tiles_2x2_generic(float *dx, const float *dy, const int32_t *am,
                                       const float *mask, int64_t P, int64_t Q)
{
    return route_tiles_2x2(dx, dy, am, mask, P, Q);
}

static void max_values_row_generic(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                                   int64_t dh, int64_t qa, int64_t qb, int S, int64_t sw,
                                   int64_t dw, int64_t pw)
{
    max_values_row(y, x, W, h0, h1, dh, qa, qb, S, sw, dw, pw);
}

static void avg_values_row_generic(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                                   int64_t qa, int64_t qb, int S, int64_t sw, int64_t pw, float n)
{
    avg_values_row(y, x, W, h0, h1, qa, qb, S, sw, pw, n);
}

static void max_indexed_3s2_generic(float *y, int32_t *am, const float *x, int64_t W,
                                    int64_t h0, int64_t h1, int64_t dh, int64_t qa, int64_t qb,
                                    int64_t pw)
{
    if (dh == 1)
        max_cols_s2(y, am, x, W, h0, h1, qa, qb, 3, pw);
    else
        max_cols(y, am, x, W, h0, h1, dh, qa, qb, 3, 2, 1, pw);
}

static const pool2d_kernels pool2d_kernels_generic = {
    max_tiles_2x2_generic, max_values_2x2_generic, route_tiles_2x2_generic, NULL,
    max_values_row_generic, avg_values_row_generic, max_indexed_3s2_generic};
#ifdef FASTCNN_X86_KERNELS
static const pool2d_kernels pool2d_kernels_avx2 = {max_tiles_2x2_avx2, max_values_2x2_avx2,
                                                   route_tiles_2x2_avx2, NULL,
                                                   max_values_row_avx2,
                                                   avg_values_row_avx2, max_indexed_3s2_avx2};
static const pool2d_kernels pool2d_kernels_avx512 = {max_tiles_2x2_avx512, max_values_2x2_avx512,
                                                     route_tiles_2x2_avx512,
                                                     route_small_2x2_avx512,
                                                     max_values_row_avx512,
                                                     avg_values_row_avx512,
                                                     max_indexed_3s2_avx512};
#endif

static const pool2d_kernels *pool2d_kernels_for(int isa)
{
    return FASTCNN_KERNELS_FOR(isa, pool2d_kernels);
}

/* 2x2 windows at stride 2 without padding or dilation, all inside the plane:
 * its tiles (floor mode drops an odd last row or column; ceil mode keeps a
 * clipped one, which the tiles do not cover). */
static int is_tiles(const pool2d_shape *s)
{
    return s->R == 2 && s->S == 2 && s->sh == 2 && s->sw == 2 && s->ph == 0 && s->pw == 0
        && s->dh == 1 && s->dw == 1 && 2 * s->P <= s->H && 2 * s->Q <= s->W;
}

/* ---- fast kernels ---------------------------------------------------------- */

/* y, am (P, Q) = max pooling of the plane x (H, W): the border columns
 * window by window, the interior row by row (3-wide windows at stride 2,
 * ResNet's, through the ISA's loop in k). */
static void max_plane(float *y, int32_t *am, const float *x, const pool2d_shape *s,
                      const pool2d_kernels *k)
{
    int64_t qa, qb;
    interior_cols(s, &qa, &qb);
    for (int64_t p = 0; p < s->P; p++) {
        int64_t h0 = row_lo(s, p), h1 = row_hi(s, p);
        float *yr = y + p * s->Q;
        int32_t *ar = am + p * s->Q;
        for (int64_t q = 0; q < s->Q; q++) {
            if (q == qa)
                q = qb;
            if (q < s->Q)
                max_window(&yr[q], &ar[q], x, s->W, h0, h1, s->dh, col_lo(s, q), col_hi(s, q),
                           s->dw);
        }
        if (s->S == 3 && s->sw == 2 && s->dw == 1)
            k->max_indexed_3s2(yr, ar, x, s->W, h0, h1, s->dh, qa, qb, s->pw);
        else if (s->S == 2 && s->sw == 2 && s->dw == 1 && s->dh == 1)
            max_cols_s2(yr, ar, x, s->W, h0, h1, qa, qb, 2, s->pw);
        else if (s->S == 3 && s->sw == 1 && s->dw == 1)
            max_cols(yr, ar, x, s->W, h0, h1, s->dh, qa, qb, 3, 1, 1, s->pw);
        else if (s->dw == 1)
            max_cols(yr, ar, x, s->W, h0, h1, s->dh, qa, qb, s->S, s->sw, 1, s->pw);
        else
            max_cols(yr, ar, x, s->W, h0, h1, s->dh, qa, qb, s->S, s->sw, s->dw, s->pw);
    }
}

/* Plane nc of maxpool2d_forward on the ISA's loops k: the 2x2 tile loop
 * when the windows are the tiles (is_tiles), else max_plane. */
static inline void max_forward_plane(float *y, int32_t *argmax, const float *x,
                                     const pool2d_shape *s, int64_t nc, const pool2d_kernels *k)
{
    int64_t HW = s->H * s->W, PQ = s->P * s->Q;
    if (is_tiles(s))
        k->max_tiles_2x2(y + nc * PQ, argmax + nc * PQ, x + nc * HW, s->W, s->P, s->Q);
    else
        max_plane(y + nc * PQ, argmax + nc * PQ, x + nc * HW, s, k);
}

/* One forward call of a pooling over planes, for fastcnn_parallel_for. */
typedef struct {
    float *y;
    int32_t *argmax;
    const float *x;
    const pool2d_shape *s;
    const pool2d_kernels *k;    /* the ISA's loops */
    int flag;                   /* avgpool2d_forward: count_include_pad; values only: tiles */
} plane_call;

static void max_forward_chunk(void *ctx, int64_t nc, int slot)
{
    const plane_call *c = ctx;
    (void)slot;
    max_forward_plane(c->y, c->argmax, c->x, c->s, nc, c->k);
}

/* y, argmax (N,C,P,Q); x (N,C,H,W) */
void maxpool2d_forward(float *y, int32_t *argmax, const float *x, const pool2d_shape *s,
                       int nthreads)
{
    int nt = fastcnn_threads_for(s->N * s->C * s->H * s->W, nthreads);
    plane_call c = {y, argmax, x, s, pool2d_kernels_for(fastcnn_isa()), 0};
    /* each plane nc writes only its own y and argmax plane */
    fastcnn_parallel_for(s->N * s->C, max_forward_chunk, &c, nt);
}

/* y (P, Q) = max pooling of the plane x (H, W), values only: the border
 * columns window by window, the interior through the ISA's row loop. */
static void max_values_plane(float *y, const float *x, const pool2d_shape *s,
                             const pool2d_kernels *k)
{
    int64_t qa, qb;
    int32_t unused;
    interior_cols(s, &qa, &qb);
    for (int64_t p = 0; p < s->P; p++) {
        int64_t h0 = row_lo(s, p), h1 = row_hi(s, p);
        float *yr = y + p * s->Q;
        for (int64_t q = 0; q < s->Q; q++) {
            if (q == qa)
                q = qb;
            if (q < s->Q)
                max_window(&yr[q], &unused, x, s->W, h0, h1, s->dh, col_lo(s, q), col_hi(s, q),
                           s->dw);
        }
        if (qa < qb)
            k->max_values_row(yr, x, s->W, h0, h1, s->dh, qa, qb, (int)s->S, s->sw, s->dw,
                              s->pw);
    }
}

static void max_values_chunk(void *ctx, int64_t nc, int slot)
{
    const plane_call *c = ctx;
    const pool2d_shape *s = c->s;
    int64_t HW = s->H * s->W, PQ = s->P * s->Q;
    (void)slot;
    if (c->flag)
        c->k->max_values_2x2(c->y + nc * PQ, c->x + nc * HW, s->W, s->P, s->Q);
    else
        max_values_plane(c->y + nc * PQ, c->x + nc * HW, s, c->k);
}

void maxpool2d_forward_inference(float *y, const float *x, const pool2d_shape *s, int nthreads)
{
    plane_call c = {y, NULL, x, s, pool2d_kernels_for(fastcnn_isa()), is_tiles(s)};
    int nt = fastcnn_threads_for(s->N * s->C * s->H * s->W, nthreads);
    /* each plane nc writes only its own y plane */
    fastcnn_parallel_for(s->N * s->C, max_values_chunk, &c, nt);
}

typedef struct {
    float *dx;
    const float *dy, *mask;
    const int32_t *argmax;
    const pool2d_shape *s;
    int tiles;
    const int32_t *tile_of;     /* tiles of a small plane: each dx float's (or NULL) */
    atomic_llong bad;
} max_backward_call;

/* Plane nc of max_backward; returns its number of skipped indices. */
static inline int64_t max_backward_plane(const max_backward_call *c, int64_t nc)
{
    const pool2d_shape *s = c->s;
    const pool2d_kernels *k = pool2d_kernels_for(fastcnn_isa());
    int64_t HW = s->H * s->W, PQ = s->P * s->Q, bad = 0;
    float *d = c->dx + nc * HW;
    const float *dy = c->dy + nc * PQ, *m = c->mask ? c->mask + nc * HW : NULL;
    const int32_t *am = c->argmax + nc * PQ;
    if (!c->tiles)
        bad = max_plane_backward(d, dy, am, s);
    else if ((c->tile_of ? k->route_small_2x2(d, dy, am, m, c->tile_of, s->P, s->Q)
                         : k->route_tiles_2x2(d, dy, am, m, s->P, s->Q)) == PQ)
        return 0;
    else    /* an index outside its tile (overlapping windows...): scatter */
        bad = scatter_plane(d, dy, am, HW, PQ);
    if (m)
        for (int64_t i = 0; i < HW; i++) {
            float v = d[i];  /* loaded unconditionally: a select, not a branch */
            d[i] = m[i] > 0.0f ? v : 0.0f;
        }
    return bad;
}

static void max_backward_chunk(void *ctx, int64_t nc, int slot)
{
    max_backward_call *c = ctx;
    int64_t bad = max_backward_plane(c, nc);
    (void)slot;
    if (bad)
        atomic_fetch_add(&c->bad, bad);
}

/* dx (N,C,H,W) = dy (N,C,P,Q) scattered to argmax (N,C,P,Q), then masked by
 * mask (N,C,H,W) > 0 when mask is not NULL, plane by plane. Returns the number
 * of indices outside [0, H*W) (skipped). */
static int64_t max_backward(float *dx, const float *dy, const int32_t *argmax, const float *mask,
                            const pool2d_shape *s, int nthreads)
{
    int nt = fastcnn_threads_for(s->N * s->C * s->H * s->W, nthreads);
    /* the gradient of 2x2 tiles (whatever the windows were: an index outside
     * its tile sends the plane to the general path) */
    int tiles = s->H == 2 * s->P && s->W == 2 * s->Q;
    int32_t tile_of[4 * ROUTE_SMALL_TILES];
    int small = tiles && s->P * s->Q <= ROUTE_SMALL_TILES
             && pool2d_kernels_for(fastcnn_isa())->route_small_2x2;
    for (int64_t i = 0; small && i < s->H * s->W; i++)
        tile_of[i] = (int32_t)(i / s->W / 2 * s->Q + i % s->W / 2);
    max_backward_call c = {dx, dy, mask, argmax, s, tiles, small ? tile_of : NULL, 0};
    /* each plane nc writes only its own dx plane */
    fastcnn_parallel_for(s->N * s->C, max_backward_chunk, &c, nt);
    return atomic_load(&c.bad);
}

/* dx (N,C,H,W); dy, argmax (N,C,P,Q). Indices outside [0, H*W) are skipped
 * and counted: returns their number. */
int64_t maxpool2d_backward(float *dx, const float *dy, const int32_t *argmax,
                           const pool2d_shape *s, int nthreads)
{
    return max_backward(dx, dy, argmax, NULL, s, nthreads);
}

/* dx (N,C,H,W) = relu_backward(maxpool2d_backward(dy), y): the gradient at the
 * input of a ReLU whose output y (N,C,H,W) was the pooling's input; dy, argmax
 * (N,C,P,Q). Returns the number of skipped indices, as maxpool2d_backward. */
int64_t maxpool2d_relu_backward(float *dx, const float *dy, const int32_t *argmax, const float *y,
                                const pool2d_shape *s, int nthreads)
{
    return max_backward(dx, dy, argmax, y, s, nthreads);
}

/* y (P, Q) = average pooling of the plane x (H, W). */
static void avg_plane(float *y, const float *x, const pool2d_shape *s, int count_include_pad,
                      const pool2d_kernels *k)
{
    int64_t qa, qb;
    interior_cols(s, &qa, &qb);
    for (int64_t p = 0; p < s->P; p++) {
        int64_t h0 = avg_row_lo(s, p), h1 = avg_row_hi(s, p);
        int64_t rows = row_count(s, p, count_include_pad);
        float *yr = y + p * s->Q;
        for (int64_t q = 0; q < s->Q; q++) {
            if (q == qa)
                q = qb;
            if (q < s->Q) {
                int64_t n = rows * col_count(s, q, count_include_pad);
                yr[q] = sum_window(x, s->W, h0, h1, avg_col_lo(s, q), avg_col_hi(s, q)) / (float)n;
            }
        }
        k->avg_values_row(yr, x, s->W, h0, h1, qa, qb, (int)s->S, s->sw, s->pw,
                          (float)(rows * s->S));
    }
}

static void avg_forward_chunk(void *ctx, int64_t nc, int slot)
{
    const plane_call *c = ctx;
    int64_t HW = c->s->H * c->s->W, PQ = c->s->P * c->s->Q;
    (void)slot;
    avg_plane(c->y + nc * PQ, c->x + nc * HW, c->s, c->flag, c->k);
}

/* One window covering each whole plane, no padding (global average pooling). */
static int global_window(const pool2d_shape *s)
{
    return s->P == 1 && s->Q == 1 && s->R == s->H && s->S == s->W && s->ph == 0 && s->pw == 0;
}

/* The mean of x[0 .. n), summed in 8 interleaved partial sums (which the
 * compiler keeps in vectors), the tail into the first ones. Scalars, not an
 * array: on planes of a few floats (a 1x1 map's global pooling) an array's
 * scalar stores, reloaded as a vector, stalled each call (11 ns a plane). */
static float plane_mean(const float *x, int64_t n)
{
    float p0 = 0.0f, p1 = 0.0f, p2 = 0.0f, p3 = 0.0f, p4 = 0.0f, p5 = 0.0f, p6 = 0.0f,
          p7 = 0.0f;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        p0 += x[i], p1 += x[i + 1], p2 += x[i + 2], p3 += x[i + 3];
        p4 += x[i + 4], p5 += x[i + 5], p6 += x[i + 6], p7 += x[i + 7];
    }
    switch (n - i) {    /* the tail (falls through) */
    case 7: p6 += x[i + 6]; /* fall through */
    case 6: p5 += x[i + 5]; /* fall through */
    case 5: p4 += x[i + 4]; /* fall through */
    case 4: p3 += x[i + 3]; /* fall through */
    case 3: p2 += x[i + 2]; /* fall through */
    case 2: p1 += x[i + 1]; /* fall through */
    case 1: p0 += x[i];
    }
    p0 += p4, p1 += p5, p2 += p6, p3 += p7;
    return ((p0 + p2) + (p1 + p3)) / (float)n;
}

/* Planes per work item of the global average (a plane is a few dozen floats). */
#define GLOBAL_PLANES 64

static void global_avg_chunk(void *ctx, int64_t it, int slot)
{
    const plane_call *c = ctx;
    int64_t HW = c->s->H * c->s->W, planes = c->s->N * c->s->C;
    int64_t end = (it + 1) * GLOBAL_PLANES < planes ? (it + 1) * GLOBAL_PLANES : planes;
    (void)slot;
    for (int64_t nc = it * GLOBAL_PLANES; nc < end; nc++)
        c->y[nc] = plane_mean(c->x + nc * HW, HW);
}

/* y (N,C,P,Q); x (N,C,H,W) */
void avgpool2d_forward(float *y, const float *x, const pool2d_shape *s, int count_include_pad,
                       int nthreads)
{
    plane_call c = {y, NULL, x, s, pool2d_kernels_for(fastcnn_isa()), count_include_pad};
    if (global_window(s)) {
        int nt = fastcnn_threads_for(s->N * s->C * s->H * s->W, nthreads);
        /* each item writes its own planes' means */
        fastcnn_parallel_for((s->N * s->C + GLOBAL_PLANES - 1) / GLOBAL_PLANES, global_avg_chunk,
                             &c, nt);
        return;
    }
    int nt = fastcnn_threads_for(s->N * s->C * s->H * s->W, nthreads);
    /* each plane nc writes only its own y plane */
    fastcnn_parallel_for(s->N * s->C, avg_forward_chunk, &c, nt);
}

/* dx (N,C,H,W); dy (N,C,P,Q). Returns FASTCNN_OK or FASTCNN_ENOMEM. */
typedef struct {
    float *dx;
    const float *dy, *cols;
    float *scratch;         /* per slot: its g and c */
    int64_t per_slot;
    const pool2d_shape *s;
    int count_include_pad;
} avg_backward_call;

static void avg_backward_chunk(void *ctx, int64_t nc, int slot)
{
    const avg_backward_call *c = ctx;
    const pool2d_shape *s = c->s;
    float *g = c->scratch + slot * c->per_slot;
    avg_plane_backward(c->dx + nc * s->H * s->W, c->dy + nc * s->P * s->Q, s, c->cols, g,
                       g + s->Q, c->count_include_pad);
}

/* The global average's gradient: each of a chunk's GLOBAL_PLANES planes
 * dy / (H W) everywhere (+ 0.0f: a -0 gives +0, as the spread does). */
static void global_avg_backward_chunk(void *ctx, int64_t it, int slot)
{
    const avg_backward_call *c = ctx;
    int64_t HW = c->s->H * c->s->W, planes = c->s->N * c->s->C;
    int64_t end = (it + 1) * GLOBAL_PLANES < planes ? (it + 1) * GLOBAL_PLANES : planes;
    (void)slot;
    for (int64_t nc = it * GLOBAL_PLANES; nc < end; nc++) {
        float g = c->dy[nc] / (float)HW + 0.0f;
        for (int64_t i = 0; i < HW; i++)
            c->dx[nc * HW + i] = g;
    }
}

int avgpool2d_backward(float *dx, const float *dy, const pool2d_shape *s, int count_include_pad,
                       int nthreads)
{
    if (global_window(s)) {
        avg_backward_call c = {dx, dy, NULL, NULL, 0, s, count_include_pad};
        /* each item writes its own planes */
        fastcnn_parallel_for((s->N * s->C + GLOBAL_PLANES - 1) / GLOBAL_PLANES,
                             global_avg_backward_chunk, &c,
                             fastcnn_threads_for(s->N * s->C * s->H * s->W, nthreads));
        return FASTCNN_OK;
    }
    /* cols, then each slot's g and ring of spread rows c, each on its own
     * cache lines */
    int64_t lead = (s->Q + 15) / 16 * 16;
    int64_t per_slot = (s->Q + avg_ring_rows(s) * ((s->Q - 1) * s->sw + s->S) + 15) / 16 * 16;
    int nt = fastcnn_threads_for(s->N * s->C * s->H * s->W, nthreads);
    float *cols = fastcnn_alloc((lead + nt * per_slot) * (int64_t)sizeof(float));
    if (cols == NULL)
        return FASTCNN_ENOMEM;
    for (int64_t q = 0; q < s->Q; q++)
        cols[q] = (float)col_count(s, q, count_include_pad);
    avg_backward_call c = {dx, dy, cols, cols + lead, per_slot, s, count_include_pad};
    /* each plane nc writes only its own dx plane and its slot's g and c */
    fastcnn_parallel_for(s->N * s->C, avg_backward_chunk, &c, nt);
    fastcnn_free(cols);
    return FASTCNN_OK;
}

/* ---- adaptive pooling ------------------------------------------------------ */

/* Output o's window along an axis of n inputs and `out` outputs (PyTorch's
 * adaptive pooling): [floor(o n / out), ceil((o + 1) n / out)), never empty. */
static inline int64_t adaptive_lo(int64_t o, int64_t n, int64_t out) { return o * n / out; }
static inline int64_t adaptive_hi(int64_t o, int64_t n, int64_t out)
{
    return ((o + 1) * n + out - 1) / out;
}

/* y, am (P, Q) = max over the adaptive windows of the plane x (H, W). */
static void adaptive_max_plane(float *y, int32_t *am, const float *x, const pool2d_shape *s)
{
    for (int64_t p = 0; p < s->P; p++)
        for (int64_t q = 0; q < s->Q; q++)
            max_window(&y[p * s->Q + q], &am[p * s->Q + q], x, s->W,
                       adaptive_lo(p, s->H, s->P), adaptive_hi(p, s->H, s->P), 1,
                       adaptive_lo(q, s->W, s->Q), adaptive_hi(q, s->W, s->Q), 1);
}

/* y (P, Q) = mean over the adaptive windows of the plane x (H, W). */
static void adaptive_avg_plane(float *y, const float *x, const pool2d_shape *s)
{
    for (int64_t p = 0; p < s->P; p++) {
        int64_t h0 = adaptive_lo(p, s->H, s->P), h1 = adaptive_hi(p, s->H, s->P);
        for (int64_t q = 0; q < s->Q; q++) {
            int64_t w0 = adaptive_lo(q, s->W, s->Q), w1 = adaptive_hi(q, s->W, s->Q);
            y[p * s->Q + q] = sum_window(x, s->W, h0, h1, w0, w1) / (float)((h1 - h0) * (w1 - w0));
        }
    }
}

/* dx (H, W) = gradient of adaptive_avg_plane from dy (P, Q). */
static void adaptive_avg_plane_backward(float *dx, const float *dy, const pool2d_shape *s)
{
    memset(dx, 0, (size_t)(s->H * s->W) * sizeof(float));
    for (int64_t p = 0; p < s->P; p++) {
        int64_t h0 = adaptive_lo(p, s->H, s->P), h1 = adaptive_hi(p, s->H, s->P);
        for (int64_t q = 0; q < s->Q; q++) {
            int64_t w0 = adaptive_lo(q, s->W, s->Q), w1 = adaptive_hi(q, s->W, s->Q);
            add_window(dx, dy[p * s->Q + q] / (float)((h1 - h0) * (w1 - w0)), s->W, h0, h1, w0,
                       w1);
        }
    }
}

/* One adaptive pooling pass, for fastcnn_parallel_for: work item i is
 * planes [i per, (i + 1) per), which write only their own output planes;
 * a 1x1 output (global pooling) is the plane's mean (plane_mean, as the
 * global window of avgpool2d_forward), its gradient spread evenly. */
typedef struct {
    float *out;                 /* y or dx */
    int32_t *argmax;            /* max forward: argmax; else NULL */
    const float *in;            /* x or dy */
    const pool2d_shape *s;
    int op;                     /* ADAPTIVE_MAX, ADAPTIVE_AVG, ADAPTIVE_AVG_BACKWARD */
    int64_t per;                /* planes per work item */
} adaptive_call;

enum { ADAPTIVE_MAX, ADAPTIVE_AVG, ADAPTIVE_AVG_BACKWARD };

/* x[0 .. n) = v */
static void fill_plane(float *x, float v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = v;
}

/* Floats (of the larger side) per work item of an adaptive pooling: planes
 * of a few floats (ResNet's 1x1 maps into its global pooling) are grouped,
 * a work item per plane cost more than the plane (64x512x1x1: 240 us, torch
 * 20). */
#define ADAPTIVE_ITEM_FLOATS 4096

static void adaptive_planes(void *ctx, int64_t it, int slot)
{
    const adaptive_call *a = ctx;
    const pool2d_shape *s = a->s;
    int64_t HW = s->H * s->W, PQ = s->P * s->Q, planes = s->N * s->C;
    int64_t end = (it + 1) * a->per < planes ? (it + 1) * a->per : planes;
    (void)slot;
    for (int64_t nc = it * a->per; nc < end; nc++) {
        if (s->P == 1 && s->Q == 1 && a->op == ADAPTIVE_AVG)
            a->out[nc] = plane_mean(a->in + nc * HW, HW);
        else if (s->P == 1 && s->Q == 1 && a->op == ADAPTIVE_AVG_BACKWARD)
            fill_plane(a->out + nc * HW, a->in[nc] / (float)HW, HW);
        else if (a->op == ADAPTIVE_MAX)
            adaptive_max_plane(a->out + nc * PQ, a->argmax + nc * PQ, a->in + nc * HW, s);
        else if (a->op == ADAPTIVE_AVG)
            adaptive_avg_plane(a->out + nc * PQ, a->in + nc * HW, s);
        else
            adaptive_avg_plane_backward(a->out + nc * HW, a->in + nc * PQ, s);
    }
}

/* The planes of a on the pool, grouped into work items of about
 * ADAPTIVE_ITEM_FLOATS floats. */
static void adaptive_run(adaptive_call *a, int nthreads)
{
    const pool2d_shape *s = a->s;
    int64_t HW = s->H * s->W, PQ = s->P * s->Q, side = HW > PQ ? HW : PQ;
    a->per = side >= ADAPTIVE_ITEM_FLOATS ? 1 : ADAPTIVE_ITEM_FLOATS / (side > 0 ? side : 1);
    /* each work item writes its own output planes */
    fastcnn_parallel_for((s->N * s->C + a->per - 1) / a->per, adaptive_planes, a,
                         fastcnn_threads_for(s->N * s->C * side, nthreads));
}

/* y, argmax (N,C,P,Q); x (N,C,H,W). Only N, C, H, W, P, Q of s are used. */
void adaptive_maxpool2d_forward(float *y, int32_t *argmax, const float *x, const pool2d_shape *s,
                                int nthreads)
{
    adaptive_call a = {y, argmax, x, s, ADAPTIVE_MAX, 0};
    adaptive_run(&a, nthreads);
}

/* y (N,C,P,Q); x (N,C,H,W) */
void adaptive_avgpool2d_forward(float *y, const float *x, const pool2d_shape *s, int nthreads)
{
    adaptive_call a = {y, NULL, x, s, ADAPTIVE_AVG, 0};
    adaptive_run(&a, nthreads);
}

/* dx (N,C,H,W); dy (N,C,P,Q) */
void adaptive_avgpool2d_backward(float *dx, const float *dy, const pool2d_shape *s, int nthreads)
{
    adaptive_call a = {dx, NULL, dy, s, ADAPTIVE_AVG_BACKWARD, 0};
    adaptive_run(&a, nthreads);
}

/* y (N,C,P,Q); x (N,C,H,W): adaptive_avgpool2d_forward's twin, sums in double. */
void adaptive_avgpool2d_forward_ref(float *y, const float *x, const pool2d_shape *s)
{
    for (int64_t nc = 0; nc < s->N * s->C; nc++)
        for (int64_t p = 0; p < s->P; p++)
            for (int64_t q = 0; q < s->Q; q++) {
                int64_t h0 = adaptive_lo(p, s->H, s->P), h1 = adaptive_hi(p, s->H, s->P);
                int64_t w0 = adaptive_lo(q, s->W, s->Q), w1 = adaptive_hi(q, s->W, s->Q);
                double acc = 0.0;
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++)
                        acc += x[(nc * s->H + h) * s->W + w];
                y[(nc * s->P + p) * s->Q + q] = (float)(acc / (double)((h1 - h0) * (w1 - w0)));
            }
}

/* dx (N,C,H,W); dy (N,C,P,Q): adaptive_avgpool2d_backward's twin, in double. */
void adaptive_avgpool2d_backward_ref(float *dx, const float *dy, const pool2d_shape *s)
{
    for (int64_t nc = 0; nc < s->N * s->C; nc++)
        for (int64_t h = 0; h < s->H; h++)
            for (int64_t w = 0; w < s->W; w++) {
                double acc = 0.0;  /* the windows covering (h, w), in output order */
                for (int64_t p = 0; p < s->P; p++)
                    for (int64_t q = 0; q < s->Q; q++) {
                        int64_t h0 = adaptive_lo(p, s->H, s->P), h1 = adaptive_hi(p, s->H, s->P);
                        int64_t w0 = adaptive_lo(q, s->W, s->Q), w1 = adaptive_hi(q, s->W, s->Q);
                        if (h0 <= h && h < h1 && w0 <= w && w < w1)
                            acc += (double)dy[(nc * s->P + p) * s->Q + q]
                                 / (double)((h1 - h0) * (w1 - w0));
                    }
                dx[(nc * s->H + h) * s->W + w] = (float)acc;
            }
}

/* y, argmax (N,C,P,Q); x (N,C,H,W): adaptive_maxpool2d_forward's twin, serial. */
void adaptive_maxpool2d_forward_ref(float *y, int32_t *argmax, const float *x,
                                    const pool2d_shape *s)
{
    int64_t HW = s->H * s->W, PQ = s->P * s->Q;
    for (int64_t nc = 0; nc < s->N * s->C; nc++)
        for (int64_t k = 0; k < PQ; k++) {
            int64_t p = k / s->Q, q = k % s->Q;
            max_window(&y[nc * PQ + k], &argmax[nc * PQ + k], x + nc * HW, s->W,
                       adaptive_lo(p, s->H, s->P), adaptive_hi(p, s->H, s->P), 1,
                       adaptive_lo(q, s->W, s->Q), adaptive_hi(q, s->W, s->Q), 1);
        }
}
