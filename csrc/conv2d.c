/* conv2d.c - 2-d convolution (cross-correlation, as in PyTorch), forward and
 * backward, NCHW with weights KCRS.
 *
 * Geometry: output (p, q) reads input (p sh - ph + r, q sw - pw + t) for
 * r < R, t < S; ph, pw are the top/left padding and P, Q come from the
 * caller, so bottom/right padding may differ (PyTorch's 'same' with an even
 * kernel). Any input position outside [0,H) x [0,W) reads as zero: the
 * GEMM path bounds-checks every read of x, the direct kernels read a
 * zero-padded copy of one image at a time.
 *
 * Fast paths, chosen by shape (inner loops in conv2d_kernel.h, compiled once
 * per instruction set):
 *   forward, stride 1 and C R S <= 75 (first layers): the direct kernel,
 *     output channels x row vectors in registers (direct_forward);
 *   forward, K a multiple of the vector length and a kernel wider than 1x1:
 *     the channel-vector kernel, positions x channel vectors in registers
 *     (kvec_forward); backward data too, as the forward convolution of dy
 *     with the flipped kernel, when the stride is 1, the padding smaller
 *     than the kernel and C fits the vectors (kvec_backward_data);
 *   backward weight, K a multiple of the vector length, S = 3 or 5, at
 *     least an image per thread: the channel-vector weight gradient
 *     (wgrad_backward_weight);
 *   otherwise im2col + GEMM, below.
 *
 * GEMM path: images are taken in groups whose im2col matrices sit side by
 * side, col (CRS, cnt PQ), so one GEMM spans cnt PQ columns (CRS = C R S,
 * PQ = P Q):
 *   forward          y (K, cnt PQ)  = w (K, CRS) col, scattered to NCHW + b
 *   backward data    col            = w^T dy (K, cnt PQ), dx = col2im(col)
 *   backward weight  dw (K, CRS)   += dy (K, cnt PQ) col^T,  db += sums of dy
 * where dy is gathered into (K, cnt PQ) for groups of more than one image,
 * and a 1x1, stride-1, unpadded image (alone in its group) uses x (C, HW)
 * itself as col. Single images take the bias in the GEMM (sgemm_bias).
 * With at least as many images as threads, threads take contiguous ranges
 * of images (own scratch, GEMMs on one thread); otherwise groups run one
 * after another and the GEMM and copies use every thread. Scratch comes
 * from a one-slot cache, so repeated calls do not page-fault it afresh.
 */
#include <string.h>

#include "fastcnn.h"
#include "gemm.h"

#define DIRECT_VBYTES 16        /* the portable build of conv2d_kernel.h */
#define DIRECT_ACC 12
#include "conv2d_kernel.h"

/* 1x1, stride 1, no padding, output as large as the input: col is x itself. */
static int pointwise(const conv2d_shape *s)
{
    return s->R == 1 && s->S == 1 && s->sh == 1 && s->sw == 1 && s->ph == 0 && s->pw == 0
        && s->P == s->H && s->Q == s->W;
}

/* ---- reference kernels: naive loops, double accumulators ---------------- */

void conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                        const conv2d_shape *s)
{
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t k = 0; k < s->K; k++)
            for (int64_t p = 0; p < s->P; p++)
                for (int64_t q = 0; q < s->Q; q++) {
                    double acc = b ? b[k] : 0.0;
                    for (int64_t c = 0; c < s->C; c++)
                        for (int64_t r = 0; r < s->R; r++)
                            for (int64_t t = 0; t < s->S; t++) {
                                int64_t h = p * s->sh - s->ph + r, v = q * s->sw - s->pw + t;
                                if (h < 0 || h >= s->H || v < 0 || v >= s->W)
                                    continue;
                                acc += (double)w[((k * s->C + c) * s->R + r) * s->S + t]
                                     * x[((n * s->C + c) * s->H + h) * s->W + v];
                            }
                    y[((n * s->K + k) * s->P + p) * s->Q + q] = (float)acc;
                }
}

/* Gather form: dx (n, c, h, v) sums dy (n, k, p, q) w (k, c, r, t) over every
 * (p, q, r, t) with p sh - ph + r == h and q sw - pw + t == v. */
void conv2d_backward_data_ref(float *dx, const float *dy, const float *w,
                              const conv2d_shape *s)
{
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t c = 0; c < s->C; c++)
            for (int64_t h = 0; h < s->H; h++)
                for (int64_t v = 0; v < s->W; v++) {
                    double acc = 0.0;
                    for (int64_t r = 0; r < s->R; r++)
                        for (int64_t t = 0; t < s->S; t++) {
                            int64_t ps = h + s->ph - r, qs = v + s->pw - t;
                            if (ps < 0 || qs < 0 || ps % s->sh || qs % s->sw)
                                continue;
                            int64_t p = ps / s->sh, q = qs / s->sw;
                            if (p >= s->P || q >= s->Q)
                                continue;
                            for (int64_t k = 0; k < s->K; k++)
                                acc += (double)dy[((n * s->K + k) * s->P + p) * s->Q + q]
                                     * w[((k * s->C + c) * s->R + r) * s->S + t];
                        }
                    dx[((n * s->C + c) * s->H + h) * s->W + v] = (float)acc;
                }
}

