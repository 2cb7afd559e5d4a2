/* conv2d_dense.c - the convolution of a map no larger than its kernel (H W
 * <= R S: ResNet's 2x2 maps under 3x3 kernels) as one GEMM over whole
 * images: each image's (C, H, W) values are a row, and the weights are
 * spread into the dense matrix wd (K P Q, C H W) that maps an image's input
 * to its output, zero where a tap reads padding (any stride, padding,
 * dilation). Its product, K P Q C H W per image, is at most im2col's K C R S
 * P Q (padding included), and the GEMMs read x, y, dx and dy in place:
 *   forward        y (N, K P Q) = x (N, C H W) wd^T, then bias and clamp;
 *   backward data  dx (N, C H W) = dy (N, K P Q) wd;
 *   backward weight dwd (K P Q, C H W) = dy^T x, folded back into dw.
 * A zero of wd times an infinite or NaN value gives NaN where the
 * convolution adds nothing (or, for the padding PyTorch reads as zeros,
 * where it gives NaN itself): conv2d.c runs the GEMM path instead unless
 * those values are finite (dense_usable). */
#include <string.h>

#include "conv2d_internal.h"
#include "gemm.h"

/* Most floats of wd (64 MiB): larger maps or more channels take other paths. */
#define DENSE_MAX_FLOATS ((int64_t)1 << 24)

int conv2d_dense_fits(const conv2d_shape *s)
{
    int64_t HW = s->H * s->W, PQ = s->P * s->Q;
    return s->G == 1 && HW <= s->R * s->S && s->K * PQ * s->C * HW <= DENSE_MAX_FLOATS;
}

/* in (R S, P Q) = the input position (row-major in H x W) tap (r, t) of
 * output (p, q) reads, or -1 for padding. */
static void tap_inputs(int64_t *in, const conv2d_shape *s)
{
    for (int64_t r = 0; r < s->R; r++)
        for (int64_t t = 0; t < s->S; t++)
            for (int64_t p = 0; p < s->P; p++)
                for (int64_t q = 0; q < s->Q; q++) {
                    int64_t ih = p * s->sh - s->ph + r * s->dh, iw = q * s->sw - s->pw + t * s->dw;
                    in[((r * s->S + t) * s->P + p) * s->Q + q] =
                        ih >= 0 && ih < s->H && iw >= 0 && iw < s->W ? ih * s->W + iw : -1;
                }
}

/* wd rows of output channel k from w (or, fold, dw's filters of k += dwd's rows). */
typedef struct {
    float *wd;
    float *w;               /* w (spread) or dw (fold, added to) */
    const int64_t *in;      /* tap_inputs */
    const conv2d_shape *s;
    int fold;
} spread_call;

static void spread_channel(void *ctx, int64_t k, int slot)
{
    const spread_call *c = ctx;
    const conv2d_shape *s = c->s;
    int64_t HW = s->H * s->W, PQ = s->P * s->Q, CHW = s->C * HW, RS = s->R * s->S;
    float *rows = c->wd + k * PQ * CHW, *wk = c->w + k * s->C * RS;
    (void)slot;
    if (!c->fold)
        memset(rows, 0, (size_t)(PQ * CHW) * sizeof(float));
    for (int64_t tap = 0; tap < RS; tap++)
        for (int64_t o = 0; o < PQ; o++) {
            int64_t i = c->in[tap * PQ + o];
            if (i < 0)
                continue;
            float *e = rows + o * CHW + i, *f = wk + tap;
            if (c->fold)
                for (int64_t ch = 0; ch < s->C; ch++) f[ch * RS] += e[ch * HW];
            else
                for (int64_t ch = 0; ch < s->C; ch++) e[ch * HW] = f[ch * RS];
        }
}

/* wd (K PQ, C HW) spread from w, or (fold) dw += wd gathered back per tap. */
static int spread(float *wd, float *w, const conv2d_shape *s, int fold, int nthreads)
{
    int64_t *in = fastcnn_alloc(s->R * s->S * s->P * s->Q * (int64_t)sizeof(int64_t));
    if (!in)
        return FASTCNN_ENOMEM;
    tap_inputs(in, s);
    spread_call c = {wd, w, in, s, fold};
    /* each output channel's rows of wd and filters of w by one work item */
    fastcnn_parallel_for(s->K, spread_channel, &c,
                         fastcnn_threads_for(s->K * s->P * s->Q * s->C * s->H * s->W,
                                             nthreads));
    fastcnn_free(in);
    return FASTCNN_OK;
}

static float *dense_weights(const float *w, const conv2d_shape *s, int nthreads)
{
    float *wd = conv2d_scratch_take(s->K * s->P * s->Q * s->C * s->H * s->W);
    if (wd && spread(wd, (float *)w, s, 0, nthreads) != FASTCNN_OK) {
        conv2d_scratch_give(wd);
        return NULL;
    }
    return wd;
}

/* y (N, K, PQ) += b[k], clamped if s->clamp. */
static void bias_clamp(float *y, const float *b, const conv2d_shape *s)
{
    int64_t PQ = s->P * s->Q;
    for (int64_t nk = 0; nk < s->N * s->K; nk++) {
        float add = b ? b[nk % s->K] : 0.0f, *row = y + nk * PQ;
        for (int64_t j = 0; j < PQ; j++) {
            float v = row[j] + add;
            if (s->clamp) {
                v = v < s->lo ? s->lo : v;
                v = v > s->hi ? s->hi : v;
            }
            row[j] = v;
        }
    }
}

int conv2d_dense_forward(float *y, const float *x, const float *w, const float *b,
                         const conv2d_shape *s, int nthreads)
{
    int64_t KPQ = s->K * s->P * s->Q, CHW = s->C * s->H * s->W;
    float *wd = dense_weights(w, s, nthreads);
    if (!wd)
        return FASTCNN_ENOMEM;
    int err = sgemm(0, 1, s->N, KPQ, CHW, 1.0f, x, CHW, wd, CHW, 0.0f, y, KPQ, nthreads);
    conv2d_scratch_give(wd);
    if (!err && (b || s->clamp))
        bias_clamp(y, b, s);
    return err;
}

int conv2d_dense_backward_data(float *dx, const float *dy, const float *w, const conv2d_shape *s,
                               int nthreads)
{
    int64_t KPQ = s->K * s->P * s->Q, CHW = s->C * s->H * s->W;
    float *wd = dense_weights(w, s, nthreads);
    if (!wd)
        return FASTCNN_ENOMEM;
    int err = sgemm(0, 0, s->N, CHW, KPQ, 1.0f, dy, KPQ, wd, CHW, 0.0f, dx, CHW, nthreads);
    conv2d_scratch_give(wd);
    return err;
}

int conv2d_dense_backward_weight(float *dw, const float *dy, const float *x,
                                 const conv2d_shape *s, int nthreads)
{
    int64_t KPQ = s->K * s->P * s->Q, CHW = s->C * s->H * s->W;
    float *dwd = conv2d_scratch_take(KPQ * CHW);
    if (!dwd)
        return FASTCNN_ENOMEM;
    int err = sgemm(1, 0, KPQ, CHW, s->N, 1.0f, dy, KPQ, x, CHW, 0.0f, dwd, CHW, nthreads);
    if (!err)
        err = spread(dwd, dw, s, 1, nthreads);
    conv2d_scratch_give(dwd);
    return err;
}
