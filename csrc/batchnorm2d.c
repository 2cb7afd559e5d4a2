/* batchnorm2d.c - batch normalization over NCHW images, per channel.
 * x, y, dx, dy: (N, C, HW); mean, var, invstd, gamma, beta, dgamma, dbeta: (C).
 * Training normalizes with the batch's statistics (biased variance);
 * inference with given ones. gamma and beta may be NULL (1 and 0); y may be
 * NULL in training (the statistics only).
 *
 * Training's forward and backward are each one reduction per channel (the
 * moments of x; the sums of dy and dy (x - mean)) followed by one map over
 * the channel (y; dx) with coefficients from it. A channel's values are read
 * from memory once: the map follows the reduction of the same channel, by
 * the same thread, while the values are still in the core's L2 cache.
 *
 * Summation order, fixed by the shape alone (so the results do not depend on
 * the thread count): a channel's N * HW values are cut into blocks of at most
 * BN_BLOCK floats (the plane in consecutive images, or a piece of one
 * plane), each summed in float vectors (batchnorm2d_kernel.h); consecutive
 * blocks form at most BN_PARTS parts, each accumulated in double; the parts
 * are combined in order. Planes of fewer than BN_FEW_HW values are summed
 * per position over images instead (bn_run_few). The moments are taken
 * around the channel's first value and combine by Chan's parallel update
 * (count, sum, sum of squared deviations), so a large mean does not cancel
 * the variance's digits. */
#include <math.h>
#include <stddef.h>

#include "dispatch.h"
#include "fastcnn.h"

#define BN_VBYTES 16
#include "batchnorm2d_kernel.h"

BATCHNORM2D_DEFINE(generic)

static const batchnorm2d_kernels *batchnorm2d_kernels_for(int isa)
{
    return FASTCNN_KERNELS_FOR(isa, batchnorm2d_kernels);
}

/* ---- reference kernels: plain loops in double (the test oracle) ---------------- */

void batchnorm2d_forward_train_ref(float *y, float *mean, float *var, float *invstd,
                                   const float *x, const float *gamma, const float *beta,
                                   int64_t N, int64_t C, int64_t HW, double eps)
{
    double cnt = (double)(N * HW);
    for (int64_t c = 0; c < C; c++) {
        double s = 0.0, ss = 0.0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < HW; i++)
                s += x[(n * C + c) * HW + i];
        double m = s / cnt;
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < HW; i++) {
                double d = x[(n * C + c) * HW + i] - m;
                ss += d * d;
            }
        double is = 1.0 / sqrt(ss / cnt + eps), g = gamma ? gamma[c] : 1.0;
        double b = beta ? beta[c] : 0.0;
        mean[c] = (float)m;
        var[c] = (float)(ss / cnt);
        invstd[c] = (float)is;
        if (y)
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < HW; i++) {
                    int64_t j = (n * C + c) * HW + i;
                    y[j] = (float)((x[j] - m) * is * g + b);
                }
    }
}

void batchnorm2d_forward_eval_ref(float *y, const float *x, const float *mean, const float *var,
                                  const float *gamma, const float *beta, int64_t N, int64_t C,
                                  int64_t HW, double eps)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            double is = 1.0 / sqrt((double)var[c] + eps), g = gamma ? gamma[c] : 1.0;
            double b = beta ? beta[c] : 0.0;
            for (int64_t i = 0; i < HW; i++) {
                int64_t j = (n * C + c) * HW + i;
                y[j] = (float)((x[j] - mean[c]) * is * g + b);
            }
        }
}

