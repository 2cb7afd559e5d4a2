/* conv2d_gemm.c - the conv2d family's general path: im2col + GEMM, for every
 * shape the direct kernels do not take (conv2d.c chooses).
 *
 * Images are taken in groups whose im2col matrices sit side by side, col
 * (CRS, cnt PQ), so one GEMM spans cnt PQ columns (CRS = C R S, PQ = P Q):
 *   forward          y (K, cnt PQ)  = w (K, CRS) col, scattered to NCHW + b
 *   backward data    col            = w^T dy (K, cnt PQ), dx = col2im(col)
 *                    (by blocks of channels where col is larger than L2)
 *   backward weight  dw (K, CRS)   += dy (K, cnt PQ) col^T,  db += sums of dy
 * where dy is gathered into (K, cnt PQ) for groups of more than one image,
 * and a 1x1, stride-1, unpadded image (alone in its group) uses x (C, HW)
 * itself as col (its backward data reads w^T packed once per call where a
 * thread runs several). Single images take the bias in the GEMM (sgemm_bias).
 * A single image on a small map whose PQ fills the GEMM tile's columns worse
 * than K does (7x7: 49 of 64 columns) runs transposed: y^T (PQ, K) =
 * col^T w^T, then transposed into y with the bias (and clamp).
 * With at least as many images as threads, threads take contiguous ranges
 * of images (own scratch, GEMMs on one thread); otherwise groups run one
 * after another and the GEMM and copies use every thread. Scratch comes
 * from a one-slot cache, so repeated calls do not page-fault it afresh.
 */
#include <stdatomic.h>
#include <string.h>

#include "conv2d_internal.h"
#include "gemm.h"

/* 1x1, stride 1, no padding, output as large as the input: col is x itself. */
static int pointwise(const conv2d_shape *s)
{
    return s->R == 1 && s->S == 1 && s->sh == 1 && s->sw == 1 && s->ph == 0 && s->pw == 0
        && s->P == s->H && s->Q == s->W;
}

/* Products at least this deep may run transposed: on shallower ones the
 * transposition back costs more than the tile saves (a frozen MobileNetV2 at
 * batch 1: 160 -> 960 channels at 7x7 ran 7% slower transposed, 320 -> 1280
 * 5% faster). */
#define TURNED_MIN_DEPTH 256

/* Whether an image alone in its group runs as the transposed product y^T =
 * col^T w^T: a deep enough product whose register tile's columns (NR) waste
 * at least 1/8 more on PQ columns than on K (the rows, PQ there, cost what
 * they compute: the kernels have a tile per row count). */
static int transposed(const conv2d_shape *s)
{
    int mr, nr;
    int64_t PQ = s->P * s->Q;
    sgemm_tile(sgemm_packed_a_kernel(PQ, s->K), &mr, &nr);
    int64_t as_is = s->K * ((PQ + nr - 1) / nr * nr);
    int64_t turned = PQ * ((s->K + nr - 1) / nr * nr);
    return s->C * s->R * s->S >= TURNED_MIN_DEPTH && 8 * as_is >= 9 * turned;
}

/* ---- image groups ----------------------------------------------------------- */

/* Images are processed in groups: the im2col matrices of a group's images
 * sit side by side, so one GEMM has N = images * PQ columns (small images
 * alone make GEMMs too thin to run fast, and A is packed once per group).
 * A group is sized to reach about group_columns columns. */
#define GROUP_COLUMNS 2048
#define GROUP_COL_MAX_FLOATS ((int64_t)4 << 20)    /* 16 MiB of im2col per group */

static int64_t group_columns = GROUP_COLUMNS;

/* A pointwise image with at least this many positions is a GEMM of its own
 * (packing the weights costs a 2 PQ-th of its product); smaller ones are
 * grouped (ResNet's 1x1 maps at batch 256: one GEMM of 256 columns instead
 * of 256 of one column, each packing all the weights). */
#define POINTWISE_ALONE_PQ 16

int64_t conv2d_set_group_columns(int64_t columns)
{
    int64_t old = group_columns;
    group_columns = columns > 0 ? columns : GROUP_COLUMNS;
    return old;
}

/* Whether s's images run one GEMM each: pointwise on a map of at least
 * POINTWISE_ALONE_PQ positions (and the default group width). */
