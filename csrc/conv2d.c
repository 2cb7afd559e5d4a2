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
 * Paths (inner loops in conv2d_kernel.h, compiled once per instruction set,
 * reached through conv2d_kernels_for): im2col + GEMM runs any shape
 * (conv2d_gemm.c); the direct kernel, output channels x row vectors in
 * registers, runs stride-1 forwards (conv2d_direct.c); the channel-vector
 * kernel, positions x channel vectors in registers, runs any forward (K
 * not a multiple of the vector length: its last vector padded with zero
 * channels) (conv2d_kvec.c); both also run backward data as the forward
 * convolution of dy with the flipped kernel when the stride is 1 and the
 * padding smaller than the kernel; the channel-vector weight gradient needs
 * kernel rows of at most WGRAD_MAX_S taps, the position-vector one (first
 * layers: each tap's sums over all positions) stride 1 (conv2d_wgrad.c);
 * Winograd F(2x2, 3x3) runs 3x3 stride-1 forwards and backward data,
 * F(3x3, 2x2) their weight gradients, F(4x4, 3x3) a frozen model's forwards
 * (conv2d_winograd.c); maps no larger than the kernel run every op as one
 * GEMM over whole images through a dense input-to-output matrix, without
 * padding's products (conv2d_dense.c; finite values only: dense_usable).
 * Which of them runs a convolution, and on how many threads, is timed on
 * its shape's first call (see "path choice by timing"); small convolutions
 * go by the rules of "path choice by shape":
 *   forward, stride 1 and C R S <= 75 (first layers): direct;
 *   forward, K a multiple of the vector length, a kernel wider than 1x1
 *     and at least KVEC_MIN_PQ output positions: channel-vector; backward
 *     data and weight likewise;
 *   otherwise im2col + GEMM.
 * (Winograd only by timing.) Dilation > 1 takes the GEMM path (im2col reads
 * the dilated taps); the other kernels assume dilation 1.
 * Groups: depthwise (G == C) has its own kernel (conv2d_depthwise.c); any
 * other G runs the paths above once per group on the group's channels,
 * gathered into contiguous buffers.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "conv2d_internal.h"

/* ---- the kernels of each instruction set ------------------------------------ */

static const conv2d_kernels conv2d_kernels_generic = {
    conv2d_im2col_tap_generic, conv2d_col2im_tap_generic, NULL, NULL,
    conv2d_direct_block_generic,
    DIRECT_KB_GENERIC,
    conv2d_kvec_block_generic, conv2d_wgrad_image_generic, 4,   /* 16-byte vectors */
    WGRAD_MAX_S_GENERIC,
    conv2d_wgrad_row_generic,
    conv2d_wino_input_generic, conv2d_wino_output_generic, conv2d_wino_filters_generic,
    conv2d_wino_grad_generic,
};
#ifdef FASTCNN_X86_KERNELS
static const conv2d_kernels conv2d_kernels_avx2 = {
    conv2d_im2col_tap_avx2, conv2d_col2im_tap_avx2, NULL, NULL,
    conv2d_direct_block_avx2,
    DIRECT_KB_AVX2,
    conv2d_kvec_block_avx2, conv2d_wgrad_image_avx2, 8, WGRAD_MAX_S_AVX2,
    conv2d_wgrad_row_avx2,
    conv2d_wino_input_avx2, conv2d_wino_output_avx2, conv2d_wino_filters_avx2,
    conv2d_wino_grad_avx2,
};
static const conv2d_kernels conv2d_kernels_avx512 = {
    conv2d_im2col_tap_avx512, conv2d_col2im_tap_avx512, conv2d_col2im_s1_avx512,
    conv2d_col2im_s2_avx512,
    conv2d_direct_block_avx512,
    DIRECT_KB_AVX512,
    conv2d_kvec_block_avx512, conv2d_wgrad_image_avx512, 16, WGRAD_MAX_S_AVX512,
    conv2d_wgrad_row_avx512,
    conv2d_wino_input_avx512, conv2d_wino_output_avx512, conv2d_wino_filters_avx512,
    conv2d_wino_grad_avx512,
};
#endif

const conv2d_kernels *conv2d_kernels_for(int isa)
{
    return FASTCNN_KERNELS_FOR(isa, conv2d_kernels);
}

/* ---- path choice by shape -------------------------------------------------------------- */

/* The ops, and the paths that can run them. */
enum { FORWARD, BACKWARD_DATA, BACKWARD_WEIGHT };
/* The tuning table's op for a forward with kept derived weights: it costs
 * less on the paths that derive them, so it is timed apart. */
enum { FORWARD_PREPARED = BACKWARD_WEIGHT + 1 };
/* PATH_KVEC and PATH_DIRECT of the weight gradient are conv2d_wgrad.c's
 * channel-vector and position-vector kernels; PATH_DIRECT and PATH_KVEC of
 * backward data are the forward kernels run on dy (backward_data_as_forward). */
/* PATH_WINO is F(2x2, 3x3) (its weight gradient F(3x3, 2x2)), PATH_WINO4
 * F(4x4, 3x3): forwards only, timed only for weights that do not change
 * (a frozen model's: its error is about ten times the other paths', so
 * training keeps their numbers). */
/* PATH_DENSE: conv2d_dense.c (every op), where the values allow (dense_usable).
 * PATH_GEMM_GROUPED: the weight gradient of pointwise images that the GEMM
 * path runs one GEMM each (conv2d_gemm_alone), grouped instead: products nb
 * images deep, not PQ, at the cost of gathering their operands. Neither way
 * wins everywhere (32 x 1024 -> 256 at 4 x 4: 1.31x grouped; 256 -> 256 at
 * 5 x 5: 0.79x; 7 x 7: 0.86-1.15x by channels and threads), so timing
 * chooses. */
enum { PATH_GEMM, PATH_DIRECT, PATH_KVEC, PATH_WINO, PATH_WINO4, PATH_DENSE, PATH_GEMM_GROUPED };
#define MAX_CANDIDATES 6

/* Stride 1 and at most this C R S: the direct kernel beats im2col + GEMM.
 * (At stride 2 only timing chooses it: it won on batch-1 224x224 stems and
 * lost to the channel-vector kernel on batched 3x3 ones, bench/CONV2D.md.) */
#define DIRECT_MAX_CRS 75

/* 0: by shape, 1: always when it fits (stride 1 or 2 forward, stride-1
 * backward ops), -1: never */
static int direct_mode = 0;
static int kvec_mode = 0;       /* 0: by shape, 1: whenever K fits the vectors, -1: never */
/* 0: by timing, 1: F(2x2, 3x3) whenever it fits, 2: the same with
 * F(4x4, 3x3) for forwards, -1: never */
static int wino_mode = 0;
static int dense_mode = 0;      /* 0: by timing, 1: whenever it fits, -1: never */
static int grouped_mode = 0;    /* PATH_GEMM_GROUPED: 0 by timing, 1 wherever it fits, -1 never */

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

int conv2d_set_winograd(int mode)
{
    int old = wino_mode;
    wino_mode = mode;
    return old;
}

int conv2d_set_dense(int mode)
{
    int old = dense_mode;
    dense_mode = mode;
    return old;
}

int conv2d_set_grouped_wgrad(int mode)
{
    int old = grouped_mode;
    grouped_mode = mode;
    return old;
}

/* A weight gradient whose pointwise images the GEMM path could group. */
static int grouped_fits(int op, const conv2d_shape *s)
{
    return op == BACKWARD_WEIGHT && grouped_mode >= 0 && conv2d_gemm_alone(s) && s->N > 1;
}

static int undilated(const conv2d_shape *s)
{
    return s->dh == 1 && s->dw == 1;
}

/* Winograd runs every op of 3x3 stride-1 convolutions; backward data needs
 * ph, pw <= 2. */
static int winograd_fits(int op, const conv2d_shape *s)
{
    return s->R == 3 && s->S == 3 && s->sh == 1 && s->sw == 1 && undilated(s)
        && (op != BACKWARD_DATA || (s->ph <= 2 && s->pw <= 2));
}

/* The direct kernel's forward strides: 1 or 2, the same both ways. */
static int direct_stride(const conv2d_shape *s)
{
    return s->sh == s->sw && (s->sh == 1 || s->sh == 2);
}

static int use_direct(const conv2d_shape *s)
{
    if (!direct_stride(s) || direct_mode < 0 || !undilated(s))
        return 0;
    return direct_mode > 0 || (s->sh == 1 && s->C * s->R * s->S <= DIRECT_MAX_CRS);
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

/* Output channels the channel-vector kernels take: by shape a multiple of
 * the vector length; forced (and timed), any number, the last vector
 * padded with zero channels. */
static int kvec_channels_fit(int64_t channels)
{
    return kvec_mode > 0 || channels % kvec_length() == 0;
}

/* By shape: K a multiple of the vector length, a kernel wider than 1x1
 * (a pointwise convolution is a plain GEMM, which the engine does faster)
 * and a map of at least KVEC_MIN_PQ positions. */
static int use_kvec(const conv2d_shape *s)
{
    if (kvec_mode < 0 || !kvec_channels_fit(s->K) || !undilated(s))
        return 0;
    return kvec_mode > 0 || (s->R * s->S > 1 && kvec_map_fits(s));
}

/* Backward data as a forward convolution (backward_data_as_forward): stride
 * 1, undilated, padding below the kernel size. */
static int backward_data_as_forward_fits(const conv2d_shape *s)
{
    return undilated(s) && s->sh == 1 && s->sw == 1 && s->ph < s->R && s->pw < s->S;
}

/* ... on the channel-vector kernel: also C a multiple of the vector length,
 * a kernel wider than 1x1, a map of at least KVEC_MIN_PQ positions. */
static int kvec_backward_data_fits(const conv2d_shape *s)
{
    return kvec_mode >= 0 && backward_data_as_forward_fits(s) && kvec_channels_fit(s->C)
        && s->R * s->S > 1 && kvec_map_fits(s);
}

/* Kernel rows the channel-vector weight gradient takes: at most the ISA's
 * widest (a tile holds a row's taps for two vectors of channels). */
static int wgrad_row_fits(const conv2d_shape *s)
{
    return s->S <= conv2d_kernels_for(fastcnn_isa())->wgrad_max_s;
}

/* K a multiple of the vector length, rows that fit, of 2 taps or more
 * unless forced, an image per thread (threads split the images; with fewer,
 * the GEMM path splits its product) and a map of at least KVEC_MIN_PQ
 * positions. */
static int wgrad_fits(const conv2d_shape *s, int nthreads)
{
    int nt = fastcnn_threads_for(2 * s->N * s->K * s->C * s->R * s->S * s->P * s->Q, nthreads);
    return kvec_mode >= 0 && undilated(s) && kvec_channels_fit(s->K)
        && (s->S > 1 || kvec_mode > 0) && wgrad_row_fits(s) && s->N >= nt && kvec_map_fits(s);
}

/* ---- path choice by timing -------------------------------------------------- */

/* The by-shape choice: the rules above (or Winograd, when a test forces it). */
static int path_by_shape(int op, const conv2d_shape *s, int nthreads)
{
    if (wino_mode > 0 && winograd_fits(op, s))
        return wino_mode == 2 && op == FORWARD ? PATH_WINO4 : PATH_WINO;
    if (dense_mode > 0 && conv2d_dense_fits(s))
        return PATH_DENSE;
    if (op == FORWARD)
        return use_direct(s) ? PATH_DIRECT : use_kvec(s) ? PATH_KVEC : PATH_GEMM;
    if (op == BACKWARD_DATA && direct_mode > 0 && backward_data_as_forward_fits(s))
        return PATH_DIRECT;
    if (op == BACKWARD_WEIGHT && direct_mode > 0 && undilated(s) && s->sh == 1 && s->sw == 1)
        return PATH_DIRECT;
    if (op == BACKWARD_DATA)
        return kvec_backward_data_fits(s) ? PATH_KVEC : PATH_GEMM;
    if (grouped_mode > 0 && grouped_fits(op, s))
        return PATH_GEMM_GROUPED;
    return wgrad_fits(s, nthreads) ? PATH_KVEC : PATH_GEMM;
}

/* What one call computes: out (y, dx or dw) from the inputs its op takes. */
typedef struct {
    float *out;
    const float *x, *w, *b, *dy;
    const conv2d_shape *s;
    conv2d_prepared *prep;      /* forward: what paths derive from w, kept; or NULL */
} conv_call;

static int run_path(int op, int path, const conv_call *c, int nt);
static int all_finite(const float *v, int64_t n);

/* Whether the dense path gives this call's results: the values a zero of
 * its matrix multiplies are finite (conv2d_dense.c). Its forward also needs
 * finite weights: PyTorch multiplies them by the padding. */
static int dense_usable(int op, const conv_call *c)
{
    const conv2d_shape *s = c->s;
    if (op == FORWARD)
        return all_finite(c->x, s->N * s->C * s->H * s->W)
            && all_finite(c->w, s->K * s->C * s->R * s->S);
    return all_finite(c->dy, s->N * s->K * s->P * s->Q);
}

/* op on the dense path, or on the GEMM path where its values do not allow it. */
static int run_dense(int op, const conv_call *c, int nt)
{
    const conv2d_shape *s = c->s;
    if (!dense_usable(op, c))
        return run_path(op, PATH_GEMM, c, nt);
    return op == FORWARD ? conv2d_dense_forward(c->out, c->x, c->w, c->b, s, nt)
         : op == BACKWARD_DATA ? conv2d_dense_backward_data(c->out, c->dy, c->w, s, nt)
         : conv2d_dense_backward_weight(c->out, c->dy, c->x, s, nt);
}

/* Backward data as a forward convolution on `path` (direct or channel-vector;
 * stride 1, padding below the kernel size): dx is dy, padded by R-1-ph on
 * top and S-1-pw on the left, convolved with the kernel flipped in both
 * axes, channels swapped. */
static int backward_data_as_forward(int path, const conv_call *c, int nt)
{
    const conv2d_shape *s = c->s;
    conv2d_shape t = {s->N, s->K, s->P, s->Q, s->C, s->R, s->S, 1, 1, s->R - 1 - s->ph,
                      s->S - 1 - s->pw, s->H, s->W, 1, 1, 1, 0, 0.0f, 0.0f};
    int64_t RS = s->R * s->S;
    float *wf = fastcnn_alloc(s->K * s->C * RS * (int64_t)sizeof(float));
    if (!wf)
        return FASTCNN_ENOMEM;
    for (int64_t k = 0; k < s->K; k++)      /* wf (C, K, R, S) = w (K, C, R, S) flipped */
        for (int64_t ch = 0; ch < s->C; ch++)
            for (int64_t rt = 0; rt < RS; rt++)
                wf[(ch * s->K + k) * RS + rt] = c->w[(k * s->C + ch) * RS + RS - 1 - rt];
    conv_call f = {c->out, c->dy, wf, NULL, NULL, &t, NULL};
    int err = run_path(FORWARD, path, &f, nt);
    fastcnn_free(wf);
    return err;
}

static int run_path(int op, int path, const conv_call *c, int nt)
{
    const conv2d_shape *s = c->s;
    if (path == PATH_DENSE)
        return run_dense(op, c, nt);
    if (op == FORWARD)
        return path == PATH_DIRECT ? conv2d_direct_forward(c->out, c->x, c->w, c->b, s, nt)
             : path == PATH_KVEC ? conv2d_kvec_forward(c->out, c->x, c->w, c->b, s, c->prep, nt)
             : path == PATH_WINO || path == PATH_WINO4
                 ? conv2d_winograd_forward(c->out, c->x, c->w, c->b, s, path == PATH_WINO4 ? 4 : 2,
                                           c->prep, nt)
             : conv2d_gemm_forward(c->out, c->x, c->w, c->b, s, c->prep, nt);
    if (op == BACKWARD_DATA)
        return path == PATH_KVEC || path == PATH_DIRECT ? backward_data_as_forward(path, c, nt)
             : path == PATH_WINO ? conv2d_winograd_backward_data(c->out, c->dy, c->w, s, nt)
             : conv2d_gemm_backward_data(c->out, c->dy, c->w, s, nt);
    return path == PATH_KVEC ? conv2d_wgrad_backward_weight(c->out, c->dy, c->x, s, nt)
         : path == PATH_DIRECT ? conv2d_wgrad_taps_backward_weight(c->out, c->dy, c->x, s, nt)
         : path == PATH_WINO ? conv2d_winograd_backward_weight(c->out, c->dy, c->x, s, nt)
         : conv2d_gemm_backward_weight(c->out, c->dy, c->x, s, path == PATH_GEMM_GROUPED, nt);
}

/* Hand-set thresholds cannot follow every shape on every CPU, so each
 * convolution of at least CONV2D_TUNE_MIN_FLOPS is timed on its first call: every
 * path that can run it, then that path on fewer threads while fewer are
 * faster (a small map does not feed many threads). The path is kept for the
 * shape, the threads for the shape and the threads asked for
 * (conv2d_tune.c), and later calls take them: so in one process a shape
 * always runs one path, and its forward results do not depend on the
 * thread count. Smaller convolutions, and calls while a test hook forces a
 * path, go by shape. FASTCNN_CONV_TUNE=0 turns timing off: then the path,
 * and so the rounding, is the same in every process. */
/* Paths timed only where they can win: the direct kernel reads C R S
 * broadcast weights per output row, the channel-vector one needs positions. */
#define DIRECT_TUNE_MAX_CRS 576
#define KVEC_TUNE_MIN_PQ 4
/* The position-vector weight gradient sums every image per tap: timed only
 * for first layers (C K at most this). */
#define WGRAD_TAPS_TUNE_MAX_CK 256

/* Fewer output channels than a vector (an RGB or few-class head): the
 * channel-vector kernels do not run, and the GEMM path's product has fewer
 * rows than its tile, after an im2col of every tap (64x256x28x28 -> 3, 7x7:
 * forward 160 ms on the GEMM path, 15 direct, torch 52). The direct kernels
 * read each input row once per block of output channels, so they are timed
 * at any C R S. */
static int few_outputs(const conv2d_shape *s)
{
    return s->K < kvec_length();
}

static int tune_mode = -1;      /* -1: FASTCNN_CONV_TUNE not read yet; 0 off, 1 on */

int conv2d_tuning(void)
{
    if (tune_mode < 0) {
        const char *e = getenv("FASTCNN_CONV_TUNE");
        tune_mode = !(e && strcmp(e, "0") == 0);
    }
    return tune_mode;
}

int conv2d_set_tune(int mode)
{
    int old = conv2d_tuning();
    tune_mode = mode != 0;
    conv2d_tune_forget();
    return old;
}

static int timed(const conv2d_shape *s)
{
    double flops = 2.0 * s->N * s->K * s->C * s->R * s->S * s->P * s->Q;
    return conv2d_tuning() && direct_mode == 0 && kvec_mode == 0 && wino_mode == 0
        && dense_mode == 0 && grouped_mode == 0 && flops >= CONV2D_TUNE_MIN_FLOPS;
}

static int add_path(int *paths, int n, int path)
{
    for (int i = 0; i < n; i++)
        if (paths[i] == path)
            return n;
    paths[n] = path;
    return n + 1;
}

/* The paths that can run op on s (at most MAX_CANDIDATES); prepared: the
 * forward of weights that do not change. */
static int candidates(int op, const conv2d_shape *s, int prepared, int *paths)
{
    int n = add_path(paths, 0, PATH_GEMM);
    int64_t PQ = s->P * s->Q;
    if (conv2d_dense_fits(s))
        n = add_path(paths, n, PATH_DENSE);
    if (!undilated(s))
        return n;
    if (winograd_fits(op, s))
        n = add_path(paths, n, PATH_WINO);
    if (winograd_fits(op, s) && op == FORWARD && prepared)
        n = add_path(paths, n, PATH_WINO4);
    if (op == FORWARD) {
        if (direct_stride(s) && (s->C * s->R * s->S <= DIRECT_TUNE_MAX_CRS || few_outputs(s)))
            n = add_path(paths, n, PATH_DIRECT);
        if (PQ >= KVEC_TUNE_MIN_PQ)
            n = add_path(paths, n, PATH_KVEC);
    } else if (op == BACKWARD_DATA && backward_data_as_forward_fits(s)) {
        if (s->K * s->R * s->S <= DIRECT_TUNE_MAX_CRS)
            n = add_path(paths, n, PATH_DIRECT);
        if (PQ >= KVEC_TUNE_MIN_PQ)
            n = add_path(paths, n, PATH_KVEC);
    } else if (op == BACKWARD_WEIGHT) {
        if (wgrad_row_fits(s) && PQ >= KVEC_TUNE_MIN_PQ)
            n = add_path(paths, n, PATH_KVEC);
        if (s->sh == 1 && s->sw == 1 && (s->C * s->K <= WGRAD_TAPS_TUNE_MAX_CK || few_outputs(s)))
            n = add_path(paths, n, PATH_DIRECT);
        if (grouped_fits(op, s))
            n = add_path(paths, n, PATH_GEMM_GROUPED);
    }
    return n;
}

/* Before a timed run: the weights (and what the paths derived from them) out
 * of every cache level, as a network's layer finds them, its weights last
 * read a whole pass of other layers ago. Timed back to back from L2 instead,
 * a path that rereads its weights looks better than it runs: on a frozen
 * MobileNetV2 at batch 1 (Zen 5, 1 thread) the timing picked the
 * channel-vector path for the 1x1 convolutions on 7x7 maps, 38 vs 41 us from
 * L2 (576 -> 160), which in the network ran 60-65 us against the GEMM path's
 * 54-57. The weight gradient reads no weights. */
static void weights_cold(int op, const conv_call *c)
{
    const conv2d_shape *s = c->s;
    if (op == BACKWARD_WEIGHT)
        return;
    conv2d_evict(c->w, s->K * s->C * s->R * s->S);
    conv2d_prepared_evict(c->prep);
}

/* Seconds of the fastest of `runs` runs of path on nt threads (err set on failure). */
static double fastest_run(int op, int path, const conv_call *c, int nt, int runs, int *err)
{
    double best = 1e300;
    for (int i = 0; i < runs && !*err; i++) {
        weights_cold(op, c);
        double t0 = conv2d_seconds();
        *err = run_path(op, path, c, nt);
        double t = conv2d_seconds() - t0;
        best = t < best ? t : best;
    }
    return best;
}

/* One candidate path of time_paths. */
typedef struct {
    int op, nthreads;
    const int *paths;
    const conv_call *c;
} path_trial;

static int run_trial(void *arg, int i)
{
    const path_trial *t = arg;
    return run_path(t->op, t->paths[i], t->c, t->nthreads);
}

static void before_trial(void *arg)
{
    const path_trial *t = arg;
    weights_cold(t->op, t->c);
}

/* The fastest path of the candidates on nthreads. */
static int time_paths(int op, const conv_call *c, int nthreads, int *path)
{
    int paths[MAX_CANDIDATES], n = candidates(op, c->s, c->prep != NULL, paths), win = 0;
    path_trial trial = {op, nthreads, paths, c};
    int err = conv2d_time_fastest(n, run_trial, before_trial, &trial, &win);
    *path = paths[win];
    return err;
}

/* Runs to time a convolution taking `seconds` once (see CONV2D_TUNE_MIN_SECONDS). */
static int rounds_for(double seconds)
{
    int runs = seconds > 0.0 ? (int)(CONV2D_TUNE_MIN_SECONDS / seconds) + 1
                             : CONV2D_TUNE_MAX_ROUNDS;
    return runs < CONV2D_TUNE_ROUNDS ? CONV2D_TUNE_ROUNDS
         : runs > CONV2D_TUNE_MAX_ROUNDS ? CONV2D_TUNE_MAX_ROUNDS : runs;
}

static int threads_taken;        /* test hook: thread counts taken as this (0: timed) */
static int threads_chosen_count; /* thread counts chosen so far (test hook) */

int conv2d_set_tune_threads(int n)
{
    int old = threads_taken;
    threads_taken = n;
    return old;
}

int conv2d_tune_threads_chosen(void)
{
    return __atomic_load_n(&threads_chosen_count, __ATOMIC_RELAXED);
}

/* The threads to run path on: of nthreads, nthreads/2, ..., 1, fewer only
 * while that is at least 3% faster than the count before it. Each pair of
 * counts is timed in interleaved runs, so that a disturbance (another
 * process, or another library's threads still waking or spinning down
 * after its call) hits both alike, as a compiled program's counts are
 * timed (one count after the other, a disturbance during the first count's
 * runs alone favours the second). */
static int time_threads(int op, const conv_call *c, int path, int nthreads, int *threads)
{
    int err = 0;
    *threads = nthreads;
    __atomic_add_fetch(&threads_chosen_count, 1, __ATOMIC_RELAXED);
    if (threads_taken > 0) {
        *threads = threads_taken < nthreads ? threads_taken : nthreads;
        return FASTCNN_OK;
    }
    if (nthreads == 1)
        return FASTCNN_OK;
    int runs = rounds_for(fastest_run(op, path, c, nthreads, 1, &err));
    for (int nt = nthreads / 2; nt >= 1 && !err; nt /= 2) {
        fastest_run(op, path, c, nt, 1, &err);
        double more = 1e300, fewer = 1e300;
        for (int i = 0; i < runs && !err; i++) {
            double t = fastest_run(op, path, c, *threads, 1, &err);
            more = t < more ? t : more;
            t = fastest_run(op, path, c, nt, 1, &err);
            fewer = t < fewer ? t : fewer;
        }
        if (fewer > 0.97 * more)
            break;
        *threads = nt;
    }
    return err;
}

/* The op a call's choice is kept under. */
static int tune_op(int op, const conv_call *c)
{
    return op == FORWARD && c->prep ? FORWARD_PREPARED : op;
}

/* Time what is not kept yet: the shape's path (key nthreads 0), then its
 * threads for nthreads (again: once more, after a probe). Where another
 * thread timed the shape at the same time and kept its choice first, that
 * choice stays and this call takes it: a shape runs one path, and its
 * weight gradient one thread count, from its first call on. */
static int time_choice(int op, const conv_call *c, int nthreads, int again,
                       conv2d_tune_choice *ch)
{
    conv2d_tune_key path_key = conv2d_tune_key_of(tune_op(op, c), c->s, 0);
    conv2d_tune_key key = conv2d_tune_key_of(tune_op(op, c), c->s, nthreads);
    conv2d_tune_choice kept;
    int err = FASTCNN_OK;
    if (!conv2d_tune_find(&path_key, &kept)) {
        err = time_paths(op, c, nthreads, &kept.path);
        kept.threads = 0;
        if (!err)
            conv2d_tune_keep(&path_key, kept);
        conv2d_tune_find(&path_key, &kept);
    }
    ch->path = kept.path;
    if (!err)
        err = time_threads(op, c, ch->path, nthreads, &ch->threads);
    if (!err && !again && conv2d_tune_find(&key, &kept))
        *ch = kept;
    else if (!err)
        conv2d_tune_keep(&key, *ch);
    return err;
}

/* Time the path (unless kept) and the threads of this shape on nthreads now,
 * and keep them. The weight gradient accumulates, so its timed runs write to
 * a scratch dw. */
static int time_now(int op, const conv_call *c, int nthreads, int again,
                    conv2d_tune_choice *ch)
{
    const conv2d_shape *s = c->s;
    conv_call trial = *c;
    float *dw = NULL;
    if (op == BACKWARD_WEIGHT) {
        dw = calloc((size_t)(s->K * s->C * s->R * s->S), sizeof(float));
        if (!dw)
            return FASTCNN_ENOMEM;
        trial.out = dw;
    }
    int err = time_choice(op, &trial, nthreads, again, ch);
    free(dw);
    return err;
}

/* Kept threads fewer than those asked for are watched: a call on them is
 * timed, the fastest kept (WATCH); the uses that are powers of two from
 * PROBE_FIRST to PROBE_LAST run on all the threads asked for (PROBE), and a
 * probe 5% faster than the fastest has the threads timed again (timed while
 * another process held a core, a shape would otherwise keep one thread for
 * good; a probe disturbed as well gets the next power of two). A probe costs
 * one call. Not the weight gradient's: every path splits its sums by thread, so
 * its bits follow the threads it runs on, and a shape's calls in a process
 * give the same bits (its forward and backward data are the same bits on
 * any threads). */
enum { RUN, WATCH, PROBE };
#define PROBE_FIRST 4
#define PROBE_LAST 1024

static int probe_all;   /* conv2d_tune_probe_all: every watched call probes */

void conv2d_tune_probe_all(int on)
{
    __atomic_store_n(&probe_all, on, __ATOMIC_RELAXED);
}

static int watch_of(const conv2d_tune_key *key)
{
    int use = conv2d_tune_use(key);
    if (__atomic_load_n(&probe_all, __ATOMIC_RELAXED))
        return PROBE;
    int probe = use >= PROBE_FIRST && use <= PROBE_LAST && (use & (use - 1)) == 0;
    return probe ? PROBE : use > 0 && use < PROBE_LAST ? WATCH : RUN;
}

/* The path and threads of this call (and whether it is watched): kept from
 * an earlier call of the shape, timed now, or by shape. */
static int choose(int op, const conv_call *c, int nthreads, conv2d_tune_choice *ch, int *watch)
{
    const conv2d_shape *s = c->s;
    nthreads = fastcnn_thread_limit(nthreads);
    ch->path = path_by_shape(op, s, nthreads), ch->threads = nthreads;
    *watch = RUN;
    if (!timed(s))
        return FASTCNN_OK;
    conv2d_tune_key key = conv2d_tune_key_of(tune_op(op, c), s, nthreads);
    if (conv2d_tune_find(&key, ch)) {
        *watch = ch->threads < nthreads && op != BACKWARD_WEIGHT ? watch_of(&key) : RUN;
        return FASTCNN_OK;
    }
    if (!conv2d_tune_room()) {  /* a full table: the shape's kept path, else by shape */
        conv2d_tune_key path_key = conv2d_tune_key_of(tune_op(op, c), s, 0);
        conv2d_tune_choice kept;
        if (conv2d_tune_find(&path_key, &kept))
            ch->path = kept.path;
        return FASTCNN_OK;
    }
    return time_now(op, c, nthreads, 0, ch);
}

/* After a watched call that took `seconds`: keep the fastest, or, after a
 * probe faster than it, time the threads again. */
static int watched(int op, const conv_call *c, int nthreads, int watch, double seconds)
{
    conv2d_tune_key key = conv2d_tune_key_of(tune_op(op, c), c->s, nthreads);
    if (watch == WATCH) {
        conv2d_tune_seen(&key, seconds);
        return FASTCNN_OK;
    }
    if (seconds >= 0.95 * conv2d_tune_best(&key))
        return FASTCNN_OK;
    conv2d_tune_choice ch;
    return time_now(op, c, nthreads, 1, &ch);
}

/* Run op on the path and threads chosen for it. */
static int run_chosen(int op, const conv_call *c, int nthreads)
{
    conv2d_tune_choice ch;
    int watch;
    int err = choose(op, c, nthreads, &ch, &watch);
    if (err || watch == RUN)
        return err ? err : run_path(op, ch.path, c, ch.threads);
    nthreads = fastcnn_thread_limit(nthreads);
    double t0 = conv2d_seconds();
    err = run_path(op, ch.path, c, watch == PROBE ? nthreads : ch.threads);
    double seconds = conv2d_seconds() - t0;
    return err ? err : watched(op, c, nthreads, watch, seconds);
}

/* ---- taps that only read padding ---------------------------------------------- */

/* floor(a / b) for b > 0. */
static int64_t floor_div(int64_t a, int64_t b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* [lo, hi): the taps r of a kernel of R along one axis (stride st, padding
 * pad, dilation dil, input size n, output size P) that read the input for
 * some output p, i.e. 0 <= p st - pad + r dil < n for some p < P. */
static void taps_used(int64_t n, int64_t P, int64_t st, int64_t pad, int64_t dil, int64_t R,
                      int64_t *lo, int64_t *hi)
{
    *lo = R, *hi = 0;
    for (int64_t r = 0; r < R; r++) {
        int64_t first = -floor_div(r * dil - pad, st), last = floor_div(n - 1 + pad - r * dil, st);
        first = first < 0 ? 0 : first;
        last = last > P - 1 ? P - 1 : last;
        if (first <= last) {
            *lo = r < *lo ? r : *lo;
            *hi = r + 1;
        }
    }
}

/* Whether s has taps that read only padding on every output (a 3x3 kernel
 * on a 1x1 map: ResNet's last stage at 32x32 inputs): then t is s with the
 * kernel cut to rows [r0, r0 + t.R) and columns [s0, s0 + t.S), the padding
 * moved with it; the cut taps add nothing to the outputs or to dx, and their
 * weight gradient is zero (while the values are finite: run_op). */
static int cropped(const conv2d_shape *s, conv2d_shape *t, int64_t *r0, int64_t *s0)
{
    int64_t r1, s1;
    taps_used(s->H, s->P, s->sh, s->ph, s->dh, s->R, r0, &r1);
    taps_used(s->W, s->Q, s->sw, s->pw, s->dw, s->S, s0, &s1);
    if (*r0 >= r1 || *s0 >= s1 || (r1 - *r0 == s->R && s1 - *s0 == s->S))
        return 0;       /* all taps read the input (or none: left to the paths) */
    *t = *s;
    t->R = r1 - *r0, t->S = s1 - *s0;
    t->ph = s->ph - *r0 * s->dh, t->pw = s->pw - *s0 * s->dw;
    return 1;
}

/* Filters (K C of them) per chunk of the cut's passes: their weights are
 * checked, then their kept taps copied while still in L1. */
#define CUT_CHUNK 256

/* Whether every float of v is finite (one pass the compiler vectorizes:
 * an exponent of all ones marks an infinity or a NaN). */
static int all_finite(const float *v, int64_t n)
{
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, v + i, sizeof bits);
        bad |= (bits & 0x7f800000u) == 0x7f800000u;
    }
    return !bad;
}

/* Filters [f0, f1) of weights (K, C, R, S) <-> of the cut kernel (K, C,
 * t->R, t->S) at (r0, s0): copied out of w, or (add) added into w. */
static void cut_filters(float *cut, float *w, const conv2d_shape *s, const conv2d_shape *t,
                        int64_t r0, int64_t s0, int64_t f0, int64_t f1, int add)
{
    int64_t RS = s->R * s->S, tRS = t->R * t->S;
    for (int64_t r = 0; r < t->R; r++)
        for (int64_t q = 0; q < t->S; q++) {
            float *full = w + (r0 + r) * s->S + s0 + q;
            float *part = cut + r * t->S + q;
            if (add)
                for (int64_t f = f0; f < f1; f++) full[f * RS] += part[f * tRS];
            else
                for (int64_t f = f0; f < f1; f++) part[f * tRS] = full[f * RS];
        }
}

/* The cut kernel (K, C, t->R, t->S) at (r0, s0) of the weights (K, C, R, S)
 * of s: copied out of w (check: unless some weight is not finite; returns
 * 0 then), or (add) added into w. */
typedef struct {
    float *cut, *w;
    const conv2d_shape *s, *t;
    int64_t r0, s0;
    int add, check;
    atomic_int ok;              /* cleared by a chunk that finds a weight not finite */
} cut_call;

/* Chunk i: its own CUT_CHUNK filters. */
static void cut_chunk(void *ctx, int64_t i, int slot)
{
    cut_call *c = ctx;
    int64_t filters = c->s->K * c->s->C, RS = c->s->R * c->s->S;
    int64_t f0 = i * CUT_CHUNK, f1 = f0 + CUT_CHUNK < filters ? f0 + CUT_CHUNK : filters;
    (void)slot;
    if (c->check && !all_finite(c->w + f0 * RS, (f1 - f0) * RS))
        atomic_store_explicit(&c->ok, 0, memory_order_relaxed);
    cut_filters(c->cut, c->w, c->s, c->t, c->r0, c->s0, f0, f1, c->add);
}

static int cut_weights(float *cut, float *w, const conv2d_shape *s, const conv2d_shape *t,
                       int64_t r0, int64_t s0, int add, int check, int nthreads)
{
    int64_t filters = s->K * s->C;
    cut_call c = {cut, w, s, t, r0, s0, add, check, 1};
    fastcnn_parallel_for((filters + CUT_CHUNK - 1) / CUT_CHUNK, cut_chunk, &c,
                         fastcnn_threads_for(filters * s->R * s->S, nthreads));
    return atomic_load_explicit(&c.ok, memory_order_relaxed);
}

/* op on its chosen path, with the kernel cut to the taps that read the
 * input if some read only padding (one group: G == 1). A cut tap
 * multiplies padding zeros, which adds nothing unless its weight (forward)
 * or some dy (weight gradient) is infinite or NaN: then the sum is NaN, as
 * in PyTorch, so the whole kernel runs when any weight or dy is not finite
 * (which taps hold them does not matter). Backward data never reads the cut
 * taps' products. */
static int run_op(int op, const conv_call *c, int nthreads)
{
    conv2d_shape t;
    int64_t r0, s0;
    const conv2d_shape *s = c->s;
    if (!cropped(s, &t, &r0, &s0)
        || (op == BACKWARD_WEIGHT && !all_finite(c->dy, s->N * s->K * s->P * s->Q)))
        return run_chosen(op, c, nthreads);
    float *cut = conv2d_scratch_take(t.K * t.C * t.R * t.S);
    if (!cut)
        return FASTCNN_ENOMEM;
    conv_call cc = *c;
    cc.s = &t;
    cc.prep = NULL;             /* the cut weights are a fresh copy */
    int err = FASTCNN_OK;
    if (op == BACKWARD_WEIGHT) {
        memset(cut, 0, (size_t)(t.K * t.C * t.R * t.S) * sizeof(float));
        cc.out = cut;
        err = run_chosen(op, &cc, nthreads);
        if (!err)
            cut_weights(cut, c->out, s, &t, r0, s0, 1, 0, nthreads);
    } else if (cut_weights(cut, (float *)c->w, s, &t, r0, s0, 0, op == FORWARD, nthreads)) {
        cc.w = cut;
        err = run_chosen(op, &cc, nthreads);
    } else {
        err = run_chosen(op, c, nthreads);
    }
    conv2d_scratch_give(cut);
    return err;
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
    conv_call c = {y, x, w, b, NULL, s};
    return run_op(FORWARD, &c, nthreads);
}

int conv2d_forward_prepared(float *y, const float *x, const float *w, const float *b,
                            const conv2d_shape *s, conv2d_prepared *prep, int nthreads)
{
    if (depthwise(s) || s->G > 1)
        return conv2d_forward(y, x, w, b, s, nthreads);
    conv_call c = {y, x, w, b, NULL, s, prep};
    return run_op(FORWARD, &c, nthreads);
}

int conv2d_backward_data(float *dx, const float *dy, const float *w,
                         const conv2d_shape *s, int nthreads)
{
    if (depthwise(s))
        return conv2d_depthwise_backward_data(dx, dy, w, s, nthreads);
    if (s->G > 1)
        return run_groups(BACKWARD_DATA, dx, NULL, w, NULL, dy, s, nthreads);
    conv_call c = {dx, NULL, w, NULL, dy, s};
    return run_op(BACKWARD_DATA, &c, nthreads);
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

/* Channels of db per work item of bias_grad: their rows of an image are
 * read in one run (channel by channel, a 14x14 map's rows are 784 bytes
 * apart from the next image's by K maps, too short for the hardware
 * prefetcher: pw_14's bias gradient, 32x256x14x14, took 0.7 ms). */
#define BIAS_GRAD_BLOCK 64

typedef struct {
    float *db;
    const float *dy;
    const conv2d_shape *s;
    int64_t block;
} bias_grad_call;

/* db[k] += sum of dy[:, k] over the images in order, for the channels k of
 * block t (each written by one work item). */
static void bias_grad_block(void *ctx, int64_t t, int slot)
{
    const bias_grad_call *b = ctx;
    const conv2d_shape *s = b->s;
    int64_t PQ = s->P * s->Q, k0 = t * b->block;
    int64_t kn = s->K - k0 < b->block ? s->K - k0 : b->block;
    double acc[BIAS_GRAD_BLOCK] = {0.0};
    (void)slot;
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t k = 0; k < kn; k++) acc[k] += row_sum(b->dy + (n * s->K + k0 + k) * PQ, PQ);
    for (int64_t k = 0; k < kn; k++) b->db[k0 + k] += (float)acc[k];
}

/* db (K) += sum of dy (N, K, PQ) over N and PQ; blocks of channels small
 * enough to give each thread several. */
static void bias_grad(float *db, const float *dy, const conv2d_shape *s, int nthreads)
{
    int nt = fastcnn_threads_for(s->N * s->K * s->P * s->Q, nthreads);
    int64_t block = s->K / (4 * nt);
    block = block < 1 ? 1 : block > BIAS_GRAD_BLOCK ? BIAS_GRAD_BLOCK : block;
    bias_grad_call b = {db, dy, s, block};
    fastcnn_parallel_for((s->K + block - 1) / block, bias_grad_block, &b, nt);
}

int conv2d_backward_weight(float *dw, float *db, const float *dy, const float *x,
                           const conv2d_shape *s, int nthreads)
{
    conv_call c = {dw, x, NULL, NULL, dy, s};
    int err = depthwise(s) ? conv2d_depthwise_backward_weight(dw, dy, x, s, nthreads)
            : s->G > 1 ? run_groups(BACKWARD_WEIGHT, dw, x, NULL, NULL, dy, s, nthreads)
            : run_op(BACKWARD_WEIGHT, &c, nthreads);
    if (!err && db)
        bias_grad(db, dy, s, nthreads);
    return err;
}