void batchnorm2d_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy,
                              const float *x, const float *mean, const float *invstd,
                              const float *gamma, int64_t N, int64_t C, int64_t HW)
{
    double cnt = (double)(N * HW);
    for (int64_t c = 0; c < C; c++) {
        double sdy = 0.0, sdyx = 0.0, m = mean[c], is = invstd[c];
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < HW; i++) {
                int64_t j = (n * C + c) * HW + i;
                sdy += dy[j];
                sdyx += dy[j] * (x[j] - m) * is;
            }
        if (dgamma)
            dgamma[c] += (float)sdyx;
        if (dbeta)
            dbeta[c] += (float)sdy;
        if (!dx)
            continue;
        double k = (gamma ? gamma[c] : 1.0) * is;
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < HW; i++) {
                int64_t j = (n * C + c) * HW + i;
                dx[j] = (float)(k * (dy[j] - sdy / cnt - (x[j] - m) * is * sdyx / cnt));
            }
    }
}

/* ---- the channel driver: a reduction, then a map, per channel ------------------- */

#define BN_PARTS 16             /* most parts per channel: the threads' grain when C is small */

/* A channel's values as units (blocks): planes of at most BN_BLOCK floats
 * grouped by consecutive images, `planes` per unit; larger planes cut into
 * `spans` units of BN_BLOCK floats (the last shorter). Parts: consecutive
 * runs of units. Runs of a unit are C * HW floats apart. */
typedef struct {
    int64_t N, C, HW, spans, planes, units;     /* per plane; per unit; per channel */
    int parts;
} bn_layout;

static bn_layout bn_layout_of(int64_t N, int64_t C, int64_t HW)
{
    bn_layout l = {N, C, HW, (HW + BN_BLOCK - 1) / BN_BLOCK, 1, 0, 0};
    if (l.spans > 1)
        l.units = N * l.spans;
    else {
        l.planes = BN_BLOCK / (HW > 0 ? HW : 1);
        l.units = (N + l.planes - 1) / l.planes;
    }
    l.parts = (int)(l.units < BN_PARTS ? l.units : BN_PARTS);
    return l;
}

/* unit u of channel c: its offset in the (N, C, HW) tensor, *rows runs of *len floats */
static inline int64_t bn_unit(const bn_layout *l, int64_t c, int64_t u, int64_t *rows,
                              int64_t *len)
{
    if (l->spans > 1) {
        int64_t n = u / l->spans, lo = (u % l->spans) * BN_BLOCK;
        *rows = 1;
        *len = l->HW - lo < BN_BLOCK ? l->HW - lo : BN_BLOCK;
        return (n * l->C + c) * l->HW + lo;
    }
    int64_t n = u * l->planes;
    *rows = l->N - n < l->planes ? l->N - n : l->planes;
    *len = l->HW;
    return (n * l->C + c) * l->HW;
}

/* first unit of part p (p = parts: the end) */
static inline int64_t bn_part_start(const bn_layout *l, int p)
{
    return l->units * p / l->parts;
}

typedef struct bn_job bn_job;
struct bn_job {
    bn_layout l;
    const batchnorm2d_kernels *k;
    /* r[3] = units [u0, u1) of channel c reduced (fresh, in double); NULL: none */
    void (*reduce)(const bn_job *j, int64_t c, int64_t u0, int64_t u1, double r[3]);
    /* the parts' r in order -> coef; writes channel c's per-channel outputs */
    void (*finish)(const bn_job *j, int64_t c, double (*r)[3], float coef[4]);
    /* units [u0, u1) of channel c mapped with coef; NULL: no map */
    void (*map)(const bn_job *j, int64_t c, int64_t u0, int64_t u1, const float coef[4]);
    /* the same for planes of few values (bn_run_small): channels [c0, c1)
     * reduced into r[c - c0], mapped with coef[c - c0] */
    void (*reduce_few)(const bn_job *j, int64_t c0, int64_t c1, double (*r)[3]);
    void (*map_few)(const bn_job *j, int64_t c0, int64_t c1, const float (*coef)[4]);
    float *out;                         /* y or dx */
    float *mean_out, *var_out, *invstd_out;     /* forward's statistics */
    float *dgamma, *dbeta;
    const float *mean, *var, *invstd;   /* given: the forward's (backward), the running
                                         * ones (inference) */
    const float *x, *dy, *gamma, *beta;
    double eps;
    int stream;                         /* map's output by non-temporal stores */
};