int conv2d_gemm_alone(const conv2d_shape *s)
{
    return pointwise(s) && group_columns == GROUP_COLUMNS && s->P * s->Q >= POINTWISE_ALONE_PQ;
}

/* How a call is split: `outer` threads take contiguous ranges of images
 * (each running GEMMs on one thread), or outer = 1 and the GEMM and the
 * copies inside a group use `inner` threads. Groups hold at most nb images. */
typedef struct {
    int outer, inner;
    int64_t nb;
    int turned;         /* forward: pointwise images one by one, transposed */
} conv_plan;

static conv_plan make_plan(const conv2d_shape *s, int grouped, int nthreads)
{
    int64_t PQ = s->P * s->Q, CRS = s->C * s->R * s->S;
    int64_t work = 2 * s->N * s->K * CRS * PQ;
    int nt = fastcnn_threads_for(work, nthreads);
    conv_plan pl = {1, nt, 1, 0};
    if (nt > 1 && s->N >= nt) {
        pl.outer = nt;
        pl.inner = 1;
    }
    int64_t per_thread = (s->N + pl.outer - 1) / pl.outer;
    /* a pointwise image is its own im2col: alone, it needs no copies in or
     * out, unless its map is too small to make a GEMM of one image fast (or
     * its weight gradient's products, PQ deep, run faster grouped) */
    int64_t nb = conv2d_gemm_alone(s) && !grouped ? 1 : group_columns / PQ;
    if (nb * CRS * PQ > GROUP_COL_MAX_FLOATS)
        nb = GROUP_COL_MAX_FLOATS / (CRS * PQ);
    pl.nb = nb < 1 ? 1 : nb > per_thread ? per_thread : nb;
    pl.turned = pl.nb == 1 && transposed(s);  /* (run: forward only) */
    return pl;
}

/* Scratch floats for one thread: a group's im2col (CRS, nb PQ) unless the
 * input itself serves, then a group's gathered output or gradient (K, nb PQ)
 * unless groups are single images, or a transposed output (PQ, K). */
static int64_t scratch_floats(const conv2d_shape *s, const conv_plan *pl)
{
    int64_t cols = pl->nb * s->P * s->Q;
    int64_t col = pointwise(s) && pl->nb == 1 ? 0 : s->C * s->R * s->S * cols;
    return col + (pl->nb > 1 || pl->turned ? s->K * cols : 0);
}

static int64_t col_part(const conv2d_shape *s, const conv_plan *pl)
{
    return scratch_floats(s, pl) - (pl->nb > 1 || pl->turned ? s->K * pl->nb * s->P * s->Q : 0);
}

/* ---- regrouping the output columns -------------------------------------- */

/* One regrouping of the output columns, for fastcnn_parallel_for. */
typedef struct {
    float *to;                  /* cols (gather) or the stack (scatter) */
    const float *from;          /* the other */
    const float *b;
    int64_t cnt;
    const conv2d_shape *s;
} columns_call;

/* Row it = (image, k) of the stack copied into cols. */
static void gather_row(void *ctx, int64_t it, int slot)
{
    const columns_call *c = ctx;
    int64_t K = c->s->K, PQ = c->s->P * c->s->Q;
    const float *restrict src = c->from + it * PQ;
    float *restrict dst = c->to + it % K * c->cnt * PQ + it / K * PQ;
    (void)slot;
    for (int64_t j = 0; j < PQ; j++) dst[j] = src[j];
}

/* cols (K, cnt PQ) = the stack of cnt images (cnt, K, PQ) side by side. */
static void gather_columns(float *cols, const float *stack, int64_t cnt,
                           const conv2d_shape *s, int nthreads)
{
    columns_call c = {cols, stack, NULL, cnt, s};
    /* each (image, k) row is copied by one work item */
    fastcnn_parallel_for(cnt * s->K, gather_row, &c,
                         fastcnn_threads_for(cnt * s->K * s->P * s->Q, nthreads));
}

/* Row it = (image, k) of the stack from cols, + b[k], clamped if s->clamp. */
static void scatter_row(void *ctx, int64_t it, int slot)
{
    const columns_call *c = ctx;
    const conv2d_shape *s = c->s;
    int64_t PQ = s->P * s->Q;
    float *restrict dst = c->to + it * PQ;
    const float *restrict src = c->from + it % s->K * c->cnt * PQ + it / s->K * PQ;
    float add = c->b ? c->b[it % s->K] : 0.0f;
    (void)slot;
    for (int64_t j = 0; j < PQ; j++) dst[j] = src[j] + add;
    if (s->clamp)
        for (int64_t j = 0; j < PQ; j++) {
            float v = dst[j] < s->lo ? s->lo : dst[j];
            dst[j] = v > s->hi ? s->hi : v;
        }
}

