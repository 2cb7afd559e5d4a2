/* conv2d_depthwise.c - depthwise convolution (groups == C, K = m C: output
 * channel k = c m + j filters input channel c alone), forward, backward data
 * and weight gradient, any stride, padding and dilation. Threads split the
 * (image, channel) planes (the weight gradient: the channels); each thread
 * splits its plane into column phases and runs the row loops, both in its
 * instruction set's code (conv2d_depthwise_kernel.h); the forward of 3x3
 * filters at stride 1 or 2 along rows reads the plane itself. The forward
 * with m = 1 and C a multiple of the vector length may instead run in
 * channel vectors (a vector's worth of channels of one image per task,
 * transposed in and out), which wins on short rows and strides above 1:
 * timed against the row loops on its first call where the work allows,
 * else chosen by shape; the weight gradient then always runs in channel
 * vectors (a vector's worth of channels over every image per task).
 * Shapes: x (N, C, H, W), w (K, 1, R, S), y (N, K, P, Q); the forward
 * applies s->clamp (a fused hardtanh) as it stores. */
#include <stdlib.h>
#include <string.h>

#define DEPTHWISE_VBYTES 16
#include "conv2d_internal.h"
#include "conv2d_depthwise_kernel.h"

DEPTHWISE_DEFINE(generic)

typedef struct {
    depthwise_phases_fn phases;
    depthwise_forward_fn forward;
    depthwise_forward_fn forward_3x3;
    depthwise_backward_data_fn backward_data;
    depthwise_wgrad_fn wgrad;
    depthwise_vectors_fn vectors;
    depthwise_wgrad_vectors_fn wgrad_vectors;
    depthwise_backward_vectors_fn backward_vectors;
    int64_t vl;                 /* channels per vector of `vectors` */
    /* by shape, output rows up to these run in channel vectors: stride 1,
     * above 1, and 3x3 at stride 2 (whose row loops read the plane itself) */
    int64_t vectors_q1, vectors_q2, vectors_q2_3x3;
} depthwise_kernels;

static const depthwise_kernels depthwise_kernels_generic = {
    conv2d_depthwise_phases_generic, conv2d_depthwise_forward_generic,
    conv2d_depthwise_forward_3x3_generic, conv2d_depthwise_backward_data_generic,
    conv2d_depthwise_wgrad_generic, conv2d_depthwise_vectors_generic,
    conv2d_depthwise_wgrad_vectors_generic, conv2d_depthwise_backward_vectors_generic, 4, 6, 8, 4,
};
#ifdef FASTCNN_X86_KERNELS
static const depthwise_kernels depthwise_kernels_avx2 = {
    conv2d_depthwise_phases_avx2, conv2d_depthwise_forward_avx2,
    conv2d_depthwise_forward_3x3_avx2, conv2d_depthwise_backward_data_avx2,
    conv2d_depthwise_wgrad_avx2, conv2d_depthwise_vectors_avx2,
    conv2d_depthwise_wgrad_vectors_avx2, conv2d_depthwise_backward_vectors_avx2, 8, 56, 32, 28,
};
static const depthwise_kernels depthwise_kernels_avx512 = {
    conv2d_depthwise_phases_avx512, conv2d_depthwise_forward_avx512,
    conv2d_depthwise_forward_3x3_avx512, conv2d_depthwise_backward_data_avx512,
    conv2d_depthwise_wgrad_avx512, conv2d_depthwise_vectors_avx512,
    conv2d_depthwise_wgrad_vectors_avx512, conv2d_depthwise_backward_vectors_avx512, 16, 56, 32, 24,
};
#endif

static const depthwise_kernels *kernels(void)
{
    return FASTCNN_KERNELS_FOR(fastcnn_isa(), depthwise_kernels);
}

static int64_t round_up16(int64_t n)
{
    return (n + 15) & ~(int64_t)15;
}