/* channel c whole, by the calling thread */
static void bn_channel(const bn_job *j, int64_t c)
{
    double r[BN_PARTS][3];
    float coef[4];
    for (int p = 0; j->reduce && p < j->l.parts; p++)
        j->reduce(j, c, bn_part_start(&j->l, p), bn_part_start(&j->l, p + 1), r[p]);
    j->finish(j, c, r, coef);
    if (j->map)
        j->map(j, c, 0, j->l.units, coef);
}

/* bn_channel for fastcnn_parallel_for */
static void bn_channel_chunk(void *ctx, int64_t c, int slot)
{
    (void)slot;
    bn_channel(ctx, c);
}

/* One channel's parts, for fastcnn_parallel_for (bn_channels_split). */
typedef struct {
    const bn_job *j;
    int64_t c;
    double (*r)[3];
    const float *coef;
} bn_parts;

/* part p's sums */
static void reduce_part(void *ctx, int64_t p, int slot)
{
    const bn_parts *b = ctx;
    (void)slot;
    b->j->reduce(b->j, b->c, bn_part_start(&b->j->l, (int)p), bn_part_start(&b->j->l, (int)p + 1),
                 b->r[p]);
}

/* part p's outputs */
static void map_part(void *ctx, int64_t p, int slot)
{
    const bn_parts *b = ctx;
    (void)slot;
    b->j->map(b->j, b->c, bn_part_start(&b->j->l, (int)p), bn_part_start(&b->j->l, (int)p + 1),
              b->coef);
}

/* every channel, its parts shared by nt threads (few channels); a part's
 * outputs are mapped by the thread slot that summed it (the pool cuts both
 * loops alike), so its values are in that core's cache */
static void bn_channels_split(const bn_job *j, int nt)
{
    double r[BN_PARTS][3];
    float coef[4];
    bn_parts b = {j, 0, r, coef};
    for (b.c = 0; b.c < j->l.C; b.c++) {
        /* each part's sums, then each part's outputs, written by one work item */
        if (j->reduce)
            fastcnn_parallel_for(j->l.parts, reduce_part, &b, nt);
        j->finish(j, b.c, r, coef);
        if (j->map)
            fastcnn_parallel_for(j->l.parts, map_part, &b, nt);
    }
}

/* A map's output goes around the cache (non-temporal stores) when it is more
 * than half the last-level cache: with the inputs the op streams through, it
 * would be evicted before it is read, and a cached store first reads the line
 * it writes (a third more memory traffic in the backward). The cache counted
 * is at most BN_LLC_MAX: a larger one is shared by many cores (and, in a
 * VM, by other guests), so a process cannot count on it. Measured on a
 * 2-core VM of a Xeon whose L3 reads 300 MiB: the backward on 32x64x56x56
 * (24.5 MiB) took 8.85 ms with cached stores, 3.66 ms streamed. The stores
 * are fenced once per map of a channel or part, not per block: on Zen 4,
 * interleaved with a build that fenced each block of two planes, that
 * backward ran 1-5% faster on 1 thread and 8-17% on 2 (the stores drain
 * while the next channel's sums read). */
#define BN_LLC_MAX ((int64_t)32 << 20)
static int stream_mode = 0;     /* test hook: 0 by size, 1 always, -1 never */

int batchnorm2d_set_stream(int mode)
{
    int old = stream_mode;
    stream_mode = mode;
    return old;
}

static int bn_streams(const bn_layout *l)
{
    if (stream_mode)
        return stream_mode > 0;
    int64_t llc = fastcnn_llc_bytes();
    llc = llc < BN_LLC_MAX ? llc : BN_LLC_MAX;
    return l->N * l->C * l->HW * (int64_t)sizeof(float) > llc / 2;
}