/* stack (cnt, K, PQ) = cols (K, cnt PQ) split into images, plus b (K) if
 * given, clamped if s->clamp. */
static void scatter_columns(float *stack, const float *cols, const float *b, int64_t cnt,
                            const conv2d_shape *s, int nthreads)
{
    columns_call c = {stack, cols, b, cnt, s};
    /* each (image, k) row is written by one work item */
    fastcnn_parallel_for(cnt * s->K, scatter_row, &c,
                         fastcnn_threads_for(cnt * s->K * s->P * s->Q, nthreads));
}

/* ---- one group of cnt images ---------------------------------------------- */

/* The weights as the forward's GEMM reads them: w (K, CRS) itself, or
 * packed ahead for GEMM kernel number `kernel` (packed not NULL): as its A,
 * or (the plan's `turned`) as the B of the transposed product. */
typedef struct {
    const float *w, *packed;
    int kernel;
} gemm_weights;

/* C (K, cols) = w (K, CRS) B (CRS, cols) + bias (or NULL), clamped (or NULL). */
static int multiply(const gemm_weights *gw, const float *B, float *C, int64_t cols,
                    const float *bias, const float *clamp, const conv2d_shape *s, int nthreads)
{
    int64_t CRS = s->C * s->R * s->S;
    if (gw->packed)
        return sgemm_packed_bias_clamp(gw->packed, gw->kernel, s->K, cols, CRS, B, cols, C, cols,
                                       bias, clamp, nthreads);
    return sgemm_bias_clamp(0, 0, s->K, cols, CRS, 1.0f, gw->w, CRS, B, cols, 0.0f, C, cols, bias,
                            clamp, nthreads);
}

/* One transposition back, for fastcnn_parallel_for. */
typedef struct {
    float *y;
    const float *yt, *b;
    const conv2d_shape *s;
} turn_call;

/* Rows of y per work item of the transposition back. */
#define TURN_ROWS 32

/* Rows [it TURN_ROWS, +TURN_ROWS) of y (K, PQ) = those columns of yt (PQ, K),
 * plus b[k] (b may be NULL), clamped if s->clamp. */
static void turn_rows(void *ctx, int64_t it, int slot)
{
    const turn_call *c = ctx;
    const conv2d_shape *s = c->s;
    int64_t PQ = s->P * s->Q, k0 = it * TURN_ROWS;
    int64_t k1 = k0 + TURN_ROWS < s->K ? k0 + TURN_ROWS : s->K;
    (void)slot;
    sgemm_transpose(c->y + k0 * PQ, PQ, c->yt + k0, s->K, PQ, k1 - k0);
    for (int64_t k = k0; k < k1; k++) {
        float *restrict row = c->y + k * PQ;
        float add = c->b ? c->b[k] : 0.0f;
        for (int64_t j = 0; j < PQ; j++) row[j] += add;
        if (s->clamp)
            for (int64_t j = 0; j < PQ; j++) {
                float v = row[j] < s->lo ? s->lo : row[j];
                row[j] = v > s->hi ? s->hi : v;
            }
    }
}

/* y (K, PQ) = (col^T (PQ, CRS) w^T (CRS, K))^T + b for one image, the
 * product in yt (PQ, K). */
static int forward_turned(float *y, const float *col, const gemm_weights *gw, const float *b,
                          float *yt, const conv2d_shape *s, int nthreads)
{
    int64_t PQ = s->P * s->Q, CRS = s->C * s->R * s->S;
    int err = gw->packed
        ? sgemm_packed_b_bias_clamp(gw->packed, gw->kernel, 1, PQ, s->K, CRS, col, PQ, yt, s->K,
                                    NULL, NULL, nthreads)
        : sgemm(1, 1, PQ, s->K, CRS, 1.0f, col, PQ, gw->w, CRS, 0.0f, yt, s->K, nthreads);
    if (err)
        return err;
    turn_call c = {y, yt, b, s};
    /* each work item writes its own rows of y */
    fastcnn_parallel_for((s->K + TURN_ROWS - 1) / TURN_ROWS, turn_rows, &c,
                         fastcnn_threads_for(s->K * PQ, nthreads));
    return FASTCNN_OK;
}