/* Padded input columns a phase holds: those below sw + (S-1) dw + 1. */
static int64_t padded_width(const conv2d_shape *s)
{
    return (s->Q - 1) * s->sw + (s->S - 1) * s->dw + 1;
}

/* int64s make_geom fills: the taps' run offsets (S), the phases' spans (2 sw). */
static int64_t geom_ints(const conv2d_shape *s)
{
    return s->S + 2 * s->sw;
}

/* The geometry of s; ints (geom_ints) receives its offsets and spans. */
static depthwise_geom make_geom(const conv2d_shape *s, int64_t *ints)
{
    depthwise_geom g;
    int64_t *col_off = ints, *lo = ints + s->S, *hi = lo + s->sw;
    g.m = s->K / s->C;
    g.R = s->R, g.S = s->S, g.sh = s->sh, g.dh = s->dh, g.P = s->P, g.Q = s->Q;
    g.Hp = (s->P - 1) * s->sh + (s->R - 1) * s->dh + 1;
    int64_t Wp = padded_width(s);
    g.Wq = round_up16((Wp + s->sw - 1) / s->sw) + 16;
    for (int64_t t = 0; t < s->S; t++)
        col_off[t] = (t * s->dw % s->sw) * g.Hp * g.Wq + t * s->dw / s->sw;
    g.col_off = col_off;
    g.H = s->H, g.W = s->W, g.ph = s->ph, g.pw = s->pw, g.sw = s->sw;
    g.Wp = Wp, g.dil_w = s->dw;
    g.rows = s->H < g.Hp - s->ph ? s->H : g.Hp - s->ph;
    g.cols = s->W < Wp - s->pw ? s->W : Wp - s->pw;
    for (int64_t f = 0; f < s->sw; f++) {
        /* phase f's columns j whose padded column j sw + f is input column
         * j sw + f - pw in [0, cols); none when the padding covers all reads */
        span js = valid_span(f - s->pw, s->sw, g.cols > 0 ? g.cols : 0, INT64_MAX / 2);
        lo[f] = js.lo, hi[f] = js.hi;
    }
    g.phase_lo = lo, g.phase_hi = hi;
    g.clamp = s->clamp, g.lo = s->lo, g.hi = s->hi;
    return g;
}

/* dr (cols) = one input row's gradient from its two phase rows ph0, ph1:
 * input column c is padded column c + pw, phase (c + pw) mod 2, column
 * (c + pw) / 2 (dw_split_row2's inverse), in one pass. */
static void merge_row2(float *restrict dr, const float *restrict ph0,
                       const float *restrict ph1, int64_t cols, int64_t pw)
{
    const float *restrict even = (pw & 1 ? ph1 : ph0) + pw / 2;
    const float *restrict odd = (pw & 1 ? ph0 : ph1) + (pw + 1) / 2;
    int64_t k = 0;
    for (; 2 * k + 1 < cols; k++) {
        dr[2 * k] = even[k];
        dr[2 * k + 1] = odd[k];
    }
    if (2 * k < cols)
        dr[2 * k] = even[k];
}

/* dx (H, W) = the input positions of dxph (sw, Hp, Wq); zero where no
 * output reads them. */
static void from_phases(float *dx, const float *dxph, const conv2d_shape *s,
                        const depthwise_geom *g)
{
    const int64_t phase = g->Hp * g->Wq;
    if (g->cols < s->W || g->rows < s->H)
        memset(dx, 0, (size_t)(s->H * s->W) * sizeof(float));
    for (int64_t h = 0; h < g->rows; h++) {
        float *dr = dx + h * s->W;
        const float *src = dxph + (h + s->ph) * g->Wq;
        if (s->sw == 1 && g->cols > 0) {
            memcpy(dr, src + s->pw, (size_t)g->cols * sizeof(float));
            continue;
        }
        if (s->sw == 2) {
            merge_row2(dr, src, src + phase, g->cols, s->pw);
            continue;
        }
        for (int64_t f = 0; f < s->sw; f++) {
            float *dst = dr + f - s->pw;        /* phase f's src[j] is dst[j sw] */
            for (int64_t j = g->phase_lo[f]; j < g->phase_hi[f]; j++)
                dst[j * s->sw] = src[f * phase + j];
        }
    }
}