/* Floats from a value of channel c to the same value of the next channel,
 * whose inputs a streamed map of c prefetches into L2 as it goes (0: none):
 * that channel's sums (the same thread's next work, as a rule) find them
 * there. The map's reads hit the cache and its stores go around it, so the
 * memory's read side is otherwise idle while they drain. Only where a
 * channel's inputs fit in L2: there the prefetched lines replace the ones
 * just mapped. Prefetched with the map's loads, a line per vector (a burst
 * of a unit's lines after its map gained a third as much). Zen 4,
 * interleaved with the build without, 1 / 2 threads: backward 32x64x56x56
 * 19-21% / 21-31% faster, 8x256x56x56 36% / 29%, forward 32x64x56x56 6% /
 * 17%; prefetches into L1 or non-temporal ones were slower than none.
 * Where a channel exceeds L2 (16x32x112x112 backward, 1.6 MB a channel)
 * they gained 0-2% (the burst lost 4-5%): not issued there. */
static int64_t bn_next(const bn_job *j, int64_t c)
{
    int64_t inputs = j->dy ? 2 : 1;
    int fits = j->l.N * j->l.HW * inputs * (int64_t)sizeof(float) <= fastcnn_l2_bytes();
    return j->stream && fits && c + 1 < j->l.C ? j->l.HW : 0;
}

/* Planes of fewer values than this take bn_run_few: a channel's values are
 * then N runs of a few floats, a plane apart, whose per-channel calls and
 * strided reads cost several times the arithmetic (64x512x1x1, the
 * forward: 129 us, torch 18). */
#define BN_FEW_HW 17
#define BN_FEW_CHANNELS 16      /* channels per work item of bn_run_few */
#define BN_FEW_VALUES (BN_FEW_CHANNELS * (BN_FEW_HW - 1))   /* floats of its slice of an image */
#define BN_FEW_FLUSH 256        /* images summed per position in float, then in double */

/* Over images [n0, min(n0 + BN_FEW_FLUSH, N)) of a slice of w floats (image
 * n at a + n ld): acc[v] = the sum of a - sub[v]; with b (not NULL), the
 * sum of b (a - sub[v]) instead, and bsum[v] the sum of b. */
static void few_sums(float *restrict acc, float *restrict bsum, const float *a, const float *b,
                     const float *restrict sub, int64_t n0, int64_t N, int64_t w, int64_t ld)
{
    int64_t n1 = n0 + BN_FEW_FLUSH < N ? n0 + BN_FEW_FLUSH : N;
    for (int64_t v = 0; v < w; v++)
        acc[v] = 0.0f;
    if (bsum)
        for (int64_t v = 0; v < w; v++)
            bsum[v] = 0.0f;
    for (int64_t n = n0; n < n1; n++) {
        const float *restrict an = a + n * ld;
        if (!b) {
            for (int64_t v = 0; v < w; v++)
                acc[v] += an[v] - sub[v];
            continue;
        }
        const float *restrict bn = b + n * ld;
        for (int64_t v = 0; v < w; v++) {
            bsum[v] += bn[v];
            acc[v] += bn[v] * (an[v] - sub[v]);
        }
    }
}

/* acc[v] = the sum of ((a - shift[v]) - mean[v])^2 over the images of few_sums */
static void few_squares(float *restrict acc, const float *a, const float *restrict shift,
                        const float *restrict mean, int64_t n0, int64_t N, int64_t w, int64_t ld)
{
    int64_t n1 = n0 + BN_FEW_FLUSH < N ? n0 + BN_FEW_FLUSH : N;
    for (int64_t v = 0; v < w; v++)
        acc[v] = 0.0f;
    for (int64_t n = n0; n < n1; n++) {
        const float *restrict an = a + n * ld;
        for (int64_t v = 0; v < w; v++) {
            float d = (an[v] - shift[v]) - mean[v];
            acc[v] += d * d;
        }
    }
}

/* Work item i of bn_run_few: its channels' sums, coefficients and map. */
static void few_chunk(void *ctx, int64_t i, int slot)
{
    const bn_job *j = ctx;
    int64_t c0 = i * BN_FEW_CHANNELS, c1 = c0 + BN_FEW_CHANNELS < j->l.C ? c0 + BN_FEW_CHANNELS
                                                                        : j->l.C;
    double r[BN_FEW_CHANNELS][3];
    float coef[BN_FEW_CHANNELS][4];
    (void)slot;
    if (j->reduce_few)
        j->reduce_few(j, c0, c1, r);
    for (int64_t c = c0; c < c1; c++)
        j->finish(j, c, &r[c - c0], coef[c - c0]);
    if (j->map_few)
        j->map_few(j, c0, c1, (const float (*)[4])coef);
}

