/* conv2d.c - 2-d convolution (cross-correlation, as in PyTorch), forward and
 * backward, NCHW with weights KCRS: the entry points, the choice of path,
 * the kernel table of each instruction set, the test hooks and the bias
 * gradient. The paths live in conv2d_<algorithm>.c (conv2d_internal.h).
 *
 * Geometry: output (p, q) reads input (p sh - ph + r, q sw - pw + t) for
 * r < R, t < S; ph, pw are the top/left padding and P, Q come from the
 * caller, so bottom/right padding may differ (PyTorch's 'same' with an even
 * kernel). Any input position outside [0,H) x [0,W) reads as zero: the
 * GEMM path bounds-checks every read of x, the direct kernels read a
 * zero-padded copy of one image at a time.
 *
 * Fast paths, chosen by shape (inner loops in conv2d_kernel.h, compiled once
 * per instruction set, reached through conv2d_kernels_for):
 *   forward, stride 1 and C R S <= 75 (first layers): the direct kernel,
 *     output channels x row vectors in registers (conv2d_direct.c);
 *   forward, K a multiple of the vector length, a kernel wider than 1x1 and
 *     at least KVEC_MIN_PQ output positions:
 *     the channel-vector kernel, positions x channel vectors in registers
 *     (conv2d_kvec.c); backward data too, as the forward convolution of dy
 *     with the flipped kernel, when the stride is 1, the padding smaller
 *     than the kernel, C fits the vectors and the map is as large;
 *   backward weight, K a multiple of the vector length, S = 3 or 5, at
 *     least an image per thread and the map as large: the channel-vector
 *     weight gradient (conv2d_wgrad.c);
 *   otherwise im2col + GEMM (conv2d_gemm.c).
 * Dilation > 1 takes the GEMM path (im2col reads the dilated taps); the
 * direct, channel-vector and weight-gradient kernels assume dilation 1.
 * Groups: depthwise (G == C) has its own kernel (conv2d_depthwise.c); any
 * other G runs the paths above once per group on the group's channels,
 * gathered into contiguous buffers.
 */
#include <stdlib.h>
#include <string.h>

#include "conv2d_internal.h"

/* ---- the kernels of each instruction set ------------------------------------ */

static const conv2d_kernels conv2d_kernels_generic = {
    conv2d_im2col_tap_generic, conv2d_direct_block_generic, DIRECT_KB_GENERIC,
    conv2d_kvec_block_generic, conv2d_wgrad_image_generic, 4,   /* 16-byte vectors */
};
#ifdef FASTCNN_X86_KERNELS
static const conv2d_kernels conv2d_kernels_avx2 = {
    conv2d_im2col_tap_avx2, conv2d_direct_block_avx2, DIRECT_KB_AVX2,
    conv2d_kvec_block_avx2, conv2d_wgrad_image_avx2, 8,
};
static const conv2d_kernels conv2d_kernels_avx512 = {
    conv2d_im2col_tap_avx512, conv2d_direct_block_avx512, DIRECT_KB_AVX512,
    conv2d_kvec_block_avx512, conv2d_wgrad_image_avx512, 16,
};
#endif

const conv2d_kernels *conv2d_kernels_for(int isa)
{
    return FASTCNN_KERNELS_FOR(isa, conv2d_kernels);
}

/* ---- path choice -------------------------------------------------------------- */

/* Stride 1 and at most this C R S: the direct kernel beats im2col + GEMM. */
#define DIRECT_MAX_CRS 75

static int direct_mode = 0;     /* 0: by shape, 1: always when stride 1, -1: never */
static int kvec_mode = 0;       /* 0: by shape, 1: whenever K fits the vectors, -1: never */

int conv2d_set_direct(int mode)
{
    int old = direct_mode;
    direct_mode = mode;
    return old;
}

int conv2d_set_kvec(int mode)
{
    int old = kvec_mode;
    kvec_mode = mode;
    return old;
}