/* Floats of one thread's scratch: the phases, a padded row, the weight
 * gradient's vector sums (R S x 16) and double sums (m R S, as 2 floats each). */
static int64_t thread_floats(const conv2d_shape *s, const depthwise_geom *g)
{
    int64_t phases = round_up16(s->sw * g->Hp * g->Wq);
    return phases + round_up16(s->Q) + 16 * s->R * s->S + round_up16(2 * g->m * s->R * s->S);
}

typedef struct {
    float *xph, *row, *acc;
    double *dw;
} thread_scratch;

static thread_scratch scratch_of(float *base, const conv2d_shape *s, const depthwise_geom *g)
{
    thread_scratch t;
    t.xph = base;
    t.row = t.xph + round_up16(s->sw * g->Hp * g->Wq);
    t.acc = t.row + round_up16(s->Q);
    t.dw = (double *)(t.acc + 16 * s->R * s->S);
    return t;
}

enum { FORWARD, BACKWARD_DATA, BACKWARD_WEIGHT };

typedef struct {
    int op;
    float *out;                 /* y, dx or dw */
    const float *x, *w, *b, *dy;
    const depthwise_kernels *kr;    /* this CPU's loops */
} depthwise_call;

/* Whether the forward's row loops read the plane itself (3x3 at stride 1
 * or 2 along rows, no dilation along them), not its column phases. */
static int reads_plane(const conv2d_shape *s)
{
    return s->R == 3 && s->S == 3 && (s->sw == 1 || s->sw == 2) && s->dw == 1;
}

/* Plane nc = (n, c) of the forward or backward data. */
static void run_plane(const depthwise_call *cc, int64_t nc, thread_scratch *t,
                      const conv2d_shape *s, const depthwise_geom *g)
{
    int64_t c = nc % s->C, HW = s->H * s->W, mPQ = g->m * s->P * s->Q, RS = s->R * s->S;
    if (cc->op == FORWARD && reads_plane(s)) {
        cc->kr->forward_3x3(cc->out + nc * mPQ, cc->x + nc * HW, cc->w + c * g->m * RS,
                            cc->b ? cc->b + c * g->m : NULL, g);
        return;
    }
    if (cc->op == FORWARD) {
        cc->kr->phases(t->xph, cc->x + nc * HW, g);
        cc->kr->forward(cc->out + nc * mPQ, t->xph, cc->w + c * g->m * RS,
                           cc->b ? cc->b + c * g->m : NULL, g);
        return;
    }
    memset(t->xph, 0, (size_t)(s->sw * g->Hp * g->Wq) * sizeof(float));
    cc->kr->backward_data(t->xph, cc->dy + nc * mPQ, cc->w + c * g->m * RS, t->row, g);
    from_phases(cc->out + nc * HW, t->xph, s, g);
}

/* Channel c's weight gradient dw (m, R, S) += over every image. */
static void run_channel_wgrad(const depthwise_call *cc, int64_t c, thread_scratch *t,
                              const conv2d_shape *s, const depthwise_geom *g)
{
    int64_t HW = s->H * s->W, mPQ = g->m * s->P * s->Q, mRS = g->m * s->R * s->S;
    memset(t->dw, 0, (size_t)mRS * sizeof(double));
    for (int64_t n = 0; n < s->N; n++) {
        cc->kr->phases(t->xph, cc->x + (n * s->C + c) * HW, g);
        cc->kr->wgrad(t->dw, cc->dy + (n * s->C + c) * mPQ, t->xph, t->row, t->acc, g);
    }
    for (int64_t i = 0; i < mRS; i++) cc->out[c * mRS + i] += (float)t->dw[i];
}