void conv2d_backward_weight_ref(float *dw, float *db, const float *dy, const float *x,
                                const conv2d_shape *s)
{
    for (int64_t k = 0; k < s->K; k++)
        for (int64_t c = 0; c < s->C; c++)
            for (int64_t r = 0; r < s->R; r++)
                for (int64_t t = 0; t < s->S; t++) {
                    double acc = 0.0;
                    for (int64_t n = 0; n < s->N; n++)
                        for (int64_t p = 0; p < s->P; p++)
                            for (int64_t q = 0; q < s->Q; q++) {
                                int64_t h = p * s->sh - s->ph + r, v = q * s->sw - s->pw + t;
                                if (h < 0 || h >= s->H || v < 0 || v >= s->W)
                                    continue;
                                acc += (double)dy[((n * s->K + k) * s->P + p) * s->Q + q]
                                     * x[((n * s->C + c) * s->H + h) * s->W + v];
                            }
                    dw[((k * s->C + c) * s->R + r) * s->S + t] += (float)acc;
                }
    if (!db)
        return;
    for (int64_t k = 0; k < s->K; k++) {
        double acc = 0.0;
        for (int64_t n = 0; n < s->N; n++)
            for (int64_t i = 0; i < s->P * s->Q; i++)
                acc += dy[(n * s->K + k) * s->P * s->Q + i];
        db[k] += (float)acc;
    }
}

/* ---- scratch: one cached buffer ------------------------------------------ */

/* Scratch (im2col, gathered gradients) would be page-faulted afresh by every
 * call; instead the last buffer given back is kept for the next call (at
 * most one, at most SCRATCH_CACHE_MAX bytes; freed at exit). Concurrent
 * callers each take their own: the slot is swapped atomically. */
#define SCRATCH_CACHE_MAX ((int64_t)64 << 20)
#define SCRATCH_HEADER 64

static char *cached_scratch;

static int64_t *scratch_size(char *block)
{
    return (int64_t *)block;
}

/* A buffer of at least `floats` floats (64-byte aligned), or NULL. */
static float *scratch_take(int64_t floats)
{
    int64_t bytes = (floats > 0 ? floats : 1) * (int64_t)sizeof(float);
    char *block = __atomic_exchange_n(&cached_scratch, NULL, __ATOMIC_ACQ_REL);
    if (block && *scratch_size(block) < bytes) {
        fastcnn_free(block);
        block = NULL;
    }
    if (!block) {
        block = fastcnn_alloc(bytes + SCRATCH_HEADER);
        if (!block)
            return NULL;
        *scratch_size(block) = bytes;
    }
    return (float *)(block + SCRATCH_HEADER);
}

/* Return a buffer from scratch_take: it becomes the cached one. */
static void scratch_give(float *p)
{
    char *block = (char *)p - SCRATCH_HEADER;
    if (*scratch_size(block) > SCRATCH_CACHE_MAX) {
        fastcnn_free(block);
        return;
    }
    fastcnn_free(__atomic_exchange_n(&cached_scratch, block, __ATOMIC_ACQ_REL));
}

__attribute__((destructor)) static void scratch_release(void)
{
    fastcnn_free(__atomic_exchange_n(&cached_scratch, NULL, __ATOMIC_ACQ_REL));
}

/* ---- image groups ----------------------------------------------------------- */

/* Images are processed in groups: the im2col matrices of a group's images
 * sit side by side, so one GEMM has N = images * PQ columns (small images
 * alone make GEMMs too thin to run fast, and A is packed once per group).
 * A group is sized to reach about group_columns columns. */
#define GROUP_COLUMNS 2048
#define GROUP_COL_MAX_FLOATS ((int64_t)4 << 20)    /* 16 MiB of im2col per group */

static int64_t group_columns = GROUP_COLUMNS;

int64_t conv2d_set_group_columns(int64_t columns)
{
    int64_t old = group_columns;
    group_columns = columns > 0 ? columns : GROUP_COLUMNS;
    return old;
}

/* How a call is split: `outer` threads take contiguous ranges of images
 * (each running GEMMs on one thread), or outer = 1 and the GEMM and the
 * copies inside a group use `inner` threads. Groups hold at most nb images. */