static int undilated(const conv2d_shape *s)
{
    return s->dh == 1 && s->dw == 1;
}

static int use_direct(const conv2d_shape *s)
{
    if (s->sh != 1 || s->sw != 1 || direct_mode < 0 || !undilated(s))
        return 0;
    return direct_mode > 0 || s->C * s->R * s->S <= DIRECT_MAX_CRS;
}

/* Floats per vector of the channel-vector kernels in use. */
static int64_t kvec_length(void)
{
    return conv2d_kernels_for(fastcnn_isa())->vl;
}

/* By shape, the channel-vector kernels (forward, backward data, backward
 * weight) need at least this many output positions P Q: they work one image
 * at a time, and on smaller maps (ResNet-18's last stages at 3x32x32: 2x2,
 * 1x1) im2col + GEMM was 2-7x faster (bench/MODELS.md). */
#define KVEC_MIN_PQ 16

static int kvec_map_fits(const conv2d_shape *s)
{
    return kvec_mode > 0 || s->P * s->Q >= KVEC_MIN_PQ;
}

/* By shape: K a multiple of the vector length, a kernel wider than 1x1
 * (a pointwise convolution is a plain GEMM, which the engine does faster)
 * and a map of at least KVEC_MIN_PQ positions. */
static int use_kvec(const conv2d_shape *s)
{
    if (kvec_mode < 0 || s->K % kvec_length() || !undilated(s))
        return 0;
    return kvec_mode > 0 || (s->R * s->S > 1 && kvec_map_fits(s));
}

/* Backward data as a forward convolution: stride 1, padding below the
 * kernel size, C a multiple of the vector length, a kernel wider than 1x1,
 * a map of at least KVEC_MIN_PQ positions. */
static int kvec_backward_data_fits(const conv2d_shape *s)
{
    return kvec_mode >= 0 && undilated(s) && s->sh == 1 && s->sw == 1 && s->ph < s->R
        && s->pw < s->S
        && s->C % kvec_length() == 0 && s->R * s->S > 1 && kvec_map_fits(s);
}

/* K a multiple of the vector length, S = 3 or 5, an image per thread
 * (threads split the images; with fewer, the GEMM path splits its product)
 * and a map of at least KVEC_MIN_PQ positions. */
static int wgrad_fits(const conv2d_shape *s, int nthreads)
{
    int nt = fastcnn_threads_for(2 * s->N * s->K * s->C * s->R * s->S * s->P * s->Q, nthreads);
    return kvec_mode >= 0 && undilated(s) && s->K % kvec_length() == 0
        && (s->S == 3 || s->S == 5) && s->N >= nt && kvec_map_fits(s);
}

/* ---- groups ------------------------------------------------------------------- */

static int depthwise(const conv2d_shape *s)
{
    return s->G > 1 && s->G == s->C;
}

/* One group's convolution as an ungrouped one: C/G input, K/G output channels. */
static conv2d_shape group_shape(const conv2d_shape *s)
{
    conv2d_shape g = *s;
    g.C = s->C / s->G, g.K = s->K / s->G, g.G = 1;
    return g;
}

/* Channels [c0, c0 + cnt) of the N images src (N, src_c, plane) to dst
 * (N, dst_c, plane) at channel d0. */
static void copy_channels(float *dst, int64_t dst_c, int64_t d0, const float *src,
                          int64_t src_c, int64_t c0, int64_t cnt, int64_t N, int64_t plane)
{
    for (int64_t n = 0; n < N; n++)
        memcpy(dst + (n * dst_c + d0) * plane, src + (n * src_c + c0) * plane,
               (size_t)(cnt * plane) * sizeof(float));
}

typedef struct {
    float *x, *y;       /* one group's input (N, C/G, H, W) and output (N, K/G, P, Q) */
} group_buffers;