/* One call's tasks, for fastcnn_parallel_for. */
typedef struct {
    const depthwise_call *cc;
    const conv2d_shape *s;
    const depthwise_geom *g;
    float *scratch;             /* per slot: thread_floats */
    int64_t per;
    int *ready;                 /* per slot: its padded planes' borders are zero */
} depthwise_run;

/* Task i: plane i of y or dx, or channel i's dw; the slot zeroes its
 * scratch planes on its first task. */
static void depthwise_task(void *ctx, int64_t i, int slot)
{
    const depthwise_run *r = ctx;
    thread_scratch t = scratch_of(r->scratch + slot * r->per, r->s, r->g);
    if (!r->ready[slot]) {
        memset(t.xph, 0, (size_t)(r->s->sw * r->g->Hp * r->g->Wq) * sizeof(float));
        r->ready[slot] = 1;
    }
    if (r->cc->op == BACKWARD_WEIGHT)
        run_channel_wgrad(r->cc, i, &t, r->s, r->g);
    else
        run_plane(r->cc, i, &t, r->s, r->g);
}

static int run(const depthwise_call *cc, const conv2d_shape *s, int nthreads)
{
    int64_t *ints = malloc((size_t)geom_ints(s) * sizeof(int64_t));
    if (!ints)
        return FASTCNN_ENOMEM;
    depthwise_geom g = make_geom(s, ints);
    int64_t tasks = cc->op == BACKWARD_WEIGHT ? s->C : s->N * s->C;
    int nt = fastcnn_threads_for(2 * s->N * s->K * s->R * s->S * s->P * s->Q, nthreads);
    if (nt > tasks)
        nt = (int)tasks;
    int64_t per = thread_floats(s, &g);
    float *scratch = conv2d_scratch_take(nt * per + nt);
    if (!scratch) {
        free(ints);
        return FASTCNN_ENOMEM;
    }
    depthwise_run r = {cc, s, &g, scratch, per, (int *)(scratch + nt * per)};
    memset(r.ready, 0, (size_t)nt * sizeof(int));
    /* each task writes only its own planes of y or dx, or its channel's dw */
    fastcnn_parallel_for(tasks, depthwise_task, &r, nt);
    conv2d_scratch_give(scratch);
    free(ints);
    return FASTCNN_OK;
}

/* ---- channel vectors ---------------------------------------------------------- */

static int vectors_mode = 0;    /* test hook: 0 chosen, 1 whenever they fit, -1 never */

int conv2d_set_depthwise_vectors(int mode)
{
    int old = vectors_mode;
    vectors_mode = mode;
    return old;
}

static int vectors_fit(const conv2d_shape *s, const depthwise_kernels *kr)
{
    return s->K == s->C && s->C % kr->vl == 0 && vectors_mode >= 0;
}

/* wv (C / vl, R S, vl) = w (C, R S), each vl channels' taps as vectors. */
static void tap_vectors(float *wv, const float *w, int64_t C, int64_t RS, int64_t vl)
{
    for (int64_t c0 = 0; c0 < C; c0 += vl)
        for (int64_t t = 0; t < RS; t++)
            for (int64_t l = 0; l < vl; l++) wv[(c0 * RS + t * vl) + l] = w[(c0 + l) * RS + t];
}

/* One forward call in channel vectors, for fastcnn_parallel_for. */
typedef struct {
    float *y;
    const float *x, *wv, *b;
    const conv2d_shape *s;
    const depthwise_kernels *kr;
    const depthwise_geom *g;
    float *scratch;             /* per slot: per floats, xs then ys */
    int64_t per, xs_floats;
    int *ready;                 /* per slot: its xs borders are zero */
} vectors_run;

