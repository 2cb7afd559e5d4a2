/* conv2d_im2col.c - im2col and col2im of a group of images side by side
 * (the GEMM path's copies, conv2d_gemm.c), and the portable im2col and
 * col2im of one kernel tap (any stride; the per-ISA ones are in
 * conv2d_im2col_avx2.c / conv2d_im2col_avx512.c). */
#include <string.h>

#include "conv2d_internal.h"

/* out (P, Q), image i at out + i ostride, = the input plane xc (H, W) of
 * image i (at xc + i xstride) seen through the kernel tap at offset (r, t)
 * (the tap's index times the dilation), for i < cnt.
 * (No memcpy/memset calls for rows of a few floats: plain loops are faster.) */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void conv2d_im2col_tap_generic(float *restrict out, const float *restrict xc, int64_t cnt,
                               int64_t ostride, int64_t xstride, int64_t r, int64_t t,
                               const conv2d_shape *s)
{
    span ps = valid_span(r - s->ph, s->sh, s->H, s->P);
    span qs = valid_span(t - s->pw, s->sw, s->W, s->Q);
    if (qs.lo == qs.hi)
        ps.hi = ps.lo;  /* no tap column inside the input: the whole plane is zero */
    int64_t PQ = s->P * s->Q, sw = s->sw;
    for (int64_t i = 0; i < cnt; i++) {
        float *restrict o = out + i * ostride;
        for (int64_t j = 0; j < ps.lo * s->Q; j++) o[j] = 0.0f;
        for (int64_t p = ps.lo; p < ps.hi; p++) {
            float *restrict op = o + p * s->Q;
            const float *restrict xr = xc + i * xstride + (p * s->sh - s->ph + r) * s->W
                                     + t - s->pw;
            for (int64_t q = 0; q < qs.lo; q++) op[q] = 0.0f;
            if (sw == 1)
                for (int64_t q = qs.lo; q < qs.hi; q++) op[q] = xr[q];
            else
                for (int64_t q = qs.lo; q < qs.hi; q++) op[q] = xr[q * sw];
            for (int64_t q = qs.hi; q < s->Q; q++) op[q] = 0.0f;
        }
        for (int64_t j = ps.hi * s->Q; j < PQ; j++) o[j] = 0.0f;
    }
}

/* One im2col or col2im call, for fastcnn_parallel_for. */
typedef struct {
    float *out;             /* col (im2col) or dx (col2im) */
    const float *in;        /* x or col */
    int64_t cnt;
    const conv2d_shape *s;
    conv2d_im2col_tap_fn im2col;    /* the one in use, the other NULL */
    conv2d_col2im_tap_fn col2im;
    conv2d_col2im_channel_fn whole; /* col2im of whole channels (or NULL: tap by tap) */
    int64_t c0;                     /* col2im: dx's channel of col's first rows */
} cols_call;

/* Row (c, r, t) of col. */
static void im2col_row(void *ctx, int64_t row, int slot)
{
    const cols_call *k = ctx;
    const conv2d_shape *s = k->s;
    int64_t PQ = s->P * s->Q, c = row / (s->R * s->S), r = row / s->S % s->R, t = row % s->S;
    (void)slot;
    k->im2col(k->out + row * k->cnt * PQ, k->in + c * s->H * s->W, k->cnt, PQ,
              s->C * s->H * s->W, r * s->dh, t * s->dw, s);
}

/* col (CRS, cnt PQ) = the im2col matrices of cnt images x (cnt, C, H, W),
 * image i in columns [i PQ, (i+1) PQ). */
void conv2d_im2col(float *col, const float *x, int64_t cnt, const conv2d_shape *s,
                   int nthreads)
{
    int64_t rows = s->C * s->R * s->S;
    /* the instruction set's masked vector copies for stride 1, else plain loops */
    conv2d_im2col_tap_fn tap = s->sw == 1 ? conv2d_kernels_for(fastcnn_isa())->im2col_tap
                                          : conv2d_im2col_tap_generic;
    cols_call k = {col, x, cnt, s, tap, NULL, NULL, 0};
    /* each row (c, r, t) of col is written by one work item */
    fastcnn_parallel_for(rows, im2col_row, &k,
                         fastcnn_threads_for(rows * cnt * s->P * s->Q, nthreads));
}