/* y (cnt, K, PQ) = w (K, CRS) im2col(x (cnt, C, H, W)) + b. */
static int forward_group(float *y, const float *x, const gemm_weights *gw, const float *b,
                         int64_t cnt, float *scratch, const conv2d_shape *s,
                         const conv_plan *pl, int nthreads)
{
    int64_t PQ = s->P * s->Q, cols = cnt * PQ;
    const float *B = x;
    if (!(pointwise(s) && cnt == 1)) {
        conv2d_im2col(scratch, x, cnt, s, nthreads);
        B = scratch;
    }
    if (pl->turned)
        return forward_turned(y, B, gw, b, scratch + col_part(s, pl), s, nthreads);
    float clamp[2] = {s->lo, s->hi};
    if (cnt == 1)
        return multiply(gw, B, y, PQ, b, s->clamp ? clamp : NULL, s, nthreads);
    float *out = scratch + col_part(s, pl);
    int err = multiply(gw, B, out, cols, NULL, NULL, s, nthreads);
    if (!err)
        scatter_columns(y, out, b, cnt, s, nthreads);
    return err;
}

/* A block of the backward data's col that col2im reads back from L2 (Zen 4
 * and 5 have 1 MiB per core, Sapphire Rapids 2 MiB); blocks of fewer rows
 * than BLOCK_MIN_ROWS make GEMMs too short to run fast. */
#define COL_BLOCK_FLOATS (128 * 1024)
#define BLOCK_MIN_ROWS 32

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b, b = t;
    }
    return a;
}

/* Channels per block of the backward data, each block's GEMM followed by its
 * col2im: a multiple of the channels whose R S rows fill 8-row GEMM tiles,
 * their rows of col within COL_BLOCK_FLOATS; or C (the whole col at once)
 * where no such block is large enough. */
static int64_t block_channels(const conv2d_shape *s, int64_t cols)
{
    int64_t RS = s->R * s->S, unit = 8 / gcd64(RS, 8);
    int64_t cb = COL_BLOCK_FLOATS / (RS * cols) / unit * unit;
    return cb < unit || cb * RS < BLOCK_MIN_ROWS || cb > s->C ? s->C : cb;
}

/* dx (cnt, C, H, W) = col2im(w^T (CRS, K) B (K, cols)), by blocks of cb
 * channels: B packed once for GEMM kernel number `kernel` (after the block in
 * scratch), each block's rows of col computed then scattered while in L2. */
static int backward_data_blocks(float *dx, const float *B, const float *w, int64_t cnt,
                                int64_t cb, int kernel, float *scratch,
                                const conv2d_shape *s, int nthreads)
{
    int64_t RS = s->R * s->S, CRS = s->C * RS, cols = cnt * s->P * s->Q;
    float *packed = scratch + cb * RS * cols;
    sgemm_pack_b(packed, kernel, 0, s->K, cols, B, cols, nthreads);
    int err = FASTCNN_OK;
    for (int64_t c0 = 0; c0 < s->C && !err; c0 += cb) {
        int64_t nc = s->C - c0 < cb ? s->C - c0 : cb;
        err = sgemm_packed_b_bias_clamp(packed, kernel, 1, nc * RS, cols, s->K, w + c0 * RS,
                                        CRS, scratch, cols, NULL, NULL, nthreads);
        if (!err)
            conv2d_col2im(dx, scratch, cnt, c0, nc, s, nthreads);
    }
    return err;
}

/* dx (cnt, C, H, W) = col2im(w^T (CRS, K) dy (K, cnt PQ)); a pointwise
 * image alone takes w^T packed ahead (gw->packed) where there is one. */