/* Task i: vl channels of one image. */
static void vectors_task(void *ctx, int64_t i, int slot)
{
    const vectors_run *r = ctx;
    const conv2d_shape *s = r->s;
    int64_t vl = r->kr->vl, groups = s->C / vl, RS = s->R * s->S;
    int64_t c0 = i % groups * vl, plane = i / groups * s->C + c0;
    float *xs = r->scratch + slot * r->per;
    if (!r->ready[slot]) {
        memset(xs, 0, (size_t)(r->g->Hp * r->g->Wp * vl) * sizeof(float));
        r->ready[slot] = 1;
    }
    r->kr->vectors(r->y + plane * s->P * s->Q, r->x + plane * s->H * s->W, r->wv + c0 * RS,
                   r->b ? r->b + c0 : NULL, xs, xs + r->xs_floats, r->g);
}

/* The forward in channel vectors (vectors_fit): a task is vl channels of
 * one image, xs and ys its thread's scratch (conv2d_depthwise_kernel.h). */
static int run_vectors(float *y, const float *x, const float *w, const float *b,
                       const conv2d_shape *s, const depthwise_kernels *kr, int nthreads)
{
    int64_t *ints = malloc((size_t)geom_ints(s) * sizeof(int64_t));
    if (!ints)
        return FASTCNN_ENOMEM;
    depthwise_geom g = make_geom(s, ints);
    int64_t vl = kr->vl, groups = s->C / vl, tasks = s->N * groups, RS = s->R * s->S;
    int64_t PQ = s->P * s->Q;
    int64_t xs_floats = round_up16(g.Hp * g.Wp * vl), per = xs_floats + round_up16(PQ * vl);
    int nt = fastcnn_threads_for(2 * s->N * s->K * RS * PQ, nthreads);
    if (nt > tasks)
        nt = (int)tasks;
    float *scratch = conv2d_scratch_take(nt * per + s->C * RS + nt);
    if (!scratch) {
        free(ints);
        return FASTCNN_ENOMEM;
    }
    float *wv = scratch + nt * per;
    tap_vectors(wv, w, s->C, RS, vl);
    vectors_run r = {y, x, wv, b, s, kr, &g, scratch, per, xs_floats,
                     (int *)(scratch + nt * per + s->C * RS)};
    memset(r.ready, 0, (size_t)nt * sizeof(int));
    /* each task writes only its own vl planes of y */
    fastcnn_parallel_for(tasks, vectors_task, &r, nt);
    conv2d_scratch_give(scratch);
    free(ints);
    return FASTCNN_OK;
}

/* One forward call, either way. */
typedef struct {
    float *y;
    const float *x, *w, *b;
    const conv2d_shape *s;
    const depthwise_kernels *kr;
    int nthreads;
} forward_call;

static int run_forward(void *arg, int vectors)
{
    const forward_call *f = arg;
    if (vectors)
        return run_vectors(f->y, f->x, f->w, f->b, f->s, f->kr, f->nthreads);
    depthwise_call cc = {FORWARD, f->y, f->x, f->w, f->b, NULL, f->kr};
    return run(&cc, f->s, f->nthreads);
}

/* Whether 16-float channel vectors gather from planes a multiple of 4 KiB
 * apart: their transposes then load (or store) 16 lines of one L1 set at
 * once, more than its ways. Zen 4, 1 thread, forward in vectors against the
 * row loops: 192 x 32 x 32 at stride 1 0.65x, at stride 2 0.52x, 32 x 64 x 64
 * 0.71x (28 x 28 and 40 x 40 on either side: 1.11x and 1.29x; with AVX2's 8
 * planes, 32 x 32 1.17x). */
static int planes_alias(const conv2d_shape *s, const depthwise_kernels *kr)
{
    return kr->vl >= 16 && ((s->H * s->W) % 1024 == 0 || (s->P * s->Q) % 1024 == 0);
}