/* Planes of few values: chunks of channels, each read image by image (the
 * chunk's slice of an image is contiguous), one part per channel summed in
 * double in a fixed order (results independent of the thread count). */
static void bn_run_few(const bn_job *j, int nt)
{
    bn_job one = *j;
    one.l.parts = 1;
    /* each chunk's channels written by one work item */
    fastcnn_parallel_for((j->l.C + BN_FEW_CHANNELS - 1) / BN_FEW_CHANNELS, few_chunk, &one, nt);
}

static void bn_run(bn_job *j, int nthreads)
{
    j->stream = j->map && bn_streams(&j->l);
    int64_t C = j->l.C;
    int nt = fastcnn_threads_for(j->l.N * C * j->l.HW, nthreads);
    if (j->l.HW < BN_FEW_HW) {
        bn_run_few(j, nt);
        return;
    }
    /* channels in whole to threads unless that leaves threads idle for long */
    if (nt > 1 && C % nt != 0 && C < 8 * nt && j->l.parts > 1) {
        bn_channels_split(j, nt);
        return;
    }
    /* each channel's outputs written by one thread */
    fastcnn_parallel_for(C, bn_channel_chunk, j, nt);
}

/* ---- training forward ------------------------------------------------------------ */

/* r += (count, sum, sum of squared deviations) of a set of values: Chan's
 * update, the deviations taken from each set's mean (the sum / count) */
static void moments_merge(double r[3], double n, double sum, double m2)
{
    if (r[0] == 0.0) {
        r[0] = n, r[1] = sum, r[2] = m2;
        return;
    }
    double d = sum / n - r[1] / r[0];
    r[2] += m2 + d * d * (r[0] * n / (r[0] + n));
    r[0] += n;
    r[1] += sum;
}

/* the value channel c's moments are taken around: its first value if finite
 * (a constant channel sums to exactly 0: its mean is exact), else 0 */
static float moments_shift(const bn_job *j, int64_t c)
{
    float x0 = j->x[c * j->l.HW];
    return isfinite(x0) ? x0 : 0.0f;
}

/* r = the moments of units [u0, u1), around moments_shift */
static void moments_reduce(const bn_job *j, int64_t c, int64_t u0, int64_t u1, double r[3])
{
    float shift = moments_shift(j, c);
    r[0] = r[1] = r[2] = 0.0;
    for (int64_t u = u0; u < u1; u++) {
        int64_t rows, len, off = bn_unit(&j->l, c, u, &rows, &len);
        float s, m2;
        j->k->moments(&s, &m2, j->x + off, rows, len, j->l.C * j->l.HW, shift);
        moments_merge(r, (double)(rows * len), s, m2);
    }
}

/* coef: scale, shift */
static void moments_finish(const bn_job *j, int64_t c, double (*r)[3], float coef[4])
{
    double t[3] = {0.0, 0.0, 0.0};
    for (int p = 0; p < j->l.parts; p++)
        moments_merge(t, r[p][0], r[p][1], r[p][2]);
    double v = t[2] / t[0];
    float mean = (float)(moments_shift(j, c) + t[1] / t[0]);
    float invstd = (float)(1.0 / sqrt(v + j->eps));
    j->mean_out[c] = mean;
    j->var_out[c] = (float)v;
    j->invstd_out[c] = invstd;
    coef[0] = invstd * (j->gamma ? j->gamma[c] : 1.0f);
    coef[1] = (j->beta ? j->beta[c] : 0.0f) - mean * coef[0];
}

/* r[c - c0] = the moments of channels [c0, c1) around moments_shift: the
 * sum of x - shift, then the squared deviations from its mean ((x - shift)
 * - mean, in float as bn_moments takes them), each summed per position in
 * float over at most BN_FEW_FLUSH images, then per channel in double */