static int backward_data_group(float *dx, const float *dy, const gemm_weights *gw, int64_t cnt,
                               float *scratch, const conv2d_shape *s, const conv_plan *pl,
                               int nthreads)
{
    int64_t CRS = s->C * s->R * s->S, PQ = s->P * s->Q, cols = cnt * PQ;
    const float *w = gw->w;
    if (pointwise(s) && cnt == 1 && gw->packed)
        return sgemm_packed_bias_clamp(gw->packed, gw->kernel, s->C, PQ, s->K, dy, PQ, dx, PQ,
                                       NULL, NULL, nthreads);
    if (pointwise(s) && cnt == 1)
        return sgemm(1, 0, s->C, PQ, s->K, 1.0f, w, CRS, dy, PQ, 0.0f, dx, PQ, nthreads);
    const float *B = dy;
    if (cnt > 1) {
        gather_columns(scratch + col_part(s, pl), dy, cnt, s, nthreads);
        B = scratch + col_part(s, pl);
    }
    int64_t cb = block_channels(s, cols), RS = s->R * s->S;
    int kernel = sgemm_packed_a_kernel(cb * RS, cols);
    if (cb < s->C && cb * RS * cols + sgemm_packed_b_floats(kernel, s->K, cols) <= col_part(s, pl))
        return backward_data_blocks(dx, B, w, cnt, cb, kernel, scratch, s, nthreads);
    int err = sgemm(1, 0, CRS, cols, s->K, 1.0f, w, CRS, B, cols, 0.0f, scratch, cols, nthreads);
    if (!err)
        conv2d_col2im(dx, scratch, cnt, 0, s->C, s, nthreads);
    return err;
}

/* dw (K, CRS) += dy (K, cnt PQ) im2col(x)^T (cnt PQ, CRS). */
static int backward_weight_group(float *dw, const float *dy, const float *x, int64_t cnt,
                                 float *scratch, const conv2d_shape *s, const conv_plan *pl,
                                 int nthreads)
{
    int64_t CRS = s->C * s->R * s->S, PQ = s->P * s->Q, cols = cnt * PQ;
    const float *A = dy, *B = x;
    if (!(pointwise(s) && cnt == 1)) {
        conv2d_im2col(scratch, x, cnt, s, nthreads);
        B = scratch;
    }
    if (cnt > 1) {
        gather_columns(scratch + col_part(s, pl), dy, cnt, s, nthreads);
        A = scratch + col_part(s, pl);
    }
    return sgemm(0, 1, s->K, CRS, cols, 1.0f, A, cols, B, cols, 1.0f, dw, CRS, nthreads);
}

/* ---- a whole call ------------------------------------------------------------ */

enum { FORWARD, BACKWARD_DATA, BACKWARD_WEIGHT };

typedef struct {
    int op;
    float *out;             /* y, dx, or dw (thread 0's; others use partial sums) */
    const float *x, *w, *b;
    const float *dy;
    gemm_weights gw;        /* w as the forward's, or w^T as the backward data's, GEMMs read it */
    int grouped;            /* weight gradient: pointwise images grouped (make_plan) */
} conv_call;

/* Run the groups of images [lo, hi) of one thread (or of the whole call). */
static int run_images(const conv_call *cc, float *dw, int64_t lo, int64_t hi, float *scratch,
                      const conv2d_shape *s, const conv_plan *pl, int nthreads)
{
    int64_t xsz = s->C * s->H * s->W, ysz = s->K * s->P * s->Q;
    int64_t groups = (hi - lo + pl->nb - 1) / pl->nb;
    int err = 0;
    for (int64_t g = 0; g < groups && !err; g++) {
        int64_t n = lo + split_point(hi - lo, g, groups);
        int64_t cnt = lo + split_point(hi - lo, g + 1, groups) - n;
        if (cc->op == FORWARD)
            err = forward_group(cc->out + n * ysz, cc->x + n * xsz, &cc->gw, cc->b, cnt,
                                scratch, s, pl, nthreads);
        else if (cc->op == BACKWARD_DATA)
            err = backward_data_group(cc->out + n * xsz, cc->dy + n * ysz, &cc->gw, cnt, scratch,
                                      s, pl, nthreads);
        else
            err = backward_weight_group(dw, cc->dy + n * ysz, cc->x + n * xsz, cnt, scratch,
                                        s, pl, nthreads);
    }
    return err;
}

#define PARTIALS_CHUNK 4096     /* elements of dw per work item of reduce_partials */

typedef struct {
    float *dw;
    const float *parts;
    int nparts;
    int64_t n;
} partials_call;