typedef struct {
    int outer, inner;
    int64_t nb;
} conv_plan;

static conv_plan make_plan(const conv2d_shape *s, int nthreads)
{
    int64_t PQ = s->P * s->Q, CRS = s->C * s->R * s->S;
    int64_t work = 2 * s->N * s->K * CRS * PQ;
    int nt = fastcnn_threads_for(work, nthreads);
    conv_plan pl = {1, nt, 1};
    if (nt > 1 && s->N >= nt) {
        pl.outer = nt;
        pl.inner = 1;
    }
    int64_t per_thread = (s->N + pl.outer - 1) / pl.outer;
    /* a pointwise image is its own im2col: alone, it needs no copies in or out */
    int64_t nb = pointwise(s) && group_columns == GROUP_COLUMNS ? 1 : group_columns / PQ;
    if (nb * CRS * PQ > GROUP_COL_MAX_FLOATS)
        nb = GROUP_COL_MAX_FLOATS / (CRS * PQ);
    pl.nb = nb < 1 ? 1 : nb > per_thread ? per_thread : nb;
    return pl;
}

/* Scratch floats for one thread: a group's im2col (CRS, nb PQ) unless the
 * input itself serves, then a group's gathered output or gradient (K, nb PQ)
 * unless groups are single images. */
static int64_t scratch_floats(const conv2d_shape *s, const conv_plan *pl)
{
    int64_t cols = pl->nb * s->P * s->Q;
    int64_t col = pointwise(s) && pl->nb == 1 ? 0 : s->C * s->R * s->S * cols;
    return col + (pl->nb > 1 ? s->K * cols : 0);
}

static int64_t col_part(const conv2d_shape *s, const conv_plan *pl)
{
    return scratch_floats(s, pl) - (pl->nb > 1 ? s->K * pl->nb * s->P * s->Q : 0);
}

/* First image of part i when n images are split into parts even parts. */
static int64_t split_point(int64_t n, int64_t i, int64_t parts)
{
    return n * i / parts;
}

/* ---- im2col / col2im (a group of images side by side) --------------------- */

/* out (P, Q), image i at out + i ostride, = the input plane xc (H, W) of
 * image i (at xc + i xstride) seen through kernel tap (r, t), for i < cnt.
 * (No memcpy/memset calls for rows of a few floats: plain loops are faster.) */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void im2col_row(float *restrict out, const float *restrict xc, int64_t cnt,
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

typedef void (*im2col_tap_fn)(float *, const float *, int64_t, int64_t, int64_t, int64_t,
                              int64_t, const conv2d_shape *);

/* The instruction set's im2col of one tap (masked vector copies; stride 1). */
static im2col_tap_fn im2col_kernel(const conv2d_shape *s)
{
#ifdef FASTCNN_X86_KERNELS
    if (s->sw == 1 && fastcnn_isa() == FASTCNN_ISA_AVX512)
        return conv2d_im2col_tap_avx512;
    if (s->sw == 1 && fastcnn_isa() == FASTCNN_ISA_AVX2)
        return conv2d_im2col_tap_avx2;
#endif
    (void)s;
    return im2col_row;
}

/* col (CRS, cnt PQ) = the im2col matrices of cnt images x (cnt, C, H, W),
 * image i in columns [i PQ, (i+1) PQ). */
static void im2col(float *col, const float *x, int64_t cnt, const conv2d_shape *s,
                   int nthreads)
{
    int64_t rows = s->C * s->R * s->S, PQ = s->P * s->Q, cols = cnt * PQ;
    int64_t CHW = s->C * s->H * s->W;
    im2col_tap_fn tap = im2col_kernel(s);
    int nt = fastcnn_threads_for(rows * cols, nthreads);
    /* each row (c, r, t) of col is written by one iteration */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        int64_t c = row / (s->R * s->S), r = row / s->S % s->R, t = row % s->S;
        tap(col + row * cols, x + c * s->H * s->W, cnt, PQ, CHW, r, t, s);
    }
}

/* For i < cnt: the plane dxc + i xstride (H, W) += the plane in + i istride
 * (P, Q) scattered back through kernel tap (r, t). */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void col2im_row(float *restrict dxc, const float *restrict in, int64_t cnt,
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

/* dx (cnt, C, H, W) = col2im of col (CRS, cnt PQ), laid out as im2col's. */
static void col2im(float *dx, const float *col, int64_t cnt, const conv2d_shape *s,
                   int nthreads)
{
    int64_t HW = s->H * s->W, PQ = s->P * s->Q, RS = s->R * s->S, cols = cnt * PQ;
    int64_t CHW = s->C * HW;
    int nt = fastcnn_threads_for(cnt * s->C * RS * PQ, nthreads);
    /* channel c owns its planes of dx (in every image) and reads only its rows of col */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t c = 0; c < s->C; c++) {
        for (int64_t i = 0; i < cnt; i++)
            memset(dx + i * CHW + c * HW, 0, (size_t)HW * sizeof(float));
        for (int64_t rt = 0; rt < RS; rt++)
            col2im_row(dx + c * HW, col + (c * RS + rt) * cols, cnt, CHW, PQ, rt / s->S,
                       rt % s->S, s);
    }
}

