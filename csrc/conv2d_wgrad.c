/* conv2d_wgrad.c - the channel-vector weight gradient (conv2d.c chooses it
 * when K is a multiple of the vector length, kernel rows of 2 to
 * WGRAD_MAX_S taps and an image per thread, or by timing at any K: then
 * dy is transposed with zero channels up to a multiple) and the
 * position-vector one for first layers (few channels, any K; by timing):
 * in both, threads split the images, each summing into its own transposed
 * dw (the loops in conv2d_kernel.h, compiled per instruction set). */
#include <string.h>

#include "conv2d_generic.h"
#include "conv2d_internal.h"
#include "gemm.h"

_Static_assert(WGRAD_MAX_S == WGRAD_MAX_S_GENERIC, "the kernel table's widest rows");

/* The portable build of the channel-vector weight gradient of one image
 * (conv2d_kernel.h, conv2d_generic.h). */
void conv2d_wgrad_image_generic(float *dwT, const float *xpad, const float *dyT,
                                const kvec_geom *g)
{
    wgrad_image(dwT, xpad, dyT, g);
}

/* Threads for a weight gradient whose threads split the images. */
static int image_threads(const conv2d_shape *s, int nthreads)
{
    int nt = fastcnn_threads_for(2 * s->N * s->K * s->C * s->R * s->S * s->P * s->Q, nthreads);
    return nt > s->N ? (int)s->N : nt;
}

/* One weight gradient's image ranges, for fastcnn_parallel_for. */
typedef struct {
    float *dw;
    const float *dy, *x;
    const conv2d_shape *s;
    const void *geom;       /* kvec_geom or direct_geom */
    const conv2d_kernels *kr;
    float *scratch;
    int64_t per;            /* floats of a range's scratch, its sums last */
    int nt;                 /* ranges */
    int64_t Kp;             /* columns of the sums: K, or K padded to a vector multiple */
} wgrad_run;

/* Row k of dw += row k of every range's sums (CRS, Kp), in range order. */
static void add_sums_row(void *ctx, int64_t k, int slot)
{
    const wgrad_run *r = ctx;
    int64_t Kp = r->Kp, CRS = r->s->C * r->s->R * r->s->S;
    (void)slot;
    for (int t = 0; t < r->nt; t++) {
        const float *sums = r->scratch + (t + 1) * r->per - Kp * CRS;
        for (int64_t i = 0; i < CRS; i++) r->dw[k * CRS + i] += sums[i * Kp + k];
    }
}

/* dw (K, CRS) += the sums of the nt ranges, each (CRS, Kp) in the last Kp
 * CRS of its `per` floats of scratch. */
static void add_thread_sums(const wgrad_run *r, int nthreads)
{
    int64_t K = r->s->K, CRS = r->s->C * r->s->R * r->s->S;
    int ntr = fastcnn_threads_for(K * CRS * r->nt, nthreads);
    /* each k writes its own row of dw */
    fastcnn_parallel_for(K, add_sums_row, (void *)r, ntr);
}

/* Range t of the channel-vector weight gradient: its images into its dwT. */
static void kvec_range(void *ctx, int64_t t, int slot)
{
    const wgrad_run *r = ctx;
    const conv2d_shape *s = r->s;
    const kvec_geom *g = r->geom;
    int64_t PQ = s->P * s->Q, xsz = s->C * s->H * s->W, ysz = s->K * PQ;
    float *xpad = r->scratch + t * r->per, *dyT = xpad + s->C * g->Hp * g->Wp;
    float *dwT = dyT + PQ * g->K;
    (void)slot;
    /* dyT's columns K .. Kp stay zero */
    memset(dyT, 0, (size_t)((PQ + s->C * s->R * s->S) * g->K) * sizeof(float));
    for (int64_t n = split_point(s->N, t, r->nt); n < split_point(s->N, t + 1, r->nt); n++) {
        conv2d_pad_image(xpad, r->x + n * xsz, s, g->Hp, g->Wp);
        sgemm_transpose(dyT, g->K, r->dy + n * ysz, PQ, s->K, PQ);   /* dyT (PQ, Kp) */
        r->kr->wgrad_image(dwT, xpad, dyT, g);
    }
}

/* dw (K, C, R, S) += the weight gradient, by the channel-vector kernel:
 * threads take contiguous ranges of images, each summing into its own
 * dwT (CRS, Kp), Kp = K rounded up to the vector length, added to dw at
 * the end. */