/* Elements [c PARTIALS_CHUNK, (c + 1) PARTIALS_CHUNK) of dw, parts in order. */
static void reduce_chunk(void *ctx, int64_t c, int slot)
{
    const partials_call *p = ctx;
    int64_t lo = c * PARTIALS_CHUNK, hi = lo + PARTIALS_CHUNK < p->n ? lo + PARTIALS_CHUNK : p->n;
    (void)slot;
    for (int64_t i = lo; i < hi; i++)
        for (int j = 0; j < p->nparts; j++) p->dw[i] += p->parts[j * p->n + i];
}

/* dw (n) += the nparts partial sums stacked in parts (nparts, n). */
static void reduce_partials(float *dw, const float *parts, int nparts, int64_t n,
                            int nthreads)
{
    partials_call p = {dw, parts, nparts, n};
    /* each work item writes its own elements */
    fastcnn_parallel_for((n + PARTIALS_CHUNK - 1) / PARTIALS_CHUNK, reduce_chunk, &p,
                         fastcnn_threads_for(n * nparts, nthreads));
}

/* One run's image ranges, for fastcnn_parallel_for. */
typedef struct {
    const conv_call *cc;
    const conv2d_shape *s;
    const conv_plan *pl;
    float *scratch, *partial;
    int64_t per, wsz;
    atomic_int err;
} images_run;

/* Range t: images [split_point(t), split_point(t+1)) of the output, in scratch
 * t, and (backward weight) into dw itself (t = 0) or partial t - 1, zeroed. */
static void image_range(void *ctx, int64_t t, int slot)
{
    images_run *r = ctx;
    const conv_call *cc = r->cc;
    float *dw = t == 0 ? cc->out : r->partial + (t - 1) * r->wsz;
    (void)slot;
    if (cc->op == BACKWARD_WEIGHT && t > 0)
        memset(dw, 0, (size_t)r->wsz * sizeof(float));
    if (run_images(cc, dw, split_point(r->s->N, t, r->pl->outer),
                   split_point(r->s->N, t + 1, r->pl->outer), r->scratch + t * r->per, r->s,
                   r->pl, r->pl->inner))
        atomic_store(&r->err, 1);
}

/* Split the images by the plan and run cc; backward weight: ranges t >= 1
 * accumulate into zeroed partial sums, added to dw at the end (in order:
 * the sums do not depend on which thread ran a range). */
static int run(const conv_call *cc, const conv2d_shape *s, int nthreads)
{
    conv_plan pl = make_plan(s, cc->grouped, nthreads);
    pl.turned = pl.turned && cc->op == FORWARD;
    int64_t per = scratch_floats(s, &pl), wsz = s->K * s->C * s->R * s->S;
    int64_t parts = cc->op == BACKWARD_WEIGHT ? (pl.outer - 1) * wsz : 0;
    float *scratch = conv2d_scratch_take(pl.outer * per + parts);
    if (!scratch)
        return FASTCNN_ENOMEM;
    images_run r = {cc, s, &pl, scratch, scratch + pl.outer * per, per, wsz, 0};
    /* each range writes its own images of the output, or its own dw */
    fastcnn_parallel_for(pl.outer, image_range, &r, pl.outer);
    int err = atomic_load(&r.err);
    if (!err && parts)
        reduce_partials(cc->out, r.partial, pl.outer - 1, wsz, nthreads);
    conv2d_scratch_give(scratch);
    return err ? FASTCNN_ENOMEM : FASTCNN_OK;
}

/* conv2d_prepare_fn of the packed weights: variant = the GEMM kernel's number */
static int prepare_packed(float *packed, const float *w, const conv2d_shape *s, int64_t kernel,
                          int nthreads)
{
    int64_t CRS = s->C * s->R * s->S;
    sgemm_pack_a(packed, (int)kernel, 0, s->K, CRS, w, CRS, nthreads);
    return FASTCNN_OK;
}

/* conv2d_prepare_fn of w^T (CRS, K) packed as a product's B: variant = the
 * GEMM kernel's number */
static int prepare_packed_t(float *packed, const float *w, const conv2d_shape *s, int64_t kernel,
                            int nthreads)
{
    int64_t CRS = s->C * s->R * s->S;
    sgemm_pack_b(packed, (int)kernel, 1, CRS, s->K, w, CRS, nthreads);
    return FASTCNN_OK;
}

/* The weights as the forward's GEMMs read them (gw): kept packed in prep,
 * or packed into *own (scratch, given back by the caller) when the call runs
 * more than one GEMM on them, or w itself. */
