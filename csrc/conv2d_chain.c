/* conv2d_chain.c - an inverted-residual chain at inference, by row strips:
 *
 *   x (N, C, H, W) -> expand 1x1 -> depthwise -> [project 1x1] -> y
 *
 * Run layer by layer at batch 1, the expanded tensor (MobileNetV2's first
 * blocks: 96 x 112 x 112, 4.8 MB) is written to L3 or memory by the
 * expansion and read back by the depthwise convolution. Here the output
 * rows are cut into strips; for each, the expansion computes the rows the
 * depthwise convolution reads into a strip buffer of STRIP_FLOATS, the
 * depthwise convolution writes the strip's rows into a second one, and the
 * projection writes them into y: the expanded and depthwise tensors stay
 * in the core's caches instead of going through memory. Consecutive strips
 * share R - sh expanded rows, which are moved to the top of the buffer, not
 * computed again.
 *
 * The 1x1 links are GEMMs (sgemm) on the weights packed once (kept in the
 * link's prepared weights), the depthwise link is conv2d_depthwise_forward
 * on the strip with the padding rows written as zeros: each output is summed
 * as the GEMM and depthwise paths of the layers sum it (a 1x1 layer alone
 * may take another path: then they agree within rounding). Threads take
 * contiguous ranges of (image, strip) and run each link on one thread.
 */
#include <string.h>

#include "conv2d_internal.h"
#include "gemm.h"

/* Floats of the expanded rows one strip holds. Measured on Zen 5 (1 MiB
 * L2), frozen MobileNetV2 at batch 1, 1 thread, interleaved with
 * onnxruntime, ratio onnxruntime / fastcnn by strip size in KiB: 256 0.95,
 * 512 1.00, 1024 1.01, 2048 0.98 (layer by layer 0.96): smaller strips pay
 * the links' per-call costs more often, larger ones leave L2. */
#define STRIP_FLOATS (256 * 1024)

static int64_t strip_floats = STRIP_FLOATS;

int64_t conv2d_set_chain_strip_floats(int64_t floats)
{
    int64_t old = strip_floats;
    strip_floats = floats > 0 ? floats : STRIP_FLOATS;
    return old;
}

/* conv2d_prepare_fn of a 1x1 link's weights packed as a GEMM's A:
 * variant = the GEMM kernel's number */
static int prepare_packed(float *packed, const float *w, const conv2d_shape *s, int64_t kernel,
                          int nthreads)
{
    sgemm_pack_a(packed, (int)kernel, 0, s->K, s->C, w, s->C, nthreads);
    return FASTCNN_OK;
}

/* A 1x1 link's packed weights for kernel number `kernel`: kept in its
 * prepared weights, or packed into own (a scratch buffer) when they cannot
 * be kept there. */
static const float *packed_weights(const conv2d_link *l, int kernel, float *own)
{
    int64_t floats = sgemm_packed_a_floats(kernel, l->s.K, l->s.C);
    const float *kept = conv2d_prepared_get(l->prep, PREPARED_CHAIN, l->w, &l->s, kernel,
                                            floats, prepare_packed, 1);
    if (kept)
        return kept;
    prepare_packed(own, l->w, &l->s, kernel, 1);
    return own;
}

/* One call: the links, the strip geometry, per-slot buffers. */
typedef struct {
    float *y;
    const float *x;
    const conv2d_chain *ch;
    const float *pe, *pp;       /* packed expand and project weights (pp NULL: none) */
    int ke, kp;                 /* their GEMM kernels */
    int64_t rows;               /* output rows per strip */
    int64_t strips, ranges;     /* per image: strips, and ranges of them */
    int64_t ebuf, dbuf;         /* floats of a slot's expanded and depthwise buffers */
    float *scratch;
    int err;
} chain_call;

/* The depthwise link's channels (the expansion's output). */
static int64_t mid_channels(const conv2d_chain *ch)
{
    return ch->dw.s.C;
}

/* Rows [keep, rows) of the strip buffer e (mid, rows, W) = rows first + keep
 * .. first + rows of the expanded image n (zero outside 0 .. H). */
static void expand_rows(chain_call *c, float *e, int64_t n, int64_t first, int64_t keep,
                        int64_t rows)
{
    const conv2d_chain *ch = c->ch;
    int64_t H = ch->dw.s.H, W = ch->dw.s.W, mid = mid_channels(ch);
    int64_t v0 = first + keep > 0 ? first + keep : 0;
    int64_t v1 = first + rows < H ? first + rows : H;
    for (int64_t k = 0; k < mid; k++) {     /* the padding rows */
        float *plane = e + k * rows * W;
        for (int64_t r = keep; r < rows; r++)
            if (first + r < v0 || first + r >= v1)
                memset(plane + r * W, 0, (size_t)W * sizeof(float));
    }
    if (v1 <= v0)
        return;
    const conv2d_link *l = &ch->expand;
    float clamp[2] = {l->s.lo, l->s.hi};
    int err = sgemm_packed_bias_clamp(c->pe, c->ke, mid, (v1 - v0) * W, l->s.C,
                                      c->x + n * l->s.C * H * W + v0 * W, H * W,
                                      e + (v0 - first) * W, rows * W,
                                      l->b, l->s.clamp ? clamp : NULL, 1);
    if (err)
        __atomic_store_n(&c->err, err, __ATOMIC_RELAXED);
}

/* Output rows [r0, r1) of image n from the strip buffer d (mid, r1 - r0, Q):
 * projected into y, or copied. */