static void moments_few(const bn_job *j, int64_t c0, int64_t c1, double (*r)[3])
{
    int64_t N = j->l.N, HW = j->l.HW, w = (c1 - c0) * HW;
    const float *x = j->x + c0 * HW;
    float shift[BN_FEW_VALUES], mean[BN_FEW_VALUES], acc[BN_FEW_VALUES];
    double sum[BN_FEW_CHANNELS] = {0}, m2[BN_FEW_CHANNELS] = {0};
    for (int64_t v = 0; v < w; v++)
        shift[v] = moments_shift(j, c0 + v / HW);
    for (int64_t n0 = 0; n0 < N; n0 += BN_FEW_FLUSH) {
        few_sums(acc, NULL, x, NULL, shift, n0, N, w, j->l.C * HW);
        for (int64_t v = 0; v < w; v++)
            sum[v / HW] += acc[v];
    }
    for (int64_t v = 0; v < w; v++)
        mean[v] = (float)(sum[v / HW] / (double)(N * HW));
    for (int64_t n0 = 0; n0 < N; n0 += BN_FEW_FLUSH) {
        few_squares(acc, x, shift, mean, n0, N, w, j->l.C * HW);
        for (int64_t v = 0; v < w; v++)
            m2[v / HW] += acc[v];
    }
    for (int64_t c = c0; c < c1; c++) {
        r[c - c0][0] = (double)(N * HW);
        r[c - c0][1] = sum[c - c0];
        r[c - c0][2] = m2[c - c0];
    }
}

/* y = x scale + shift for channels [c0, c1), coef[c - c0] = (scale, shift) */
static void normalize_few(const bn_job *j, int64_t c0, int64_t c1, const float (*coef)[4])
{
    int64_t HW = j->l.HW, w = (c1 - c0) * HW, ld = j->l.C * HW;
    float scale[BN_FEW_VALUES], shift[BN_FEW_VALUES];
    for (int64_t v = 0; v < w; v++)
        scale[v] = coef[v / HW][0], shift[v] = coef[v / HW][1];
    for (int64_t n = 0; n < j->l.N; n++) {
        const float *restrict x = j->x + n * ld + c0 * HW;
        float *restrict y = j->out + n * ld + c0 * HW;
        for (int64_t v = 0; v < w; v++)
            y[v] = x[v] * scale[v] + shift[v];
    }
}

static void normalize_map(const bn_job *j, int64_t c, int64_t u0, int64_t u1,
                          const float coef[4])
{
    int64_t next = bn_next(j, c);
    for (int64_t u = u1 - 1; u >= u0; u--) {    /* last summed first: still cached */
        int64_t rows, len, off = bn_unit(&j->l, c, u, &rows, &len);
        j->k->affine(j->out + off, j->x + off, rows, len, j->l.C * j->l.HW, coef[0], coef[1],
                     j->stream, next);
    }
    if (j->stream)
        j->k->fence();
}

void batchnorm2d_forward_train(float *y, float *mean, float *var, float *invstd, const float *x,
                               const float *gamma, const float *beta, int64_t N, int64_t C,
                               int64_t HW, double eps, int nthreads)
{
    bn_job j = {.l = bn_layout_of(N, C, HW), .k = batchnorm2d_kernels_for(fastcnn_isa()),
                .reduce = moments_reduce, .finish = moments_finish,
                .map = y ? normalize_map : NULL, .reduce_few = moments_few,
                .map_few = y ? normalize_few : NULL, .out = y, .mean_out = mean, .var_out = var,
                .invstd_out = invstd, .x = x, .gamma = gamma, .beta = beta, .eps = eps};
    bn_run(&j, nthreads);
}

/* coef: scale, shift from the given statistics (the running ones) */
static void running_finish(const bn_job *j, int64_t c, double (*r)[3], float coef[4])
{
    (void)r;
    coef[0] = (float)(1.0 / sqrt((double)j->var[c] + j->eps)) * (j->gamma ? j->gamma[c] : 1.0f);
    coef[1] = (j->beta ? j->beta[c] : 0.0f) - j->mean[c] * coef[0];
}

