/* conv2d_wgrad.c - the channel-vector weight gradient (conv2d.c chooses it
 * when K is a multiple of the vector length, S = 3 or 5 and there is an
 * image per thread) and the position-vector one for first layers (few
 * channels, any K; by timing): in both, threads split the images, each
 * summing into its own transposed dw (the loops in conv2d_kernel.h,
 * compiled per instruction set). */
#include <string.h>

#include "conv2d_generic.h"
#include "conv2d_internal.h"
#include "gemm.h"

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

/* dw (K, CRS) += the sums of nt threads, each (CRS, K) in the last K CRS
 * of its `per` floats of scratch. */
static void add_thread_sums(float *dw, const float *scratch, int64_t per, int nt, int64_t K,
                            int64_t CRS, int nthreads)
{
    int ntr = fastcnn_threads_for(K * CRS * nt, nthreads);
    /* each k writes its own row of dw */
    #pragma omp parallel for num_threads(ntr) if (ntr > 1) schedule(static)
    for (int64_t k = 0; k < K; k++)
        for (int t = 0; t < nt; t++) {
            const float *sums = scratch + (t + 1) * per - K * CRS;
            for (int64_t i = 0; i < CRS; i++) dw[k * CRS + i] += sums[i * K + k];
        }
}

/* dw (K, C, R, S) += the weight gradient, by the channel-vector kernel:
 * threads take contiguous ranges of images, each summing into its own
 * dwT (CRS, K), added to dw at the end. */
int conv2d_wgrad_backward_weight(float *dw, const float *dy, const float *x,
                                 const conv2d_shape *s, int nthreads)
{
    conv2d_wgrad_image_fn fn = conv2d_kernels_for(fastcnn_isa())->wgrad_image;
    kvec_geom g = {s->C, s->K, s->R, s->S, s->sh, s->sw, s->P, s->Q,
                   (s->P - 1) * s->sh + s->R, (s->Q - 1) * s->sw + s->S};
    int64_t CRS = s->C * s->R * s->S, PQ = s->P * s->Q, wsz = CRS * s->K;
    int64_t xsz = s->C * s->H * s->W, ysz = s->K * PQ;
    int64_t per = s->C * g.Hp * g.Wp + PQ * s->K + wsz;
    int nt = image_threads(s, nthreads);
    float *scratch = conv2d_scratch_take(nt * per);
    if (!scratch)
        return FASTCNN_ENOMEM;
    /* thread t owns images [split_point(t), split_point(t+1)) and its scratch */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int t = 0; t < nt; t++) {
        float *xpad = scratch + t * per, *dyT = xpad + s->C * g.Hp * g.Wp, *dwT = dyT + PQ * s->K;
        memset(dwT, 0, (size_t)wsz * sizeof(float));
        for (int64_t n = split_point(s->N, t, nt); n < split_point(s->N, t + 1, nt); n++) {
            conv2d_pad_image(xpad, x + n * xsz, s, g.Hp, g.Wp);
            sgemm_transpose(dyT, s->K, dy + n * ysz, PQ, s->K, PQ);   /* dyT (PQ, K) */
            fn(dwT, xpad, dyT, &g);
        }
    }
    add_thread_sums(dw, scratch, per, nt, s->K, CRS, nthreads);
    conv2d_scratch_give(scratch);
    return FASTCNN_OK;
}

/* The portable build of the position-vector weight gradient of one tap
 * and image (conv2d_kernel.h, conv2d_generic.h). */
void conv2d_wgrad_taps_generic(float *sums, const float *xpad, const float *dy, int64_t c,
                               int64_t r, int64_t t, int64_t k0, int64_t kn,
                               const direct_geom *g)
{
    wgrad_taps(sums, xpad, dy, c, r, t, k0, kn, g);
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
    int64_t kb = kr->direct_kb, RS = s->R * s->S, CRS = s->C * RS, wsz = s->K * CRS;
    int64_t xsz = s->C * s->H * s->W, ysz = s->K * s->P * s->Q;
    int64_t per = s->C * g.Hp * g.Wp + wsz;
    int nt = image_threads(s, nthreads);
    float *scratch = conv2d_scratch_take(nt * per);
    if (!scratch)
        return FASTCNN_ENOMEM;
    /* thread t owns images [split_point(t), split_point(t+1)) and its scratch */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int t = 0; t < nt; t++) {
        float *xpad = scratch + t * per, *sums = xpad + per - wsz;
        memset(xpad, 0, (size_t)per * sizeof(float));
        for (int64_t n = split_point(s->N, t, nt); n < split_point(s->N, t + 1, nt); n++) {
            conv2d_pad_image(xpad, x + n * xsz, s, g.Hp, g.Wp);
            for (int64_t k0 = 0; k0 < s->K; k0 += kb)
                for (int64_t tap = 0; tap < CRS; tap++)
                    kr->wgrad_taps(sums + tap * s->K + k0, xpad, dy + n * ysz, tap / RS,
                                   tap / s->S % s->R, tap % s->S, k0,
                                   s->K - k0 < kb ? s->K - k0 : kb, &g);
        }
    }
    add_thread_sums(dw, scratch, per, nt, s->K, CRS, nthreads);
    conv2d_scratch_give(scratch);
    return FASTCNN_OK;
}