/* cols (K, cnt PQ) = the stack of cnt images (cnt, K, PQ) side by side. */
static void gather_columns(float *cols, const float *stack, int64_t cnt,
                           const conv2d_shape *s, int nthreads)
{
    int64_t PQ = s->P * s->Q, width = cnt * PQ;
    int nt = fastcnn_threads_for(cnt * s->K * PQ, nthreads);
    /* each (image, k) row is copied by one iteration */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t it = 0; it < cnt * s->K; it++) {
        const float *restrict src = stack + it * PQ;
        float *restrict dst = cols + it % s->K * width + it / s->K * PQ;
        for (int64_t j = 0; j < PQ; j++) dst[j] = src[j];
    }
}

/* stack (cnt, K, PQ) = cols (K, cnt PQ) split into images, plus b (K) if given. */
static void scatter_columns(float *stack, const float *cols, const float *b, int64_t cnt,
                            const conv2d_shape *s, int nthreads)
{
    int64_t PQ = s->P * s->Q, width = cnt * PQ;
    int nt = fastcnn_threads_for(cnt * s->K * PQ, nthreads);
    /* each (image, k) row is written by one iteration */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t it = 0; it < cnt * s->K; it++) {
        float *restrict dst = stack + it * PQ;
        const float *restrict src = cols + it % s->K * width + it / s->K * PQ;
        float add = b ? b[it % s->K] : 0.0f;
        for (int64_t j = 0; j < PQ; j++) dst[j] = src[j] + add;
    }
}

/* ---- one group of cnt images ---------------------------------------------- */

/* y (cnt, K, PQ) = w (K, CRS) im2col(x (cnt, C, H, W)) + b. */
static int forward_group(float *y, const float *x, const float *w, const float *b,
                         int64_t cnt, float *scratch, const conv2d_shape *s,
                         const conv_plan *pl, int nthreads)
{
    int64_t CRS = s->C * s->R * s->S, PQ = s->P * s->Q, cols = cnt * PQ;
    const float *B = x;
    if (!(pointwise(s) && cnt == 1)) {
        im2col(scratch, x, cnt, s, nthreads);
        B = scratch;
    }
    if (cnt == 1)
        return sgemm_bias(0, 0, s->K, PQ, CRS, 1.0f, w, CRS, B, PQ, 0.0f, y, PQ, b, nthreads);
    float *out = scratch + col_part(s, pl);
    int err = sgemm(0, 0, s->K, cols, CRS, 1.0f, w, CRS, B, cols, 0.0f, out, cols, nthreads);
    if (!err)
        scatter_columns(y, out, b, cnt, s, nthreads);
    return err;
}

/* dx (cnt, C, H, W) = col2im(w^T (CRS, K) dy (K, cnt PQ)). */
static int backward_data_group(float *dx, const float *dy, const float *w, int64_t cnt,
                               float *scratch, const conv2d_shape *s, const conv_plan *pl,
                               int nthreads)
{
    int64_t CRS = s->C * s->R * s->S, PQ = s->P * s->Q, cols = cnt * PQ;
    if (pointwise(s) && cnt == 1)
        return sgemm(1, 0, s->C, PQ, s->K, 1.0f, w, CRS, dy, PQ, 0.0f, dx, PQ, nthreads);
    const float *B = dy;
    if (cnt > 1) {
        gather_columns(scratch + col_part(s, pl), dy, cnt, s, nthreads);
        B = scratch + col_part(s, pl);
    }
    int err = sgemm(1, 0, CRS, cols, s->K, 1.0f, w, CRS, B, cols, 0.0f, scratch, cols, nthreads);
    if (!err)
        col2im(dx, scratch, cnt, s, nthreads);
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
        im2col(scratch, x, cnt, s, nthreads);
        B = scratch;
    }
    if (cnt > 1) {
        gather_columns(scratch + col_part(s, pl), dy, cnt, s, nthreads);
        A = scratch + col_part(s, pl);
    }
    return sgemm(0, 1, s->K, CRS, cols, 1.0f, A, cols, B, cols, 1.0f, dw, CRS, nthreads);
}

/* ---- direct forward for first layers (conv2d_kernel.h) -------------------- */

/* Stride 1 and at most this C R S: the direct kernel beats im2col + GEMM. */
#define DIRECT_MAX_CRS 75