static void project_rows(chain_call *c, const float *d, int64_t n, int64_t r0, int64_t r1)
{
    const conv2d_chain *ch = c->ch;
    int64_t P = ch->dw.s.P, Q = ch->dw.s.Q, mid = mid_channels(ch), cols = (r1 - r0) * Q;
    if (!ch->has_project) {
        for (int64_t k = 0; k < mid; k++)
            memcpy(c->y + (n * mid + k) * P * Q + r0 * Q, d + k * cols,
                   (size_t)cols * sizeof(float));
        return;
    }
    const conv2d_link *l = &ch->project;
    float clamp[2] = {l->s.lo, l->s.hi};
    int err = sgemm_packed_bias_clamp(c->pp, c->kp, l->s.K, cols, mid, d, cols,
                                      c->y + n * l->s.K * P * Q + r0 * Q, P * Q, l->b,
                                      l->s.clamp ? clamp : NULL, 1);
    if (err)
        __atomic_store_n(&c->err, err, __ATOMIC_RELAXED);
}

/* Range it: strips [lo, hi) of one image, in the slot's buffers. */
static void chain_range(void *ctx, int64_t it, int slot)
{
    chain_call *c = ctx;
    const conv2d_shape *ds = &c->ch->dw.s;
    int64_t n = it / c->ranges, part = it % c->ranges;
    int64_t lo = c->strips * part / c->ranges, hi = c->strips * (part + 1) / c->ranges;
    int64_t W = ds->W, mid = mid_channels(c->ch);
    float *e = c->scratch + slot * (c->ebuf + c->dbuf), *d = e + c->ebuf;
    int64_t held = 0, held_rows = 0;    /* the last strip's first row and rows in e */
    for (int64_t i = lo; i < hi; i++) {
        int64_t r0 = i * c->rows, r1 = r0 + c->rows < ds->P ? r0 + c->rows : ds->P;
        int64_t first = r0 * ds->sh - ds->ph, rows = (r1 - 1 - r0) * ds->sh + ds->R;
        int64_t keep = 0;
        if (i > lo && held + held_rows > first) {   /* rows the last strip computed */
            keep = held + held_rows - first;
            for (int64_t k = 0; k < mid; k++)
                memmove(e + k * rows * W, e + (k * held_rows + first - held) * W,
                        (size_t)(keep * W) * sizeof(float));
        }
        expand_rows(c, e, n, first, keep, rows);
        conv2d_shape s = *ds;
        s.N = 1;
        s.H = rows;
        s.ph = 0;
        s.P = r1 - r0;
        if (conv2d_depthwise_forward(d, e, c->ch->dw.w, c->ch->dw.b, &s, 1))
            __atomic_store_n(&c->err, FASTCNN_ENOMEM, __ATOMIC_RELAXED);
        project_rows(c, d, n, r0, r1);
        held = first;
        held_rows = rows;
    }
}

/* Output rows per strip: as many as keep the expanded rows within
 * strip_floats (at least one). */
static int64_t strip_rows(const conv2d_shape *ds)
{
    int64_t fit = strip_floats / (ds->C * ds->W);
    int64_t rows = fit > ds->R ? (fit - ds->R) / ds->sh + 1 : 1;
    return rows < ds->P ? rows : ds->P;
}

int conv2d_chain_forward(float *y, const float *x, const conv2d_chain *ch, int nthreads)
{
    const conv2d_shape *ds = &ch->dw.s;
    chain_call c = {y, x, ch, NULL, NULL, 0, 0, strip_rows(ds), 0, 1, 0, 0, NULL, 0};
    c.strips = (ds->P + c.rows - 1) / c.rows;
    int64_t work = 2 * ds->N * ds->C * ds->H * ds->W * ch->expand.s.C;
    int nt = fastcnn_threads_for(work, nthreads);
    if (ds->N < nt)
        c.ranges = nt / ds->N < c.strips ? nt / ds->N : c.strips;
    int64_t items = ds->N * c.ranges;
    nt = nt < items ? nt : (int)items;
    int64_t max_rows = (c.rows - 1) * ds->sh + ds->R;
    c.ebuf = (ds->C * max_rows * ds->W + 15) / 16 * 16;
    c.dbuf = (ds->C * c.rows * ds->Q + 15) / 16 * 16;
    int64_t cols = c.rows * ds->Q;      /* the projection's columns per strip */
    c.ke = sgemm_packed_a_kernel(ch->expand.s.K, max_rows * ds->W);
    c.kp = ch->has_project ? sgemm_packed_a_kernel(ch->project.s.K, cols) : 0;
    int64_t fe = sgemm_packed_a_floats(c.ke, ch->expand.s.K, ch->expand.s.C);
    int64_t fp = ch->has_project ? sgemm_packed_a_floats(c.kp, ch->project.s.K, ds->C) : 0;
    c.scratch = conv2d_scratch_take(nt * (c.ebuf + c.dbuf) + fe + fp);
    if (!c.scratch)
        return FASTCNN_ENOMEM;
    float *own = c.scratch + nt * (c.ebuf + c.dbuf);
    c.pe = packed_weights(&ch->expand, c.ke, own);
    if (ch->has_project)
        c.pp = packed_weights(&ch->project, c.kp, own + fe);
    /* each range writes its own output rows */
    fastcnn_parallel_for(items, chain_range, &c, nt);
    conv2d_scratch_give(c.scratch);
    return c.err;
}