int conv2d_wgrad_backward_weight(float *dw, const float *dy, const float *x,
                                 const conv2d_shape *s, int nthreads)
{
    const conv2d_kernels *kr = conv2d_kernels_for(fastcnn_isa());
    int64_t Kp = (s->K + kr->vl - 1) / kr->vl * kr->vl;
    kvec_geom g = {s->C, Kp, s->R, s->S, s->sh, s->sw, s->P, s->Q,
                   (s->P - 1) * s->sh + s->R, (s->Q - 1) * s->sw + s->S};
    int64_t CRS = s->C * s->R * s->S, PQ = s->P * s->Q;
    int64_t per = s->C * g.Hp * g.Wp + PQ * Kp + CRS * Kp;
    int nt = image_threads(s, nthreads);
    float *scratch = conv2d_scratch_take(nt * per);
    if (!scratch)
        return FASTCNN_ENOMEM;
    wgrad_run r = {dw, dy, x, s, &g, kr, scratch, per, nt, Kp};
    /* range t: images [split_point(t), split_point(t+1)), its scratch */
    fastcnn_parallel_for(nt, kvec_range, &r, nt);
    add_thread_sums(&r, nthreads);
    conv2d_scratch_give(scratch);
    return FASTCNN_OK;
}

/* The portable build of the position-vector weight gradient of a kernel
 * row's taps and one image (conv2d_kernel.h, conv2d_generic.h). */
void conv2d_wgrad_row_generic(float *vsums, int64_t K, const float *xpad, const float *dy,
                              int64_t c, int64_t r, int64_t t0, int ns, int64_t k0, int64_t kn,
                              const direct_geom *g)
{
    wgrad_row(vsums, K, xpad, dy, c, r, t0, ns, k0, kn, g);
}

/* Range t of the position-vector weight gradient: its images into its
 * vector sums (CRS, K, vl), kernel rows in even pieces of at most
 * WGRAD_ROW_NS_MAX taps; then their lanes added up into its sums (CRS, K). */
static void taps_range(void *ctx, int64_t t, int slot)
{
    const wgrad_run *r = ctx;
    const conv2d_shape *s = r->s;
    const direct_geom *g = r->geom;
    int64_t kb = r->kr->direct_kb, vl = r->kr->vl, CRS = s->C * s->R * s->S, wsz = s->K * CRS;
    int64_t xsz = s->C * s->H * s->W, ysz = s->K * s->P * s->Q;
    int64_t pieces = (s->S + WGRAD_ROW_NS_MAX - 1) / WGRAD_ROW_NS_MAX;
    int64_t width = (s->S + pieces - 1) / pieces;
    float *xpad = r->scratch + t * r->per, *sums = xpad + r->per - wsz;
    float *vsums = sums - wsz * vl;
    (void)slot;
    memset(xpad, 0, (size_t)r->per * sizeof(float));
    for (int64_t n = split_point(s->N, t, r->nt); n < split_point(s->N, t + 1, r->nt); n++) {
        conv2d_pad_image(xpad, r->x + n * xsz, s, g->Hp, g->Wp);
        for (int64_t k0 = 0; k0 < s->K; k0 += kb)
            for (int64_t row = 0; row < s->C * s->R; row++)
                for (int64_t t0 = 0; t0 < s->S; t0 += width)
                    r->kr->wgrad_row(vsums + ((row * s->S + t0) * s->K + k0) * vl, s->K, xpad,
                                     r->dy + n * ysz, row / s->R, row % s->R, t0,
                                     (int)(s->S - t0 < width ? s->S - t0 : width), k0,
                                     s->K - k0 < kb ? s->K - k0 : kb, g);
    }
    for (int64_t i = 0; i < wsz; i++)
        for (int64_t j = 0; j < vl; j++) sums[i] += vsums[i * vl + j];
}

/* dw (K, C, R, S) += the weight gradient, by the position-vector kernel
 * (stride 1, dilation 1): threads take contiguous ranges of images, each
 * padding one image at a time and summing, block of output channels by
 * block (its dy planes stay in cache across the taps), into its own sums
 * (K, C R S), added to dw at the end. */
int conv2d_wgrad_taps_backward_weight(float *dw, const float *dy, const float *x,
                                      const conv2d_shape *s, int nthreads)
{
    const conv2d_kernels *kr = conv2d_kernels_for(fastcnn_isa());
    direct_geom g = {s->C, s->K, s->R, s->S, s->P, s->Q, s->P + s->R - 1, s->Q + s->S - 1,
                     0, 0.0f, 0.0f};
    int64_t wsz = s->K * s->C * s->R * s->S;
    int64_t per = s->C * g.Hp * g.Wp + wsz * kr->vl + wsz;     /* xpad, vector sums, sums */
    int nt = image_threads(s, nthreads);
    float *scratch = conv2d_scratch_take(nt * per);
    if (!scratch)
        return FASTCNN_ENOMEM;
    wgrad_run r = {dw, dy, x, s, &g, kr, scratch, per, nt, s->K};
    /* range t: images [split_point(t), split_point(t+1)), its scratch */
    fastcnn_parallel_for(nt, taps_range, &r, nt);
    add_thread_sums(&r, nthreads);
    conv2d_scratch_give(scratch);
    return FASTCNN_OK;
}