static int direct_mode = 0;     /* 0: by shape, 1: always when stride 1, -1: never */

int conv2d_set_direct(int mode)
{
    int old = direct_mode;
    direct_mode = mode;
    return old;
}

static int use_direct(const conv2d_shape *s)
{
    if (s->sh != 1 || s->sw != 1 || direct_mode < 0)
        return 0;
    return direct_mode > 0 || s->C * s->R * s->S <= DIRECT_MAX_CRS;
}

typedef void (*direct_block_fn)(float *, const float *, const float *, const float *,
                                int64_t, int64_t, const direct_geom *);

void conv2d_direct_block_generic(float *y, const float *xpad, const float *w, const float *b,
                                 int64_t k0, int64_t kn, const direct_geom *g)
{
    direct_block(y, xpad, w, b, k0, kn, g);
}

/* The instruction set's block kernel and its channels per block. */
static direct_block_fn direct_kernel(int64_t *kb)
{
#ifdef FASTCNN_X86_KERNELS
    switch (fastcnn_isa()) {
    case FASTCNN_ISA_AVX512: *kb = DIRECT_KB_AVX512; return conv2d_direct_block_avx512;
    case FASTCNN_ISA_AVX2: *kb = DIRECT_KB_AVX2; return conv2d_direct_block_avx2;
    default: break;
    }
#endif
    *kb = DIRECT_KB_GENERIC;
    return conv2d_direct_block_generic;
}

/* xpad (C, Hp, Wp) = image x (C, H, W) shifted by the top/left padding,
 * zero elsewhere (rows and columns past the image are cut at Hp, Wp). */
static void pad_image(float *xpad, const float *x, const conv2d_shape *s, int64_t Hp,
                      int64_t Wp)
{
    for (int64_t c = 0; c < s->C; c++)
        for (int64_t hp = 0; hp < Hp; hp++) {
            float *row = xpad + (c * Hp + hp) * Wp;
            int64_t h = hp - s->ph;
            memset(row, 0, (size_t)Wp * sizeof(float));
            if (h < 0 || h >= s->H)
                continue;
            int64_t n = s->W + s->pw > Wp ? Wp - s->pw : s->W;
            if (n > 0)
                memcpy(row + s->pw, x + (c * s->H + h) * s->W, (size_t)n * sizeof(float));
        }
}

/* y (N, K, P, Q) = conv(x, w) + b by the direct kernel (stride 1). */
static int direct_forward(float *y, const float *x, const float *w, const float *b,
                          const conv2d_shape *s, int nthreads)
{
    int64_t kb;
    direct_block_fn fn = direct_kernel(&kb);
    direct_geom g = {s->C, s->K, s->R, s->S, s->P, s->Q, s->P + s->R - 1,
                     (s->Q + DIRECT_WP_ALIGN - 1) / DIRECT_WP_ALIGN * DIRECT_WP_ALIGN + s->S - 1};
    int64_t blocks = (s->K + kb - 1) / kb, items = s->N * blocks;
    int64_t per = s->C * g.Hp * g.Wp, xsz = s->C * s->H * s->W, ysz = s->K * s->P * s->Q;
    int nt = fastcnn_threads_for(2 * s->N * s->K * s->C * s->R * s->S * s->P * s->Q, nthreads);
    if (nt > items)
        nt = (int)items;
    float *scratch = scratch_take(nt * per);
    if (!scratch)
        return FASTCNN_ENOMEM;
    /* thread t owns items (image, channel block) [split_point(t), split_point(t+1)):
     * their output planes, and its own padded image */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int t = 0; t < nt; t++) {
        float *xpad = scratch + t * per;
        int64_t padded = -1;
        for (int64_t it = split_point(items, t, nt); it < split_point(items, t + 1, nt); it++) {
            int64_t n = it / blocks, k0 = it % blocks * kb;
            if (n != padded)
                pad_image(xpad, x + n * xsz, s, g.Hp, g.Wp);
            padded = n;
            fn(y + n * ysz, xpad, w, b, k0, s->K - k0 < kb ? s->K - k0 : kb, &g);
        }
    }
    scratch_give(scratch);
    return FASTCNN_OK;
}

/* ---- channel-vector direct forward (conv2d_kernel.h) -------------------- */

static int kvec_mode = 0;       /* 0: by shape, 1: whenever K fits the vectors, -1: never */

int conv2d_set_kvec(int mode)
{
    int old = kvec_mode;
    kvec_mode = mode;
    return old;
}

typedef void (*kvec_block_fn)(float *, const float *, const float *, const float *, int64_t,
                              int, const kvec_geom *);

void conv2d_kvec_block_generic(float *y, const float *xpad, const float *wT, const float *b,
                               int64_t k0, int kv, const kvec_geom *g)
{
    kvec_block(y, xpad, wT, b, k0, kv, g);
}