/* By shape (work too small to time): channel vectors where a row would fill
 * few of the row loops' vectors; a stride above 1 also costs the row loops
 * a phase split the channel vectors skip, except for 3x3 filters at stride
 * 2. Bounds per instruction set (bench/CONV2D.md): in frozen models at batch
 * 1 on Zen 5 and Zen 3, stride above 1 (not 3x3): AVX-512 rows of up to 2
 * vectors, AVX2 4; by functional calls on 32 and 192 channels on Zen 4,
 * after the transposes kept their vectors in registers (2026-12-05):
 * stride 1, AVX-512 up to 56 outputs (1.14x at 56, 0.97x at 80), AVX2 56
 * (ahead at every width to 112); 3x3 at stride 2, AVX-512 up to 24 (1.01-1.07x
 * there, 0.87-0.94x at 28), AVX2 28 (1.18x there); 16-byte vectors 6 and 4. */
static int vectors_by_shape(const conv2d_shape *s, const depthwise_kernels *kr)
{
    return !planes_alias(s, kr)
        && s->Q <= (s->sw == 1 ? kr->vectors_q1
                    : reads_plane(s) ? kr->vectors_q2_3x3 : kr->vectors_q2);
}

/* *vectors = whether f runs in channel vectors: when they fit, the way kept
 * for the shape, or timed now against the row loops where the work is
 * enough to time (the results are the same bits either way), else by
 * shape. */
static int choose_forward(const forward_call *f, int *vectors)
{
    const conv2d_shape *s = f->s;
    *vectors = vectors_fit(s, f->kr) && (vectors_mode > 0 || vectors_by_shape(s, f->kr));
    double flops = 2.0 * s->N * s->K * s->R * s->S * s->P * s->Q;
    if (!vectors_fit(s, f->kr) || vectors_mode || !conv2d_tuning()
        || flops < CONV2D_TUNE_MIN_FLOPS)
        return FASTCNN_OK;
    conv2d_tune_key key = conv2d_tune_key_of(CONV2D_TUNE_DEPTHWISE, s, 0);
    conv2d_tune_choice kept;
    if (conv2d_tune_find(&key, &kept)) {
        *vectors = kept.path;
        return FASTCNN_OK;
    }
    if (!conv2d_tune_room())
        return FASTCNN_OK;
    int err = conv2d_time_fastest(2, run_forward, NULL, (void *)f, vectors);
    if (!err)
        conv2d_tune_keep(&key, (conv2d_tune_choice){*vectors, 0});
    return err;
}

int conv2d_depthwise_forward(float *y, const float *x, const float *w, const float *b,
                             const conv2d_shape *s, int nthreads)
{
    forward_call f = {y, x, w, b, s, kernels(), nthreads};
    int vectors, err = choose_forward(&f, &vectors);
    return err ? err : run_forward(&f, vectors);
}

/* Stride 1, one output channel per input channel, padding within the
 * filter's reach: dx is then a forward depthwise convolution of dy with the
 * filters turned by 180 degrees and the complementary padding, which the
 * forward (either way, chosen for this shape) computes with no scatter
 * (read-add-write) pass. */
static int transposed_applies(const conv2d_shape *s)
{
    return s->sh == 1 && s->sw == 1 && s->K == s->C && s->ph <= (s->R - 1) * s->dh &&
           s->pw <= (s->S - 1) * s->dw;
}

/* dx (N, C, H, W) = dy (N, C, P, Q) correlated with w (C, 1, R, S) turned. */
static int backward_data_transposed(float *dx, const float *dy, const float *w,
                                    const conv2d_shape *s, int nthreads)
{
    int64_t RS = s->R * s->S;
    float *turned = malloc((size_t)(s->C * RS) * sizeof(float));
    if (!turned)
        return FASTCNN_ENOMEM;
    for (int64_t c = 0; c < s->C; c++)
        for (int64_t i = 0; i < RS; i++) turned[c * RS + i] = w[c * RS + RS - 1 - i];
    conv2d_shape t = *s;
    t.H = s->P, t.W = s->Q, t.P = s->H, t.Q = s->W;
    t.ph = (s->R - 1) * s->dh - s->ph, t.pw = (s->S - 1) * s->dw - s->pw;
    t.clamp = 0;
    int err = conv2d_depthwise_forward(dx, dy, turned, NULL, &t, nthreads);
    free(turned);
    return err;
}

