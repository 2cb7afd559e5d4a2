/* conv2d_internal.h - what the conv2d family's files share (private to
 * csrc/conv2d*.c): the kernel table of an instruction set, the scratch
 * cache, the zero-padded image copy, im2col / col2im, and the paths that
 * conv2d.c chooses between.
 *
 *   conv2d.c          entry points, path choice, test hooks, bias gradient
 *   conv2d_ref.c      reference kernels (test oracle)
 *   conv2d_scratch.c  the one-slot scratch cache
 *   conv2d_tune.c     the table of timed path choices
 *   conv2d_prepared.c weights derived once for weights that do not change
 *   conv2d_im2col.c   im2col / col2im of a group of images
 *   conv2d_gemm.c     im2col + GEMM path (any shape)
 *   conv2d_direct.c   direct forward for first layers
 *   conv2d_kvec.c     channel-vector forward and backward data
 *   conv2d_wgrad.c    channel-vector weight gradient
 *   conv2d_depthwise.c  depthwise convolution (groups == C), any stride and dilation
 *   conv2d_winograd.c   Winograd F(2x2, 3x3): 3x3 stride-1 forward and backward data;
 *                       F(4x4, 3x3): forward
 *   conv2d_dense.c    maps no larger than the kernel: one GEMM over whole images
 *   conv2d_chain.c    expand 1x1 -> depthwise -> project 1x1 by row strips (inference)
 *   conv2d_<algorithm>_avx2.c / _avx512.c   the per-ISA inner loops
 *
 * Shapes follow conv2d_shape (fastcnn.h): x (N, C, H, W), w (K, C, R, S),
 * b (K), y (N, K, P, Q). Every path but the depthwise one takes one group
 * (G == 1); all but it and the GEMM path need dilation 1 (conv2d.c chooses). */
#ifndef FASTCNN_CONV2D_INTERNAL_H
#define FASTCNN_CONV2D_INTERNAL_H

#include <stdint.h>

#include "fastcnn.h"
#include "conv2d_kernel.h"
#include "conv2d_winograd_kernel.h"
#include "dispatch.h"

/* ---- the inner loops of one instruction set (conv2d_kernel.h) ------------ */

typedef void (*conv2d_im2col_tap_fn)(float *, const float *, int64_t, int64_t, int64_t,
                                     int64_t, int64_t, const conv2d_shape *);
typedef void (*conv2d_col2im_tap_fn)(float *, const float *, int64_t, int64_t, int64_t,
                                     int64_t, int64_t, const conv2d_shape *);
typedef void (*conv2d_col2im_channel_fn)(float *, const float *, int64_t, int64_t,
                                         const conv2d_shape *);
typedef void (*conv2d_direct_block_fn)(float *, const float *, const float *, const float *,
                                       int64_t, int64_t, int64_t, int64_t, const direct_geom *);
typedef void (*conv2d_kvec_block_fn)(float *, const float *, const float *, const float *,
                                     int64_t, int, int64_t, int64_t, const kvec_geom *);
typedef void (*conv2d_wgrad_image_fn)(float *, const float *, const float *, const kvec_geom *);
typedef void (*conv2d_wgrad_row_fn)(float *, int64_t, const float *, const float *, int64_t,
                                    int64_t, int64_t, int, int64_t, int64_t,
                                    const direct_geom *);
typedef void (*conv2d_wino_input_fn)(float *, int64_t, const float *, int64_t, int64_t, int64_t,
                                     const wino_geom *);
typedef void (*conv2d_wino_output_fn)(float *, const float *, int64_t, int64_t, int64_t, int64_t,
                                      float, const wino_geom *);
typedef void (*conv2d_wino_filters_fn)(float *, int64_t, const float *, int64_t, int, int);
typedef void (*conv2d_wino_grad_fn)(float *, int64_t, const float *, int64_t, int64_t, int64_t,
                                    const wino_geom *);