/* The instruction set's block kernel and its vector length. */
static kvec_block_fn kvec_kernel(int64_t *vl)
{
#ifdef FASTCNN_X86_KERNELS
    switch (fastcnn_isa()) {
    case FASTCNN_ISA_AVX512: *vl = 16; return conv2d_kvec_block_avx512;
    case FASTCNN_ISA_AVX2: *vl = 8; return conv2d_kvec_block_avx2;
    default: break;
    }
#endif
    *vl = DIRECT_VL;
    return conv2d_kvec_block_generic;
}

/* By shape: K a multiple of the vector length and a kernel wider than 1x1
 * (a pointwise convolution is a plain GEMM, which the engine does faster). */
static int use_kvec(const conv2d_shape *s)
{
    int64_t vl;
    kvec_kernel(&vl);
    if (kvec_mode < 0 || s->K % vl)
        return 0;
    return kvec_mode > 0 || s->R * s->S > 1;
}

/* y (N, K, P, Q) = conv(x, w) + b by the channel-vector kernel (K % VL == 0). */
static int kvec_forward(float *y, const float *x, const float *w, const float *b,
                        const conv2d_shape *s, int nthreads)
{
    int64_t vl;
    kvec_block_fn fn = kvec_kernel(&vl);
    kvec_geom g = {s->C, s->K, s->R, s->S, s->sh, s->sw, s->P, s->Q,
                   (s->P - 1) * s->sh + s->R, (s->Q - 1) * s->sw + s->S};
    int64_t vecs = s->K / vl;
    int kv = vecs % 2 == 0 ? 2 : 1;
    int64_t blocks = vecs / kv, items = s->N * blocks, CRS = s->C * s->R * s->S;
    int64_t per = s->C * g.Hp * g.Wp, xsz = s->C * s->H * s->W, ysz = s->K * s->P * s->Q;
    int nt = fastcnn_threads_for(2 * s->N * s->K * CRS * s->P * s->Q, nthreads);
    if (nt > items)
        nt = (int)items;
    float *scratch = scratch_take(CRS * s->K + nt * per);
    if (!scratch)
        return FASTCNN_ENOMEM;
    float *wT = scratch + nt * per;
    for (int64_t k = 0; k < s->K; k++)
        for (int64_t i = 0; i < CRS; i++) wT[i * s->K + k] = w[k * CRS + i];
    /* thread t owns items (image, channel block) [split_point(t), split_point(t+1)):
     * their output planes, and its own padded image */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int t = 0; t < nt; t++) {
        float *xpad = scratch + t * per;
        int64_t padded = -1;
        for (int64_t it = split_point(items, t, nt); it < split_point(items, t + 1, nt); it++) {
            int64_t n = it / blocks, k0 = it % blocks * kv * vl;
            if (n != padded)
                pad_image(xpad, x + n * xsz, s, g.Hp, g.Wp);
            padded = n;
            fn(y + n * ysz, xpad, wT, b, k0, kv, &g);
        }
    }
    scratch_give(scratch);
    return FASTCNN_OK;
}

/* Backward data as a forward convolution (stride 1, padding below the
 * kernel size): dx is dy, padded by R-1-ph on top and S-1-pw on the left,
 * convolved with the kernel flipped in both axes, channels swapped. */
static int kvec_backward_data_fits(const conv2d_shape *s)
{
    int64_t vl;
    kvec_kernel(&vl);
    return kvec_mode >= 0 && s->sh == 1 && s->sw == 1 && s->ph < s->R && s->pw < s->S
        && s->C % vl == 0 && s->R * s->S > 1;
}

static int kvec_backward_data(float *dx, const float *dy, const float *w,
                              const conv2d_shape *s, int nthreads)
{
    conv2d_shape t = {s->N, s->K, s->P, s->Q, s->C, s->R, s->S, 1, 1,
                      s->R - 1 - s->ph, s->S - 1 - s->pw, s->H, s->W};
    int64_t RS = s->R * s->S;
    float *wf = fastcnn_alloc(s->K * s->C * RS * (int64_t)sizeof(float));
    if (!wf)
        return FASTCNN_ENOMEM;
    for (int64_t k = 0; k < s->K; k++)      /* wf (C, K, R, S) = w (K, C, R, S) flipped */
        for (int64_t c = 0; c < s->C; c++)
            for (int64_t rt = 0; rt < RS; rt++)
                wf[(c * s->K + k) * RS + rt] = w[(k * s->C + c) * RS + RS - 1 - rt];
    int err = kvec_forward(dx, dy, wf, NULL, &t, nthreads);
    fastcnn_free(wf);
    return err;
}

/* ---- channel-vector weight gradient (conv2d_kernel.h) --------------------- */