/* For i < cnt: the plane dxc + i xstride (H, W) += the plane in + i istride
 * (P, Q) scattered back through the kernel tap at offset (r, t). */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void conv2d_col2im_tap_generic(float *restrict dxc, const float *restrict in, int64_t cnt,
                               int64_t xstride, int64_t istride, int64_t r, int64_t t,
                               const conv2d_shape *s)
{
    span ps = valid_span(r - s->ph, s->sh, s->H, s->P);
    span qs = valid_span(t - s->pw, s->sw, s->W, s->Q);
    if (qs.lo == qs.hi)
        return;
    int64_t sw = s->sw;
    for (int64_t i = 0; i < cnt; i++)
        for (int64_t p = ps.lo; p < ps.hi; p++) {
            const float *restrict ip = in + i * istride + p * s->Q;
            float *restrict dr = dxc + i * xstride + (p * s->sh - s->ph + r) * s->W
                               + t - s->pw;
            if (sw == 1)
                for (int64_t q = qs.lo; q < qs.hi; q++) dr[q] += ip[q];
            else
                for (int64_t q = qs.lo; q < qs.hi; q++) dr[q * sw] += ip[q];
        }
}

/* Channel c0 + j's planes of dx (in every image), from its rows of col. */
static void col2im_channel(void *ctx, int64_t j, int slot)
{
    const cols_call *k = ctx;
    const conv2d_shape *s = k->s;
    int64_t HW = s->H * s->W, PQ = s->P * s->Q, RS = s->R * s->S, CHW = s->C * HW;
    float *dxc = k->out + (k->c0 + j) * HW;
    const float *colc = k->in + j * RS * k->cnt * PQ;
    (void)slot;
    if (k->whole) {
        k->whole(dxc, colc, k->cnt, CHW, s);
        return;
    }
    for (int64_t i = 0; i < k->cnt; i++)
        memset(dxc + i * CHW, 0, (size_t)HW * sizeof(float));
    for (int64_t rt = 0; rt < RS; rt++)
        k->col2im(dxc, colc + rt * k->cnt * PQ, k->cnt, CHW, PQ,
                  rt / s->S * s->dh, rt % s->S * s->dw, s);
}

static int col2im_taps;     /* test hook: tap by tap only */

int conv2d_set_col2im_taps(int on)
{
    int old = col2im_taps;
    col2im_taps = on != 0;
    return old;
}

void conv2d_col2im(float *dx, const float *col, int64_t cnt, int64_t c0, int64_t nc,
                   const conv2d_shape *s, int nthreads)
{
    const conv2d_kernels *ks = conv2d_kernels_for(fastcnn_isa());
    /* whole channels at column stride 1 or 2, but planes of a vector or less
     * one tap at a time (a permute per image) */
    int fits = !col2im_taps && s->R <= CONV2D_COL2IM_MAX_R && s->S <= CONV2D_COL2IM_MAX_R;
    int small = s->H * s->W <= ks->vl && s->P * s->Q <= ks->vl;
    conv2d_col2im_channel_fn whole = !fits ? NULL : s->sw == 2 ? ks->col2im_s2
                                   : s->sw == 1 && !small ? ks->col2im_s1 : NULL;
    cols_call k = {dx, col, cnt, s, NULL, ks->col2im_tap, whole, c0};
    /* channel c owns its planes of dx (in every image) and reads only its rows of col */
    fastcnn_parallel_for(nc, col2im_channel, &k,
                         fastcnn_threads_for(cnt * nc * s->R * s->S * s->P * s->Q, nthreads));
}