void batchnorm2d_forward_eval(float *y, const float *x, const float *mean, const float *var,
                              const float *gamma, const float *beta, int64_t N, int64_t C,
                              int64_t HW, double eps, int nthreads)
{
    bn_job j = {.l = bn_layout_of(N, C, HW), .k = batchnorm2d_kernels_for(fastcnn_isa()),
                .finish = running_finish, .map = normalize_map, .map_few = normalize_few,
                .out = y, .mean = mean,
                .var = var, .x = x, .gamma = gamma, .beta = beta, .eps = eps};
    bn_run(&j, nthreads);
}

/* ---- training backward ----------------------------------------------------------- */

/* r = (sum dy, sum dy (x - mean), -) over units [u0, u1) */
static void grad_reduce(const bn_job *j, int64_t c, int64_t u0, int64_t u1, double r[3])
{
    r[0] = r[1] = r[2] = 0.0;
    for (int64_t u = u0; u < u1; u++) {
        int64_t rows, len, off = bn_unit(&j->l, c, u, &rows, &len);
        float sdy, sdyx;
        j->k->grad_sums(&sdy, &sdyx, j->dy + off, j->x + off, rows, len, j->l.C * j->l.HW,
                        j->mean[c]);
        r[0] += sdy;
        r[1] += sdyx;
    }
}

/* dgamma += sum dy xhat, dbeta += sum dy; coef: dx = k (dy - a - b (x - mean))
 * with k = gamma invstd, a = sum dy / count, b = invstd sum dy xhat / count */
static void grad_finish(const bn_job *j, int64_t c, double (*r)[3], float coef[4])
{
    double sdy = 0.0, sdyx = 0.0, is = j->invstd[c], cnt = (double)(j->l.N * j->l.HW);
    for (int p = 0; p < j->l.parts; p++) {
        sdy += r[p][0];
        sdyx += r[p][1];
    }
    sdyx *= is;
    if (j->dgamma)
        j->dgamma[c] += (float)sdyx;
    if (j->dbeta)
        j->dbeta[c] += (float)sdy;
    coef[0] = (j->gamma ? j->gamma[c] : 1.0f) * (float)is;
    coef[1] = (float)(sdy / cnt);
    coef[2] = (float)(is * sdyx / cnt);
}

/* r[c - c0] = (sum dy, sum dy (x - mean), -) of channels [c0, c1): summed per
 * position in float over at most BN_FEW_FLUSH images, then per channel in
 * double */
static void grad_few(const bn_job *j, int64_t c0, int64_t c1, double (*r)[3])
{
    int64_t N = j->l.N, HW = j->l.HW, w = (c1 - c0) * HW;
    float mean[BN_FEW_VALUES], sdyx[BN_FEW_VALUES], sdy[BN_FEW_VALUES];
    for (int64_t v = 0; v < w; v++)
        mean[v] = j->mean[c0 + v / HW];
    for (int64_t c = c0; c < c1; c++)
        r[c - c0][0] = r[c - c0][1] = r[c - c0][2] = 0.0;
    for (int64_t n0 = 0; n0 < N; n0 += BN_FEW_FLUSH) {
        few_sums(sdyx, sdy, j->x + c0 * HW, j->dy + c0 * HW, mean, n0, N, w, j->l.C * HW);
        for (int64_t v = 0; v < w; v++) {
            r[v / HW][0] += sdy[v];
            r[v / HW][1] += sdyx[v];
        }
    }
}