typedef void (*wgrad_image_fn)(float *, const float *, const float *, const kvec_geom *);

void conv2d_wgrad_image_generic(float *dwT, const float *xpad, const float *dyT,
                                const kvec_geom *g)
{
    wgrad_image(dwT, xpad, dyT, g);
}

static wgrad_image_fn wgrad_kernel(void)
{
#ifdef FASTCNN_X86_KERNELS
    switch (fastcnn_isa()) {
    case FASTCNN_ISA_AVX512: return conv2d_wgrad_image_avx512;
    case FASTCNN_ISA_AVX2: return conv2d_wgrad_image_avx2;
    default: break;
    }
#endif
    return conv2d_wgrad_image_generic;
}

/* K a multiple of the vector length, S = 3 or 5, and an image per thread
 * (threads split the images; with fewer, the GEMM path splits its product). */
static int wgrad_fits(const conv2d_shape *s, int nthreads)
{
    int64_t vl;
    kvec_kernel(&vl);
    int nt = fastcnn_threads_for(2 * s->N * s->K * s->C * s->R * s->S * s->P * s->Q, nthreads);
    return kvec_mode >= 0 && s->K % vl == 0 && (s->S == 3 || s->S == 5) && s->N >= nt;
}

/* dyT (PQ, K) = dy (K, PQ) of one image, in 16 x 16 blocks. */
static void transpose_plane(float *restrict dyT, const float *restrict dy, int64_t K,
                            int64_t PQ)
{
    for (int64_t k0 = 0; k0 < K; k0 += 16)
        for (int64_t j0 = 0; j0 < PQ; j0 += 16) {
            int64_t kn = K - k0 < 16 ? K - k0 : 16, jn = PQ - j0 < 16 ? PQ - j0 : 16;
            for (int64_t k = k0; k < k0 + kn; k++)
                for (int64_t j = j0; j < j0 + jn; j++) dyT[j * K + k] = dy[k * PQ + j];
        }
}

/* dw (K, C, R, S) += the weight gradient, by the channel-vector kernel:
 * threads take contiguous ranges of images, each summing into its own
 * dwT (CRS, K), added to dw at the end. */
static int wgrad_backward_weight(float *dw, const float *dy, const float *x,
                                 const conv2d_shape *s, int nthreads)
{
    wgrad_image_fn fn = wgrad_kernel();
    kvec_geom g = {s->C, s->K, s->R, s->S, s->sh, s->sw, s->P, s->Q,
                   (s->P - 1) * s->sh + s->R, (s->Q - 1) * s->sw + s->S};
    int64_t CRS = s->C * s->R * s->S, PQ = s->P * s->Q, wsz = CRS * s->K;
    int64_t xsz = s->C * s->H * s->W, ysz = s->K * PQ;
    int64_t per = s->C * g.Hp * g.Wp + PQ * s->K + wsz;
    int nt = fastcnn_threads_for(2 * s->N * s->K * CRS * PQ, nthreads);
    if (nt > s->N)
        nt = (int)s->N;
    float *scratch = scratch_take(nt * per);
    if (!scratch)
        return FASTCNN_ENOMEM;
    /* thread t owns images [split_point(t), split_point(t+1)) and its scratch */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int t = 0; t < nt; t++) {
        float *xpad = scratch + t * per, *dyT = xpad + s->C * g.Hp * g.Wp, *dwT = dyT + PQ * s->K;
        memset(dwT, 0, (size_t)wsz * sizeof(float));
        for (int64_t n = split_point(s->N, t, nt); n < split_point(s->N, t + 1, nt); n++) {
            pad_image(xpad, x + n * xsz, s, g.Hp, g.Wp);
            transpose_plane(dyT, dy + n * ysz, s->K, PQ);
            fn(dwT, xpad, dyT, &g);
        }
    }
    int ntr = fastcnn_threads_for(wsz * nt, nthreads);
    /* each k writes its own row of dw */
    #pragma omp parallel for num_threads(ntr) if (ntr > 1) schedule(static)
    for (int64_t k = 0; k < s->K; k++)
        for (int t = 0; t < nt; t++) {
            const float *dwT = scratch + t * per + s->C * g.Hp * g.Wp + PQ * s->K;
            for (int64_t i = 0; i < CRS; i++) dw[k * CRS + i] += dwT[i * s->K + k];
        }
    scratch_give(scratch);
    return FASTCNN_OK;
}

/* ---- fast kernels ------------------------------------------------------------ */

enum { FORWARD, BACKWARD_DATA, BACKWARD_WEIGHT };