/* One backward data in channel vectors, for fastcnn_parallel_for. */
typedef struct {
    float *dx;
    const float *dy, *wv;
    const conv2d_shape *s;
    const depthwise_kernels *kr;
    const depthwise_geom *g;
    float *scratch;             /* per slot: per floats, dxs then ds */
    int64_t per, dxs_floats;
} backward_vectors_run;

/* Task i: vl channels of one image. */
static void backward_vectors_task(void *ctx, int64_t i, int slot)
{
    const backward_vectors_run *r = ctx;
    const conv2d_shape *s = r->s;
    int64_t vl = r->kr->vl, groups = s->C / vl, c0 = i % groups * vl;
    int64_t plane = i / groups * s->C + c0;
    float *dxs = r->scratch + slot * r->per;
    r->kr->backward_vectors(r->dx + plane * s->H * s->W, r->dy + plane * s->P * s->Q,
                            r->wv + c0 * s->R * s->S, dxs, dxs + r->dxs_floats, r->g);
}

/* The backward data in channel vectors (vectors_fit): a task is vl channels
 * of one image, dy's taps added into a padded grid of channel vectors, then
 * transposed out. The row loops' phase split and scatter cost most on the
 * short rows of strided layers (MobileNetV2's 96 channels at 32x32, stride
 * 2, batch 32: 2.3 ms against 0.6 here). */
static int backward_vectors(float *dx, const float *dy, const float *w, const conv2d_shape *s,
                            const depthwise_kernels *kr, int nthreads)
{
    int64_t *ints = malloc((size_t)geom_ints(s) * sizeof(int64_t));
    if (!ints)
        return FASTCNN_ENOMEM;
    depthwise_geom g = make_geom(s, ints);
    int64_t vl = kr->vl, tasks = s->N * (s->C / vl), RS = s->R * s->S, PQ = s->P * s->Q;
    int64_t dxs_floats = round_up16(g.Hp * g.Wp * vl), per = dxs_floats + round_up16(PQ * vl);
    int nt = fastcnn_threads_for(2 * s->N * s->K * RS * PQ, nthreads);
    if (nt > tasks)
        nt = (int)tasks;
    float *scratch = conv2d_scratch_take(nt * per + s->C * RS);
    if (!scratch) {
        free(ints);
        return FASTCNN_ENOMEM;
    }
    float *wv = scratch + nt * per;
    tap_vectors(wv, w, s->C, RS, vl);
    backward_vectors_run r = {dx, dy, wv, s, kr, &g, scratch, per, dxs_floats};
    /* each task writes only its own vl planes of dx */
    fastcnn_parallel_for(tasks, backward_vectors_task, &r, nt);
    conv2d_scratch_give(scratch);
    free(ints);
    return FASTCNN_OK;
}

int conv2d_depthwise_backward_data(float *dx, const float *dy, const float *w,
                                   const conv2d_shape *s, int nthreads)
{
    const depthwise_kernels *kr = kernels();
    if (transposed_applies(s))
        return backward_data_transposed(dx, dy, w, s, nthreads);
    if (vectors_fit(s, kr))
        return backward_vectors(dx, dy, w, s, kr, nthreads);
    depthwise_call cc = {BACKWARD_DATA, dx, NULL, w, NULL, dy, kr};
    return run(&cc, s, nthreads);
}

/* One weight gradient in channel vectors, for fastcnn_parallel_for. */
typedef struct {
    float *dw;
    const float *dy, *x;
    const conv2d_shape *s;
    const depthwise_kernels *kr;
    const depthwise_geom *g;
    float *scratch;             /* per slot: per floats, xs, ds, sums, then the double sums */
    int64_t per, xs_floats, ds_floats;
    int *ready;                 /* per slot: its xs borders are zero */
} wgrad_vectors_run;