/* dx = k (dy - a - b (x - mean)) for channels [c0, c1), coef[c - c0] = (k, a, b) */
static void grad_input_few(const bn_job *j, int64_t c0, int64_t c1, const float (*coef)[4])
{
    int64_t HW = j->l.HW, w = (c1 - c0) * HW, ld = j->l.C * HW;
    float k[BN_FEW_VALUES], a[BN_FEW_VALUES], b[BN_FEW_VALUES], m[BN_FEW_VALUES];
    for (int64_t v = 0; v < w; v++) {
        const float *cf = coef[v / HW];
        k[v] = cf[0], a[v] = cf[1], b[v] = cf[2], m[v] = j->mean[c0 + v / HW];
    }
    for (int64_t n = 0; n < j->l.N; n++) {
        const float *restrict dy = j->dy + n * ld + c0 * HW, *restrict x = j->x + n * ld + c0 * HW;
        float *restrict dx = j->out + n * ld + c0 * HW;
        for (int64_t v = 0; v < w; v++)
            dx[v] = k[v] * (dy[v] - a[v] - b[v] * (x[v] - m[v]));
    }
}

static void grad_input_map(const bn_job *j, int64_t c, int64_t u0, int64_t u1,
                           const float coef[4])
{
    int64_t next = bn_next(j, c);
    for (int64_t u = u1 - 1; u >= u0; u--) {    /* last summed first: still cached */
        int64_t rows, len, off = bn_unit(&j->l, c, u, &rows, &len);
        j->k->grad_input(j->out + off, j->dy + off, j->x + off, rows, len, j->l.C * j->l.HW,
                         j->mean[c], coef[0], coef[1], coef[2], j->stream, next);
    }
    if (j->stream)
        j->k->fence();
}

void batchnorm2d_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                          const float *x, const float *mean, const float *invstd,
                          const float *gamma, int64_t N, int64_t C, int64_t HW, int nthreads)
{
    bn_job j = {.l = bn_layout_of(N, C, HW), .k = batchnorm2d_kernels_for(fastcnn_isa()),
                .reduce = grad_reduce, .finish = grad_finish,
                .map = dx ? grad_input_map : NULL, .reduce_few = grad_few,
                .map_few = dx ? grad_input_few : NULL, .out = dx, .dgamma = dgamma,
                .dbeta = dbeta, .mean = mean, .invstd = invstd, .x = x, .dy = dy,
                .gamma = gamma};
    bn_run(&j, nthreads);
}

void batchnorm2d_update_running(float *running_mean, float *running_var, const float *mean,
                                const float *var, int64_t C, int64_t count, double momentum)
{
    double unbias = count > 1 ? (double)count / (double)(count - 1) : 1.0;
    for (int64_t c = 0; c < C; c++) {
        running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mean[c]);
        running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * var[c] * unbias);
    }
}

/* Batch norm (eval) folded into the convolution before it: with
 * s = gamma / sqrt(var + eps), wf (K, CRS) = w * s[k] and
 * bf (K) = (b - mean) * s + beta. b, gamma, beta may be NULL (0, 1, 0). */
typedef struct {
    float *wf, *bf;
    const float *w, *b, *gamma, *beta, *mean, *var;
    int64_t CRS;
    double eps;
} fold_call;

/* Output channel k's folded weights and bias. */
static void fold_channel(void *ctx, int64_t k, int slot)
{
    const fold_call *f = ctx;
    double s = (f->gamma ? f->gamma[k] : 1.0) / sqrt((double)f->var[k] + f->eps);
    float sf = (float)s;
    (void)slot;
    for (int64_t j = 0; j < f->CRS; j++)
        f->wf[k * f->CRS + j] = f->w[k * f->CRS + j] * sf;
    f->bf[k] = (float)(((f->b ? f->b[k] : 0.0) - f->mean[k]) * s + (f->beta ? f->beta[k] : 0.0));
}

void batchnorm2d_fold(float *wf, float *bf, const float *w, const float *b, const float *gamma,
                      const float *beta, const float *mean, const float *var, int64_t K,
                      int64_t CRS, double eps, int nthreads)
{
    fold_call f = {wf, bf, w, b, gamma, beta, mean, var, CRS, eps};
    /* each output channel's weights written by one work item */
    fastcnn_parallel_for(K, fold_channel, &f, fastcnn_threads_for(K * CRS, nthreads));
}