typedef struct {
    int op;
    float *out;             /* y, dx, or dw (thread 0's; others use partial sums) */
    const float *x, *w, *b;
    const float *dy;
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
            err = forward_group(cc->out + n * ysz, cc->x + n * xsz, cc->w, cc->b, cnt, scratch,
                                s, pl, nthreads);
        else if (cc->op == BACKWARD_DATA)
            err = backward_data_group(cc->out + n * xsz, cc->dy + n * ysz, cc->w, cnt, scratch,
                                      s, pl, nthreads);
        else
            err = backward_weight_group(dw, cc->dy + n * ysz, cc->x + n * xsz, cnt, scratch,
                                        s, pl, nthreads);
    }
    return err;
}

/* dw (n) += the nparts partial sums stacked in parts (nparts, n). */
static void reduce_partials(float *dw, const float *parts, int nparts, int64_t n,
                            int nthreads)
{
    int nt = fastcnn_threads_for(n * nparts, nthreads);
    /* each i written once */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < nparts; j++) dw[i] += parts[j * n + i];
}

/* Split the images by the plan and run cc; backward weight: threads t >= 1
 * accumulate into zeroed partial sums, added to dw at the end. */
static int run(const conv_call *cc, const conv2d_shape *s, int nthreads)
{
    conv_plan pl = make_plan(s, nthreads);
    int64_t per = scratch_floats(s, &pl), wsz = s->K * s->C * s->R * s->S;
    int64_t parts = cc->op == BACKWARD_WEIGHT ? (pl.outer - 1) * wsz : 0;
    float *scratch = scratch_take(pl.outer * per + parts);
    if (!scratch)
        return FASTCNN_ENOMEM;
    float *partial = scratch + pl.outer * per;
    int err = 0;
    /* thread t owns images [split_point(t), split_point(t+1)) of the output,
     * its scratch, and (backward weight) its own dw: dw itself or a partial */
    #pragma omp parallel for num_threads(pl.outer) if (pl.outer > 1) schedule(static) \
        reduction(|:err)
    for (int t = 0; t < pl.outer; t++) {
        float *dw = t == 0 ? cc->out : partial + (t - 1) * wsz;
        if (cc->op == BACKWARD_WEIGHT && t > 0)
            memset(dw, 0, (size_t)wsz * sizeof(float));
        err |= run_images(cc, dw, split_point(s->N, t, pl.outer),
                          split_point(s->N, t + 1, pl.outer), scratch + t * per, s, &pl,
                          pl.inner);
    }
    if (!err && parts)
        reduce_partials(cc->out, partial, pl.outer - 1, wsz, nthreads);
    scratch_give(scratch);
    return err ? FASTCNN_ENOMEM : FASTCNN_OK;
}

int conv2d_forward(float *y, const float *x, const float *w, const float *b,
                   const conv2d_shape *s, int nthreads)
{
    if (use_direct(s))
        return direct_forward(y, x, w, b, s, nthreads);
    if (use_kvec(s))
        return kvec_forward(y, x, w, b, s, nthreads);
    conv_call cc = {FORWARD, y, x, w, b, NULL};
    return run(&cc, s, nthreads);
}

int conv2d_backward_data(float *dx, const float *dy, const float *w,
                         const conv2d_shape *s, int nthreads)
{
    if (kvec_backward_data_fits(s))
        return kvec_backward_data(dx, dy, w, s, nthreads);
    conv_call cc = {BACKWARD_DATA, dx, NULL, w, NULL, dy};
    return run(&cc, s, nthreads);
}

/* Sum of v (n) in float lanes (vectorizable), finished in double. */
static double row_sum(const float *v, int64_t n)
{
    float lane[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) lane[j] += v[i + j];
    double acc = 0.0;
    for (int j = 0; j < 16; j++) acc += lane[j];
    for (; i < n; i++) acc += v[i];
    return acc;
}

/* db (K) += sum of dy (N, K, PQ) over N and PQ. */
static void bias_grad(float *db, const float *dy, const conv2d_shape *s, int nthreads)
{
    int64_t PQ = s->P * s->Q;
    int nt = fastcnn_threads_for(s->N * s->K * PQ, nthreads);
    /* each k writes only db[k] */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t k = 0; k < s->K; k++) {
        double acc = 0.0;
        for (int64_t n = 0; n < s->N; n++) acc += row_sum(dy + (n * s->K + k) * PQ, PQ);
        db[k] += (float)acc;
    }
}

int conv2d_backward_weight(float *dw, float *db, const float *dy, const float *x,
                           const conv2d_shape *s, int nthreads)
{
    conv_call cc = {BACKWARD_WEIGHT, dw, x, NULL, NULL, dy};
    int err = wgrad_fits(s, nthreads) ? wgrad_backward_weight(dw, dy, x, s, nthreads)
                            : run(&cc, s, nthreads);
    if (!err && db)
        bias_grad(db, dy, s, nthreads);
    return err;
}