typedef struct {
    conv2d_im2col_tap_fn im2col_tap;        /* im2col of one tap; the ISA's for stride 1 */
    conv2d_col2im_tap_fn col2im_tap;        /* col2im of one tap, any stride */
    conv2d_col2im_channel_fn col2im_s1;     /* col2im of a channel, column stride 1 (or NULL) */
    conv2d_col2im_channel_fn col2im_s2;     /* col2im of a channel, column stride 2 (or NULL) */
    conv2d_direct_block_fn direct_block;    /* direct forward, one block of channels */
    int64_t direct_kb;                      /* output channels per direct block */
    conv2d_kvec_block_fn kvec_block;        /* channel-vector forward, one block */
    conv2d_wgrad_image_fn wgrad_image;      /* channel-vector weight gradient, one image */
    int64_t vl;                             /* floats per vector of kvec_block, wgrad_image */
    int64_t wgrad_max_s;                    /* widest kernel rows (S) wgrad_image takes */
    conv2d_wgrad_row_fn wgrad_row;          /* position-vector weight gradient, a row's taps */
    conv2d_wino_input_fn wino_input;        /* Winograd input transform of a run of tiles */
    conv2d_wino_output_fn wino_output;      /* Winograd output transform of a run of tiles */
    conv2d_wino_filters_fn wino_filters;    /* Winograd transform of filters' taps */
    conv2d_wino_grad_fn wino_grad;          /* Winograd transform of dy's 2x2 blocks */
} conv2d_kernels;

/* The table of `isa` (fastcnn_isa()): one per instruction set, in conv2d.c. */
const conv2d_kernels *conv2d_kernels_for(int isa);

/* The portable im2col of one tap, any stride (conv2d_im2col.c). */
void conv2d_im2col_tap_generic(float *out, const float *xc, int64_t cnt, int64_t ostride,
                               int64_t xstride, int64_t r, int64_t t, const conv2d_shape *s);

/* The Winograd transforms of each instruction set (conv2d_winograd_kernel.h). */
#define WINO_DECLARE(isa)                                                                  \
    void conv2d_wino_input_##isa(float *u, int64_t us, const float *x, int64_t i0,         \
                                 int64_t j0, int64_t n, const wino_geom *g);               \
    void conv2d_wino_output_##isa(float *y, const float *m, int64_t ms, int64_t i0,        \
                                  int64_t j0, int64_t n, float bias, const wino_geom *g);  \
    void conv2d_wino_filters_##isa(float *v, int64_t vs, const float *taps, int64_t K,      \
                                   int flip, int m);                                       \
    void conv2d_wino_grad_##isa(float *v, int64_t vs, const float *dy, int64_t i0,         \
                                int64_t j0, int64_t n, const wino_geom *g);
WINO_DECLARE(generic)
WINO_DECLARE(avx2)
WINO_DECLARE(avx512)

/* ---- shared helpers ---------------------------------------------------------- */

/* A scratch buffer of at least `floats` floats (64-byte aligned), or NULL;
 * give it back with conv2d_scratch_give (conv2d_scratch.c). */
float *conv2d_scratch_take(int64_t floats);
void conv2d_scratch_give(float *p);

/* First image of part i when n images are split into parts even parts. */
static inline int64_t split_point(int64_t n, int64_t i, int64_t parts)
{
    return n * i / parts;
}

/* xpad (C, Hp, Wp) = image x (C, H, W) shifted by the top/left padding,
 * zero elsewhere (conv2d_direct.c). */
void conv2d_pad_image(float *xpad, const float *x, const conv2d_shape *s, int64_t Hp,
                      int64_t Wp);

/* Output rows per part of P rows when the direct and channel-vector
 * forwards have `items` (image, channel block) items for nt threads: all P
 * unless there are fewer items than threads (a batch-1 call), then parts of
 * an even number of rows, at least 2, so that every thread has one
 * (conv2d_direct.c). */
int64_t conv2d_part_rows(int64_t P, int64_t items, int nt);

/* col (CRS, cnt PQ) = im2col of cnt images x (cnt, C, H, W); channels
 * [c0, c0 + nc) of dx (cnt, C, H, W) = col2im of their rows of such a col
 * (col: (nc R S, cnt PQ)) (conv2d_im2col.c). */
void conv2d_im2col(float *col, const float *x, int64_t cnt, const conv2d_shape *s,
                   int nthreads);
void conv2d_col2im(float *dx, const float *col, int64_t cnt, int64_t c0, int64_t nc,
                   const conv2d_shape *s, int nthreads);

/* ---- timed path choices (conv2d_tune.c) ----------------------------------- */