/* Task i: the weight gradient of channels [i vl, (i + 1) vl) over every
 * image, each image's sums (float vectors) added in double. */
static void wgrad_vectors_task(void *ctx, int64_t i, int slot)
{
    const wgrad_vectors_run *r = ctx;
    const conv2d_shape *s = r->s;
    int64_t vl = r->kr->vl, c0 = i * vl, RS = s->R * s->S, PQ = s->P * s->Q, HW = s->H * s->W;
    float *xs = r->scratch + slot * r->per, *ds = xs + r->xs_floats, *sums = ds + r->ds_floats;
    double *total = (double *)(sums + round_up16(RS * vl));
    if (!r->ready[slot]) {
        memset(xs, 0, (size_t)(r->g->Hp * r->g->Wp * vl) * sizeof(float));
        r->ready[slot] = 1;
    }
    memset(total, 0, (size_t)(RS * vl) * sizeof(double));
    for (int64_t n = 0; n < s->N; n++) {
        r->kr->wgrad_vectors(sums, r->dy + (n * s->C + c0) * PQ, r->x + (n * s->C + c0) * HW, xs,
                             ds, r->g);
        for (int64_t k = 0; k < RS * vl; k++) total[k] += sums[k];
    }
    for (int64_t l = 0; l < vl; l++)
        for (int64_t t = 0; t < RS; t++) r->dw[(c0 + l) * RS + t] += (float)total[t * vl + l];
}

/* The weight gradient in channel vectors (vectors_fit): a task is vl
 * channels over every image. A row loop's sums fill a vector with Q
 * positions of one channel, a handful on the small maps of a network's
 * late layers (MobileNetV2's 576 channels at 4x4: 2 ms where this takes
 * 0.1); here every vector holds vl channels. */
static int wgrad_vectors(float *dw, const float *dy, const float *x, const conv2d_shape *s,
                         const depthwise_kernels *kr, int nthreads)
{
    int64_t *ints = malloc((size_t)geom_ints(s) * sizeof(int64_t));
    if (!ints)
        return FASTCNN_ENOMEM;
    depthwise_geom g = make_geom(s, ints);
    int64_t vl = kr->vl, tasks = s->C / vl, RS = s->R * s->S, PQ = s->P * s->Q;
    int64_t xs_floats = round_up16(g.Hp * g.Wp * vl), ds_floats = round_up16(PQ * vl);
    int64_t per = xs_floats + ds_floats + round_up16(RS * vl) + round_up16(2 * RS * vl);
    int nt = fastcnn_threads_for(2 * s->N * s->K * RS * PQ, nthreads);
    if (nt > tasks)
        nt = (int)tasks;
    float *scratch = conv2d_scratch_take(nt * per + nt);
    if (!scratch) {
        free(ints);
        return FASTCNN_ENOMEM;
    }
    wgrad_vectors_run r = {dw, dy, x, s, kr, &g, scratch, per, xs_floats, ds_floats,
                           (int *)(scratch + nt * per)};
    memset(r.ready, 0, (size_t)nt * sizeof(int));
    /* each task adds to its own vl channels of dw */
    fastcnn_parallel_for(tasks, wgrad_vectors_task, &r, nt);
    conv2d_scratch_give(scratch);
    free(ints);
    return FASTCNN_OK;
}

int conv2d_depthwise_backward_weight(float *dw, const float *dy, const float *x,
                                     const conv2d_shape *s, int nthreads)
{
    const depthwise_kernels *kr = kernels();
    if (vectors_fit(s, kr))
        return wgrad_vectors(dw, dy, x, s, kr, nthreads);
    depthwise_call cc = {BACKWARD_WEIGHT, dw, x, NULL, NULL, dy, kr};
    return run(&cc, s, nthreads);
}