static int take_group_buffers(group_buffers *gb, const conv2d_shape *g)
{
    gb->x = malloc((size_t)(g->N * g->C * g->H * g->W) * sizeof(float));
    gb->y = malloc((size_t)(g->N * g->K * g->P * g->Q) * sizeof(float));
    return gb->x && gb->y ? FASTCNN_OK : FASTCNN_ENOMEM;
}

static void give_group_buffers(group_buffers *gb)
{
    free(gb->x);
    free(gb->y);
}

enum { FORWARD, BACKWARD_DATA, BACKWARD_WEIGHT };

/* Run op once per group through the ungrouped entry points: y or dx or dw
 * is out; w and b (forward) or x (weight gradient) or dy as the op needs. */
static int run_groups(int op, float *out, const float *x, const float *w, const float *b,
                      const float *dy, const conv2d_shape *s, int nthreads)
{
    conv2d_shape g = group_shape(s);
    int64_t HW = s->H * s->W, PQ = s->P * s->Q, wsz = g.K * g.C * s->R * s->S;
    group_buffers gb;
    int err = take_group_buffers(&gb, &g);
    for (int64_t i = 0; i < s->G && !err; i++) {
        if (op != BACKWARD_DATA)
            copy_channels(gb.x, g.C, 0, x, s->C, i * g.C, g.C, s->N, HW);
        if (op != FORWARD)
            copy_channels(gb.y, g.K, 0, dy, s->K, i * g.K, g.K, s->N, PQ);
        if (op == FORWARD) {
            err = conv2d_forward(gb.y, gb.x, w + i * wsz, b ? b + i * g.K : NULL, &g, nthreads);
            copy_channels(out, s->K, i * g.K, gb.y, g.K, 0, g.K, s->N, PQ);
        } else if (op == BACKWARD_DATA) {
            err = conv2d_backward_data(gb.x, gb.y, w + i * wsz, &g, nthreads);
            copy_channels(out, s->C, i * g.C, gb.x, g.C, 0, g.C, s->N, HW);
        } else {
            err = conv2d_backward_weight(out + i * wsz, NULL, gb.y, gb.x, &g, nthreads);
        }
    }
    give_group_buffers(&gb);
    return err;
}

/* ---- entry points ------------------------------------------------------------- */

int conv2d_forward(float *y, const float *x, const float *w, const float *b,
                   const conv2d_shape *s, int nthreads)
{
    if (depthwise(s))
        return conv2d_depthwise_forward(y, x, w, b, s, nthreads);
    if (s->G > 1)
        return run_groups(FORWARD, y, x, w, b, NULL, s, nthreads);
    if (use_direct(s))
        return conv2d_direct_forward(y, x, w, b, s, nthreads);
    if (use_kvec(s))
        return conv2d_kvec_forward(y, x, w, b, s, nthreads);
    return conv2d_gemm_forward(y, x, w, b, s, nthreads);
}

int conv2d_backward_data(float *dx, const float *dy, const float *w,
                         const conv2d_shape *s, int nthreads)
{
    if (depthwise(s))
        return conv2d_depthwise_backward_data(dx, dy, w, s, nthreads);
    if (s->G > 1)
        return run_groups(BACKWARD_DATA, dx, NULL, w, NULL, dy, s, nthreads);
    if (kvec_backward_data_fits(s))
        return conv2d_kvec_backward_data(dx, dy, w, s, nthreads);
    return conv2d_gemm_backward_data(dx, dy, w, s, nthreads);
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
    int err = depthwise(s) ? conv2d_depthwise_backward_weight(dw, dy, x, s, nthreads)
            : s->G > 1 ? run_groups(BACKWARD_WEIGHT, dw, x, NULL, NULL, dy, s, nthreads)
            : wgrad_fits(s, nthreads) ? conv2d_wgrad_backward_weight(dw, dy, x, s, nthreads)
            : conv2d_gemm_backward_weight(dw, dy, x, s, nthreads);
    if (!err && db)
        bias_grad(db, dy, s, nthreads);
    return err;
}