/* What a choice is kept for: the op (conv2d.c's FORWARD, BACKWARD_DATA,
 * BACKWARD_WEIGHT, or FORWARD_PREPARED: a forward with kept derived
 * weights), the shape (its epilogue left out), the threads the caller allowed (0 for the path alone) and the instruction set; and what
 * was chosen: the path and the threads to run it on. */
typedef struct {
    int op, nthreads, isa;
    conv2d_shape shape;
} conv2d_tune_key;

typedef struct {
    int path, threads;
} conv2d_tune_choice;

conv2d_tune_key conv2d_tune_key_of(int op, const conv2d_shape *s, int nthreads);
/* 1 and *out = the kept choice for k, or 0 if none is kept. */
int conv2d_tune_find(const conv2d_tune_key *k, conv2d_tune_choice *out);
/* Keep c for k; for a k kept already, its new thread count. */
void conv2d_tune_keep(const conv2d_tune_key *k, conv2d_tune_choice c);
/* Counts a use of k's kept choice: its number (counting stops at 2^20), or
 * 0 if none is kept. */
int conv2d_tune_use(const conv2d_tune_key *k);
/* The fastest call seen on k's kept choice since its threads were kept
 * (seconds; FLT_MAX if none), and a call's time to keep the fastest of. */
double conv2d_tune_best(const conv2d_tune_key *k);
void conv2d_tune_seen(const conv2d_tune_key *k, double seconds);
/* Whether the table has room for more shapes (half its slots, so probes stay short). */
int conv2d_tune_room(void);
/* Forget every kept choice (test hook; no convolution may run meanwhile). */
void conv2d_tune_forget(void);
/* A monotonic clock, in seconds. */
double conv2d_seconds(void);
/* Whether convolutions are timed (FASTCNN_CONV_TUNE, conv2d_set_tune), and
 * from how much work on (conv2d.c says why). */
int conv2d_tuning(void);
#define CONV2D_TUNE_MIN_FLOPS 4000000
/* Interleaved rounds of timing: at least CONV2D_TUNE_ROUNDS, more (up to
 * CONV2D_TUNE_MAX_ROUNDS) until each candidate ran CONV2D_TUNE_MIN_SECONDS in
 * all, so that the minimum of a cheap convolution is not one noisy sample. */
#define CONV2D_TUNE_ROUNDS 3
#define CONV2D_TUNE_MAX_ROUNDS 16
#define CONV2D_TUNE_MIN_SECONDS 0.006
/* *fastest = the index of the fastest of n candidates (run(arg, i) runs
 * candidate i once and returns FASTCNN_OK or an error; before(arg), unless
 * NULL, runs untimed before each timed run): a warm-up run of each, then the
 * best of each in interleaved rounds as above. Returns the first error, if
 * any. */
int conv2d_time_fastest(int n, int (*run)(void *arg, int i), void (*before)(void *arg),
                        void *arg, int *fastest);
/* Writes back and drops the cache lines of v[0 .. n) in every cache level. */
void conv2d_evict(const float *v, int64_t n);
/* The table's op for the depthwise forward's choice (conv2d_depthwise.c);
 * conv2d.c's ops are below it. */
#define CONV2D_TUNE_DEPTHWISE 16

/* ---- weights derived once (conv2d_prepared.c) ------------------------------ */

/* The kinds a conv2d_prepared keeps, one entry each. */
enum {
    PREPARED_GEMM, PREPARED_GEMM_T, PREPARED_KVEC, PREPARED_WINO_NARROW, PREPARED_WINO_WIDE,
    PREPARED_WINO4_NARROW, PREPARED_WINO4_WIDE, PREPARED_CHAIN, PREPARED_KINDS
};

/* Derive a kind's data (floats as the caller asked) from w of shape s. */
typedef int (*conv2d_prepare_fn)(float *data, const float *w, const conv2d_shape *s,
                                 int64_t variant, int nthreads);

/* The data of `kind` derived from w (of s's sizes, in the kind's `variant`):
 * kept in p, made by prepare on first use. NULL when p is NULL, when p keeps
 * that kind for other weights or sizes, or when memory runs out: the caller
 * then derives it itself. */
const float *conv2d_prepared_get(conv2d_prepared *p, int kind, const float *w,
                                 const conv2d_shape *s, int64_t variant, int64_t floats,
                                 conv2d_prepare_fn prepare, int nthreads);