static int forward_weights(gemm_weights *gw, float **own, const float *w, const conv2d_shape *s,
                           const conv_plan *pl, conv2d_prepared *prep, int nthreads)
{
    int64_t CRS = s->C * s->R * s->S, PQ = s->P * s->Q;
    int64_t per_range = (s->N + pl->outer - 1) / pl->outer;
    int64_t gemms = pl->outer * ((per_range + pl->nb - 1) / pl->nb);
    int kernel = pl->turned ? sgemm_packed_a_kernel(PQ, s->K)       /* w^T as its B */
                            : sgemm_packed_a_kernel(s->K, pl->nb * PQ); /* the widest group's */
    int64_t floats = pl->turned ? sgemm_packed_b_floats(kernel, CRS, s->K)
                                : sgemm_packed_a_floats(kernel, s->K, CRS);
    conv2d_prepare_fn prepare = pl->turned ? prepare_packed_t : prepare_packed;
    *gw = (gemm_weights){w, NULL, kernel};
    *own = NULL;
    if (prep)
        gw->packed = conv2d_prepared_get(prep, pl->turned ? PREPARED_GEMM_T : PREPARED_GEMM, w, s,
                                         kernel, floats, prepare, nthreads);
    if (gw->packed || gemms < 2)
        return FASTCNN_OK;
    *own = conv2d_scratch_take(floats);
    if (!*own)
        return FASTCNN_ENOMEM;
    prepare(*own, w, s, kernel, nthreads);
    gw->packed = *own;
    return FASTCNN_OK;
}

int conv2d_gemm_forward(float *y, const float *x, const float *w, const float *b,
                        const conv2d_shape *s, conv2d_prepared *prep, int nthreads)
{
    conv_call cc = {FORWARD, y, x, w, b, NULL, {w, NULL, 0}};
    conv_plan pl = make_plan(s, 0, nthreads);
    float *own;
    int err = forward_weights(&cc.gw, &own, w, s, &pl, prep, nthreads);
    if (!err)
        err = run(&cc, s, nthreads);
    if (own)
        conv2d_scratch_give(own);
    return err;
}

/* w^T (C, K) packed as the A of the backward data's GEMMs when they run one
 * per pointwise image, at least two on a thread: each sgemm would pack all
 * of it for that image's PQ columns alone (ResNet-50's 512 -> 2048 1x1 at
 * 7x7: 4 MiB for 49 columns, 1.15x faster packed once on 1 thread, 1.22x on
 * 2); into *own (scratch, given back by the caller). Else none. */
static int backward_data_weights(gemm_weights *gw, float **own, const float *w,
                                 const conv2d_shape *s, const conv_plan *pl, int nthreads)
{
    int64_t PQ = s->P * s->Q;
    *gw = (gemm_weights){w, NULL, 0};
    *own = NULL;
    if (!pointwise(s) || pl->nb != 1 || s->N < 2 * pl->outer)
        return FASTCNN_OK;
    gw->kernel = sgemm_packed_a_kernel(s->C, PQ);
    *own = conv2d_scratch_take(sgemm_packed_a_floats(gw->kernel, s->C, s->K));
    if (!*own)
        return FASTCNN_ENOMEM;
    sgemm_pack_a(*own, gw->kernel, 1, s->C, s->K, w, s->C, nthreads);
    gw->packed = *own;
    return FASTCNN_OK;
}

int conv2d_gemm_backward_data(float *dx, const float *dy, const float *w,
                              const conv2d_shape *s, int nthreads)
{
    conv_call cc = {BACKWARD_DATA, dx, NULL, w, NULL, dy, {w, NULL, 0}};
    conv_plan pl = make_plan(s, 0, nthreads);
    float *own;
    int err = backward_data_weights(&cc.gw, &own, w, s, &pl, nthreads);
    if (!err)
        err = run(&cc, s, nthreads);
    if (own)
        conv2d_scratch_give(own);
    return err;
}

int conv2d_gemm_backward_weight(float *dw, const float *dy, const float *x,
                                const conv2d_shape *s, int grouped, int nthreads)
{
    conv_call cc = {BACKWARD_WEIGHT, dw, x, NULL, NULL, dy, {NULL, NULL, 0}, grouped};
    return run(&cc, s, nthreads);
}