/* conv2d_evict of all p keeps (p may be NULL). */
void conv2d_prepared_evict(conv2d_prepared *p);

/* ---- the paths (each returns FASTCNN_OK or FASTCNN_ENOMEM) ------------------- */

/* im2col + GEMM, any shape (conv2d_gemm.c). The forward's packed weights
 * come from prep where it keeps them. */
int conv2d_gemm_forward(float *y, const float *x, const float *w, const float *b,
                        const conv2d_shape *s, conv2d_prepared *prep, int nthreads);
int conv2d_gemm_backward_data(float *dx, const float *dy, const float *w,
                              const conv2d_shape *s, int nthreads);
/* grouped: pointwise images grouped into products nb images deep, as smaller
 * maps' are, not one GEMM each (conv2d_gemm_alone). */
int conv2d_gemm_backward_weight(float *dw, const float *dy, const float *x,
                                const conv2d_shape *s, int grouped, int nthreads);
/* Whether the GEMM path runs s's images one GEMM each (pointwise, maps of
 * POINTWISE_ALONE_PQ positions or more), and so could group them instead. */
int conv2d_gemm_alone(const conv2d_shape *s);

/* One GEMM over whole images for maps no larger than the kernel
 * (conv2d_dense.c): fits, then the ops. */
int conv2d_dense_fits(const conv2d_shape *s);
int conv2d_dense_forward(float *y, const float *x, const float *w, const float *b,
                         const conv2d_shape *s, int nthreads);
int conv2d_dense_backward_data(float *dx, const float *dy, const float *w,
                               const conv2d_shape *s, int nthreads);
int conv2d_dense_backward_weight(float *dw, const float *dy, const float *x,
                                 const conv2d_shape *s, int nthreads);

/* Direct forward, stride 1 (conv2d_direct.c). */
int conv2d_direct_forward(float *y, const float *x, const float *w, const float *b,
                          const conv2d_shape *s, int nthreads);

/* Channel-vector forward, any K (conv2d_kvec.c). The weight blocks
 * come from prep where it keeps them (prep may be NULL). */
int conv2d_kvec_forward(float *y, const float *x, const float *w, const float *b,
                        const conv2d_shape *s, conv2d_prepared *prep, int nthreads);

/* Channel-vector weight gradient, dw += (any K, S <= wgrad_max_s) (conv2d_wgrad.c). */
int conv2d_wgrad_backward_weight(float *dw, const float *dy, const float *x,
                                 const conv2d_shape *s, int nthreads);
/* Position-vector weight gradient, dw += (stride 1, dilation 1) (conv2d_wgrad.c). */
int conv2d_wgrad_taps_backward_weight(float *dw, const float *dy, const float *x,
                                      const conv2d_shape *s, int nthreads);

/* Depthwise: G == C, K = m C, any stride, padding and dilation; dw +=
 * (conv2d_depthwise.c). */
int conv2d_depthwise_forward(float *y, const float *x, const float *w, const float *b,
                             const conv2d_shape *s, int nthreads);
int conv2d_depthwise_backward_data(float *dx, const float *dy, const float *w,
                                   const conv2d_shape *s, int nthreads);
int conv2d_depthwise_backward_weight(float *dw, const float *dy, const float *x,
                                     const conv2d_shape *s, int nthreads);

/* Winograd F(2x2, 3x3) (weight gradient: F(3x3, 2x2)), and F(4x4, 3x3) for
 * the forward (m = 4; else m = 2): R = S = 3, stride 1, dilation 1; backward
 * data also needs ph, pw <= 2 (conv2d_winograd.c). The forward's
 * transformed filters come from prep where it keeps them. */
int conv2d_winograd_forward(float *y, const float *x, const float *w, const float *b,
                            const conv2d_shape *s, int m, conv2d_prepared *prep, int nthreads);
int conv2d_winograd_backward_data(float *dx, const float *dy, const float *w,
                                  const conv2d_shape *s, int nthreads);
int conv2d_winograd_backward_weight(float *dw, const float *dy, const float *x,
                                    const conv2d_shape *s, int nthreads);

#endif /* FASTCNN_CONV2D_INTERNAL_H */
