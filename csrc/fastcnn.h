/* fastcnn.h - the C API of every fastcnn kernel.
 *
 * Dimension letters, used in every shape comment:
 *   N  batch               C  input channels       H, W  input height, width
 *   K  output channels     R, S  window (kernel) height, width
 *   P, Q  output height, width
 *   sh, sw  stride         ph, pw  zero padding (top/left; bottom/right follow from P, Q)
 *   F  input features, O  output features (linear)
 *   L  classes (loss)      n  number of elements (element-wise kernels)
 *
 * Layout: activations NCHW, conv weights KCRS, linear weights (O, F); every
 * buffer float32 and C-contiguous, as in PyTorch.
 *
 * Argument order (llm.c): outputs first, then cached activations, then
 * const inputs and weights, then sizes and hyper-parameters, then nthreads.
 * Backward kernels write (=) the input gradient and accumulate (+=) into the
 * parameter gradients, which the caller zeroes. Pointers documented as
 * "may be NULL" skip that output or input.
 *
 * Every kernel is callable without the GIL. Kernels that allocate scratch
 * memory return FASTCNN_OK or FASTCNN_ENOMEM and never abort. Each fast
 * kernel has a plain reference twin (suffix _ref): the fallback and the
 * test oracle.
 *
 * Callers (the Cython bindings) validate every size before calling: all
 * sizes are >= 1 and consistent, so kernels do not re-check them.
 */
#ifndef FASTCNN_H
#define FASTCNN_H

#include <stddef.h>
#include <stdint.h>

#define FASTCNN_OK 0
#define FASTCNN_ENOMEM 1

/* threads.c ---------------------------------------------------------------- */

/* Threads to use for `work` units of work (flops or elements): 1 below a
 * size threshold (a parallel region costs microseconds), else
 * fastcnn_thread_limit(nthreads). Every parallel region's count comes from it. */
int fastcnn_threads_for(int64_t work, int nthreads);
/* nthreads, or 1 if nthreads < 1 or in a forked child (see below). */
int fastcnn_thread_limit(int nthreads);
/* 1 in a process forked after this library loaded, else 0: GNU libgomp cannot
 * run parallel regions after fork, so such a child runs serial kernels. */
int fastcnn_forked_child(void);
/* 1 if built with OpenMP, else 0. */
int fastcnn_openmp_enabled(void);
/* Aligned (64-byte) allocation for scratch buffers; NULL on failure. */
void *fastcnn_alloc(int64_t bytes);
void fastcnn_free(void *p);

/* blocks.c ---------------------------------------------------------------- */

/* Memory for the arrays fastcnn returns (numpy's allocator while fastcnn makes
 * them): 64-byte aligned; freed blocks of 1 MiB or more are cached (up to
 * FASTCNN_CACHE_MB, default 256) and reused for requests of their size class,
 * so large outputs skip the kernel's page zeroing. NULL when out of memory. */
void *fastcnn_block_get(size_t n);
void fastcnn_block_put(void *p);
/* realloc's contract: p kept and NULL returned on failure. */
void *fastcnn_block_resize(void *p, size_t n);
/* Frees the cached blocks; returns their bytes. */
int64_t fastcnn_blocks_release(void);
/* out: cached bytes, cached blocks, hits, misses, the cap in bytes. */
void fastcnn_blocks_stats(int64_t out[5]);

/* pool.c ------------------------------------------------------------------ */

/* One chunk of a parallel loop; slot (0 .. nthreads-1) is unique among the
 * threads running the loop's chunks at the same time (per-thread scratch). */
typedef void (*fastcnn_chunk_fn)(void *ctx, int64_t chunk, int slot);
/* Calls fn(ctx, i, slot) once for each i in [0, chunks), in any order, on up
 * to fastcnn_thread_limit(nthreads) threads: the caller and fastcnn's worker
 * threads. The caller never waits for a worker that has not started (see
 * pool.c). Returns when every chunk is done. */
void fastcnn_parallel_for(int64_t chunks, fastcnn_chunk_fn fn, void *ctx, int nthreads);
/* Idle workers sleep now instead of spinning for the next loop (the end of
 * a model run: no loop follows soon). */
void fastcnn_pool_rest(void);
/* fn(ctx, lo, hi) on spans covering [0, n): one span [0, n) when nthreads <=
 * 1, else spans of `span` elements (the last shorter) on the worker threads. */
typedef void (*fastcnn_span_fn)(void *ctx, int64_t lo, int64_t hi);
void fastcnn_parallel_spans(int64_t n, int64_t span, fastcnn_span_fn fn, void *ctx,
                            int nthreads);
/* Test hook: `jobs` parallel loops of `chunks` chunks on nthreads; 0 if every
 * chunk ran exactly once and no slot ran two chunks at once, else -1. */
int fastcnn_pool_check(int64_t chunks, int nthreads, int jobs);

/* cpu.c -------------------------------------------------------------------- */

enum fastcnn_isa { FASTCNN_ISA_GENERIC = 0, FASTCNN_ISA_AVX2 = 1, FASTCNN_ISA_AVX512 = 2 };
/* The best instruction set this CPU supports and this build compiled,
 * lowered by the environment variable FASTCNN_ISA=avx512|avx2|generic.
 * Resolved once, on first call. */
int fastcnn_isa(void);
/* Its name: "avx512", "avx2" or "generic". */
const char *fastcnn_isa_name(int isa);
/* Best ISA the CPU supports, ignoring FASTCNN_ISA. */
int fastcnn_cpu_isa(void);
/* Bytes of the last-level data cache (Linux sysfs, as lscpu shows it); 8 MiB
 * where the system does not say. Read once, on first call. */
int64_t fastcnn_llc_bytes(void);
/* Bytes of one core's L2 cache (sysfs); 512 KiB where the system does not
 * say. Read once, on first call. */
int64_t fastcnn_l2_bytes(void);

/* batchnorm2d.c --------------------------------------------------------------- */

/* x, y, dx, dy: (N, C, HW); mean, var (biased), invstd, gamma, beta, dgamma,
 * dbeta, running_*: (C). gamma, beta may be NULL (1, 0); dx, dgamma, dbeta may
 * be NULL (not needed). Backward accumulates (+=) into dgamma and dbeta. */
void batchnorm2d_forward_train(float *y, float *mean, float *var, float *invstd, const float *x,
                               const float *gamma, const float *beta, int64_t N, int64_t C,
                               int64_t HW, double eps, int nthreads);
void batchnorm2d_forward_eval(float *y, const float *x, const float *mean, const float *var,
                              const float *gamma, const float *beta, int64_t N, int64_t C,
                              int64_t HW, double eps, int nthreads);
/* the gradients from the forward's saved mean and invstd (of x's batch):
 * one pass per channel for the sums of dy and dy xhat, then dx */
void batchnorm2d_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                          const float *x, const float *mean, const float *invstd,
                          const float *gamma, int64_t N, int64_t C, int64_t HW, int nthreads);
void batchnorm2d_forward_train_ref(float *y, float *mean, float *var, float *invstd,
                                   const float *x, const float *gamma, const float *beta,
                                   int64_t N, int64_t C, int64_t HW, double eps);
void batchnorm2d_forward_eval_ref(float *y, const float *x, const float *mean, const float *var,
                                  const float *gamma, const float *beta, int64_t N, int64_t C,
                                  int64_t HW, double eps);
void batchnorm2d_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy,
                              const float *x, const float *mean, const float *invstd,
                              const float *gamma, int64_t N, int64_t C, int64_t HW);
/* running = (1 - momentum) running + momentum batch (the variance unbiased by
 * count / (count - 1), count = N * HW) */
/* Test hook: the maps write their output with non-temporal stores when it is
 * more than half the last-level cache (mode 0), always (1) or never (-1).
 * Returns the old mode. The values written are the same. */
int batchnorm2d_set_stream(int mode);
void batchnorm2d_update_running(float *running_mean, float *running_var, const float *mean,
                                const float *var, int64_t C, int64_t count, double momentum);
/* wf (K, CRS) = w * s[k], bf (K) = (b - mean) * s + beta, s = gamma / sqrt(var + eps):
 * batch norm in eval folded into the convolution before it. b, gamma, beta may be NULL. */
void batchnorm2d_fold(float *wf, float *bf, const float *w, const float *b, const float *gamma,
                      const float *beta, const float *mean, const float *var, int64_t K,
                      int64_t CRS, double eps, int nthreads);

/* pointwise.c ----------------------------------------------------------------- */

enum {
    POINTWISE_TANH, POINTWISE_LEAKY_RELU, POINTWISE_HARDTANH, POINTWISE_HARDSIGMOID,
    POINTWISE_HARDSWISH, POINTWISE_SILU, POINTWISE_GELU, POINTWISE_GELU_TANH
};
/* y, x, dx, dy: (n); kind one of POINTWISE_*; a, b: leaky ReLU's slope (a),
 * hardtanh's min and max (a, b). Each element computed in double. */
void pointwise_forward(int kind, float *y, const float *x, int64_t n, float a, float b,
                       int nthreads);
void pointwise_backward(int kind, float *dx, const float *dy, const float *x, int64_t n,
                        float a, float b, int nthreads);

/* merge.c ------------------------------------------------------------------- */

/* y = a + b, y = a * b (y may be a or b); y += x. Every buffer is (n). */
void add_forward(float *y, const float *a, const float *b, int64_t n, int nthreads);
void add_accumulate(float *y, const float *x, int64_t n, int nthreads);
/* y = x, (n) each, on the worker threads (an add's gradient to an input). */
void copy_floats(float *y, const float *x, int64_t n, int nthreads);
void add_forward_ref(float *y, const float *a, const float *b, int64_t n);
void add_accumulate_ref(float *y, const float *x, int64_t n);
void mul_forward(float *y, const float *a, const float *b, int64_t n, int nthreads);
void mul_forward_ref(float *y, const float *a, const float *b, int64_t n);

/* Broadcasting: y (n[0], ..., n[ndim-1]) C-contiguous; a, b read at element
 * strides sa, sb (0 along a dim they broadcast over; dims collapsed by the
 * caller, so the last dim's strides are 0 or 1). */
#define MERGE_MAX_DIMS 8
typedef struct {
    int ndim;
    int64_t n[MERGE_MAX_DIMS], sa[MERGE_MAX_DIMS], sb[MERGE_MAX_DIMS];
} merge_shape;
void add_broadcast(float *y, const float *a, const float *b, const merge_shape *s, int nthreads);
void mul_broadcast(float *y, const float *a, const float *b, const merge_shape *s, int nthreads);
void add_broadcast_ref(float *y, const float *a, const float *b, const merge_shape *s);
void mul_broadcast_ref(float *y, const float *a, const float *b, const merge_shape *s);
/* dx (an input of s's merge, read at strides sx) = dy (s->n) * other (read at
 * strides so; NULL: 1) summed over the dims where sx is 0 (its broadcast dims). */
void merge_reduce(float *dx, const float *dy, const float *other, const merge_shape *s,
                  const int64_t *sx, const int64_t *so, int nthreads);
void merge_reduce_ref(float *dx, const float *dy, const float *other, const merge_shape *s,
                      const int64_t *sx, const int64_t *so);
/* Concatenation: y (outer, sum of width) = xs[i] (outer, width[i]) side by
 * side; cat_backward splits dy back (a NULL dxs[i] is skipped). */
void cat_forward(float *y, const float *const *xs, const int64_t *width, int k, int64_t outer,
                 int nthreads);
void cat_backward(float *const *dxs, const float *dy, const int64_t *width, int k, int64_t outer,
                  int nthreads);

/* activation.c --------------------------------------------------------------- */

/* y, x, dx, dy: (n) */
void relu_forward(float *y, const float *x, int64_t n, int nthreads);
void relu_backward(float *dx, const float *dy, const float *y, int64_t n, int nthreads);
void sigmoid_forward(float *y, const float *x, int64_t n, int nthreads);
void sigmoid_backward(float *dx, const float *dy, const float *y, int64_t n, int nthreads);
void relu_forward_ref(float *y, const float *x, int64_t n);
void relu_backward_ref(float *dx, const float *dy, const float *y, int64_t n);
void sigmoid_forward_ref(float *y, const float *x, int64_t n);
void sigmoid_backward_ref(float *dx, const float *dy, const float *y, int64_t n);

/* conv2d.c ------------------------------------------------------------------- */

/* Sizes of one 2-d convolution. ph, pw are the TOP/LEFT zero padding; the
 * caller gives P and Q, which fix the bottom/right padding implicitly
 * (symmetric: P = (H + 2 ph - dh (R-1) - 1) / sh + 1; PyTorch's 'same' with
 * an even kernel pads one more at the bottom/right). dh, dw are the
 * dilation. G groups: C and K are the total channels, both multiples of G;
 * output channel k reads input channels g C/G .. (g+1) C/G - 1, g = k / (K/G),
 * so w is (K, C/G, R, S). Output (p, q) reads input
 * (p sh - ph + r dh, q sw - pw + t dw); positions outside [0,H) x [0,W) read
 * as zero. All sizes >= 1, ph, pw >= 0. With clamp != 0 the forward's
 * outputs are clamped to [lo, hi] as hardtanh does (NaN passes): the
 * activation after a convolution fused into it (ReLU: [0, inf], ReLU6:
 * [0, 6]); backward kernels and the reference ignore it. */
typedef struct {
    int64_t N, C, H, W, K, R, S, sh, sw, ph, pw, P, Q;
    int64_t dh, dw, G;
    int64_t clamp;
    float lo, hi;
} conv2d_shape;

/* y (N,K,P,Q) = conv(x (N,C,H,W), w (K,C/G,R,S)) + b (K); b may be NULL. */
int conv2d_forward(float *y, const float *x, const float *w, const float *b,
                   const conv2d_shape *s, int nthreads);
/* What the paths derive from a convolution's weights alone (transposed or
 * transformed copies), kept across calls: for weights that do not change
 * while it is in use (a frozen model's). Opaque; NULL if out of memory. */
typedef struct conv2d_prepared conv2d_prepared;
conv2d_prepared *conv2d_prepared_new(void);
void conv2d_prepared_free(conv2d_prepared *p);
/* conv2d_forward, keeping in prep what it derives from w, and reusing it
 * on later calls with the same w (same address and shape); prep may be
 * NULL. w must not change while prep is in use. Paths are timed apart from
 * conv2d_forward's (their costs differ), so results agree with it within
 * rounding, not bitwise. */
int conv2d_forward_prepared(float *y, const float *x, const float *w, const float *b,
                            const conv2d_shape *s, conv2d_prepared *prep, int nthreads);
/* One convolution of a chain: weights, bias (or NULL), its shape on the
 * whole input, and its prepared weights (or NULL). */
typedef struct {
    const float *w, *b;
    conv2d_shape s;
    conv2d_prepared *prep;
} conv2d_link;
/* An inverted-residual chain: expand 1x1 -> depthwise (groups == C,
 * dilation 1) -> [project 1x1]; each link's shape as the layer alone has it
 * (clamp: its fused activation). */
typedef struct {
    conv2d_link expand, dw, project;
    int has_project;
} conv2d_chain;
/* y = the chain on x, by strips of output rows (conv2d_chain.c), with the
 * values the links give layer by layer; inference only. */
int conv2d_chain_forward(float *y, const float *x, const conv2d_chain *ch, int nthreads);
/* Tuning and test hook: a chain's strips hold about `floats` floats of
 * expanded rows (<= 0: the default). Returns the old value. */
int64_t conv2d_set_chain_strip_floats(int64_t floats);
/* dx (N,C,H,W) = gradient of the input from dy (N,K,P,Q) and w (K,C/G,R,S). */
int conv2d_backward_data(float *dx, const float *dy, const float *w,
                         const conv2d_shape *s, int nthreads);
/* dw (K,C/G,R,S) += gradient of the weights from dy (N,K,P,Q) and x (N,C,H,W);
 * db (K) += sum of dy over N, P, Q; db may be NULL. */
int conv2d_backward_weight(float *dw, float *db, const float *dy, const float *x,
                           const conv2d_shape *s, int nthreads);
/* Tuning and test hook: images are grouped so that one GEMM spans about
 * `columns` output positions (<= 0: the default). Returns the old value. */
int64_t conv2d_set_group_columns(int64_t columns);
/* Test hook: col2im (backward data on the GEMM path) scatters one kernel tap
 * at a time (on = 1) instead of a whole channel at once where its
 * instruction set can (0). Returns the old setting. */
int conv2d_set_col2im_taps(int on);
/* Test hook: the forward's direct kernel for first layers (stride 1) is used
 * by shape (mode 0), whenever the stride is 1 (1), or never (-1). Returns
 * the old mode. */
int conv2d_set_direct(int mode);
/* Test hook: the forward's channel-vector direct kernel (K a multiple of the
 * vector length) is used by shape (0), whenever K fits (1), or never (-1). */
int conv2d_set_kvec(int mode);
/* Test hook: the depthwise forward runs in channel vectors (one output
 * channel per input channel, C a multiple of the vector length) where timing
 * or the shape chooses them (0), whenever they fit (1), or never (-1). */
int conv2d_set_depthwise_vectors(int mode);
/* Test hook: Winograd (3x3, stride 1) is chosen by timing (0), whenever it
 * fits (1; forward, weight gradient, and backward data with padding <= 2),
 * or never (-1). */
int conv2d_set_winograd(int mode);
/* Test hook: the dense path (maps no larger than the kernel, one GEMM over
 * whole images) is chosen by timing (0), whenever it fits (1), or never (-1). */
int conv2d_set_dense(int mode);
/* Test hook: a pointwise weight gradient on the GEMM path takes its images one
 * GEMM each (those of 16 positions or more) or grouped into deeper products,
 * by timing (0), grouped whenever that is the other choice (1), or never
 * grouped (-1). */
int conv2d_set_grouped_wgrad(int mode);
/* Paths chosen by timing each shape's first call (1) or by shape only (0);
 * forgets the choices kept so far. Returns the old mode. The default is 1
 * unless the environment sets FASTCNN_CONV_TUNE=0. */
int conv2d_set_tune(int mode);
/* Test hook: timing keeps, for a shape and thread count, the threads it
 * times (0) or min(n, the count) (n > 0). Returns the old n. */
int conv2d_set_tune_threads(int n);
/* Test hook: how many times a shape's threads were chosen (timed or taken). */
int conv2d_tune_threads_chosen(void);
/* While on, every call of a shape whose kept threads are fewer than those
 * asked for probes them (an inference program's probe: its convolutions
 * run only a few calls on the threads it asks for, and with one thread each
 * kept the program would not run faster on more). */
void conv2d_tune_probe_all(int on);
/* Test hook: every kept choice's fastest watched call, in seconds. */
void conv2d_tune_set_best(double seconds);
void conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                        const conv2d_shape *s);
void conv2d_backward_data_ref(float *dx, const float *dy, const float *w,
                              const conv2d_shape *s);
void conv2d_backward_weight_ref(float *dw, float *db, const float *dy, const float *x,
                                const conv2d_shape *s);

/* pool2d.c ------------------------------------------------------------------- */

/* Sizes of one 2-d pooling (window R x S, dilation dh x dw); the channels of
 * all images are N*C independent planes. P = (H + 2 ph - dh (R - 1) - 1) / sh
 * + 1 rounded down (floor mode) or up (ceil mode: then the last window
 * starts inside the image or its left padding), Q likewise; the caller
 * computes them. Average pooling uses dh = dw = 1. */
typedef struct {
    int64_t N, C, H, W, R, S, sh, sw, ph, pw, dh, dw, P, Q;
} pool2d_shape;

/* y (N,C,P,Q) = max over each window of x (N,C,H,W); argmax (N,C,P,Q) gets the
 * flat index h*W + w of the maximum within its plane (PyTorch's indices). */
void maxpool2d_forward(float *y, int32_t *argmax, const float *x,
                       const pool2d_shape *s, int nthreads);
/* maxpool2d_forward's y alone, for inference (values-only loops, the
 * same values bit for bit). */
void maxpool2d_forward_inference(float *y, const float *x, const pool2d_shape *s, int nthreads);
/* dx (N,C,H,W) = dy (N,C,P,Q) scattered (added) to argmax (N,C,P,Q). An index
 * outside [0, H*W) is skipped; returns the number of those (0 when valid).
 * Uses only N, C, H, W, P, Q of s: the window geometry is not needed. */
int64_t maxpool2d_backward(float *dx, const float *dy, const int32_t *argmax,
                           const pool2d_shape *s, int nthreads);
/* dx (N,C,H,W) = relu_backward(maxpool2d_backward(dy, argmax), y), where y
 * (N,C,H,W), a ReLU's output, was the pooling's input: the fused backward of
 * ReLU then MaxPool. Returns the number of skipped indices, as above. */
int64_t maxpool2d_relu_backward(float *dx, const float *dy, const int32_t *argmax,
                                const float *y, const pool2d_shape *s, int nthreads);
/* y (N,C,P,Q) = mean over each window of x (N,C,H,W); the divisor counts the
 * padding when count_include_pad is non-zero (PyTorch's default). */
void avgpool2d_forward(float *y, const float *x, const pool2d_shape *s,
                       int count_include_pad, int nthreads);
/* dx (N,C,H,W) = gradient of avgpool2d_forward from dy (N,C,P,Q). Returns
 * FASTCNN_OK or FASTCNN_ENOMEM (scratch of about W floats per thread). */
int avgpool2d_backward(float *dx, const float *dy, const pool2d_shape *s,
                       int count_include_pad, int nthreads);
void maxpool2d_forward_ref(float *y, int32_t *argmax, const float *x, const pool2d_shape *s);
int64_t maxpool2d_backward_ref(float *dx, const float *dy, const int32_t *argmax,
                               const pool2d_shape *s);
int64_t maxpool2d_relu_backward_ref(float *dx, const float *dy, const int32_t *argmax,
                                    const float *y, const pool2d_shape *s);
void avgpool2d_forward_ref(float *y, const float *x, const pool2d_shape *s,
                           int count_include_pad);
void avgpool2d_backward_ref(float *dx, const float *dy, const pool2d_shape *s,
                            int count_include_pad);
/* Adaptive pooling (PyTorch's AdaptiveMaxPool2d / AdaptiveAvgPool2d): output
 * (p, q) pools rows [floor(p H / P), ceil((p + 1) H / P)) and likewise
 * columns; only N, C, H, W, P, Q of s are used. The max's indices are those
 * of maxpool2d_forward (its backward is maxpool2d_backward). */
void adaptive_maxpool2d_forward(float *y, int32_t *argmax, const float *x, const pool2d_shape *s,
                                int nthreads);
void adaptive_avgpool2d_forward(float *y, const float *x, const pool2d_shape *s, int nthreads);
void adaptive_avgpool2d_backward(float *dx, const float *dy, const pool2d_shape *s, int nthreads);
void adaptive_maxpool2d_forward_ref(float *y, int32_t *argmax, const float *x,
                                    const pool2d_shape *s);
void adaptive_avgpool2d_forward_ref(float *y, const float *x, const pool2d_shape *s);
void adaptive_avgpool2d_backward_ref(float *dx, const float *dy, const pool2d_shape *s);

/* linear.c ------------------------------------------------------------------- */

/* y (N,O) = x (N,F) w^T (O,F) + b (O); b may be NULL. */
int linear_forward(float *y, const float *x, const float *w, const float *b,
                   int64_t N, int64_t F, int64_t O, int nthreads);
/* dx (N,F) = dy (N,O) w (O,F)   (skipped if dx is NULL);
 * dw (O,F) += dy^T x;  db (O) += sum of dy over N (skipped if db is NULL). */
int linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                    const float *w, int64_t N, int64_t F, int64_t O, int nthreads);
void linear_forward_ref(float *y, const float *x, const float *w, const float *b,
                        int64_t N, int64_t F, int64_t O);
void linear_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                         const float *w, int64_t N, int64_t F, int64_t O);

/* loss.c --------------------------------------------------------------------- */

/* Softmax cross-entropy over integer labels, mean over the batch.
 * probs (N,L) = softmax(logits (N,L)), kept for the backward pass;
 * returns mean over N of -log probs[i, labels[i]], computed stably
 * (log-sum-exp), labels (N) in [0, L). A NaN logit makes its row and the
 * loss NaN, as in PyTorch. The fast kernel's loss is the same bits for any
 * nthreads. */
double cross_entropy_forward(float *probs, const float *logits, const int64_t *labels,
                             int64_t N, int64_t L, int nthreads);
/* dlogits (N,L) = grad_loss * (probs - onehot(labels)) / N; dlogits may be
 * probs itself (in place). */
void cross_entropy_backward(float *dlogits, const float *probs, const int64_t *labels,
                            int64_t N, int64_t L, float grad_loss, int nthreads);
double cross_entropy_forward_ref(float *probs, const float *logits, const int64_t *labels,
                                 int64_t N, int64_t L);
void cross_entropy_backward_ref(float *dlogits, const float *probs, const int64_t *labels,
                                int64_t N, int64_t L, float grad_loss);

/* softmax.c ------------------------------------------------------------------ */

/* y (outer,D,inner) = softmax of x (outer,D,inner) along D, or log_softmax
 * when is_log is non-zero; stable (exp of x - max only). A NaN makes its
 * line NaN, as in PyTorch. */
void softmax_forward(float *y, const float *x, int64_t outer, int64_t D, int64_t inner,
                     int is_log, int nthreads);
/* dx (outer,D,inner) = gradient at softmax_forward's input from dy and its
 * output y (outer,D,inner). */
void softmax_backward(float *dx, const float *dy, const float *y, int64_t outer, int64_t D,
                      int64_t inner, int is_log, int nthreads);
void softmax_forward_ref(float *y, const float *x, int64_t outer, int64_t D, int64_t inner,
                         int is_log);
void softmax_backward_ref(float *dx, const float *dy, const float *y, int64_t outer, int64_t D,
                          int64_t inner, int is_log);

/* optim.c -------------------------------------------------------------------- */

/* Fused torch.optim updates, one pass over the elements, in place. The
 * hyper-parameters are double: torch derives its float32 coefficients from
 * Python floats (e.g. (float)(1 - beta2)), and so do these kernels. The
 * fast kernels use the per-ISA loops of optim_avx2.c / optim_avx512.c. */

/* One torch.optim.SGD step. param, buf, grad: (n). buf (the momentum buffer)
 * is read and written only when momentum != 0 (else it may be NULL); on the
 * first step (first_step != 0) it is set to the gradient, as torch does.
 * maximize != 0 ascends (uses -grad). grad is not modified. */
void sgd_step(float *param, float *buf, const float *grad, int64_t n, double lr,
              double momentum, double dampening, double weight_decay, int nesterov,
              int maximize, int first_step, int nthreads);
/* One torch.optim.Adam step (decoupled == 0: L2 weight decay) or AdamW step
 * (decoupled != 0). param, exp_avg, exp_avg_sq, max_exp_avg_sq, grad: (n);
 * max_exp_avg_sq is AMSGrad's state, NULL for plain Adam. step counts from 1.
 * grad is not modified. */
void adam_step(float *param, float *exp_avg, float *exp_avg_sq, float *max_exp_avg_sq,
               const float *grad, int64_t n, double lr, double beta1, double beta2,
               double eps, double weight_decay, int decoupled, int maximize, int64_t step,
               int nthreads);
/* grad (n) = 0 on the worker threads (an optimizer's zero_grad: tens of MB
 * for a ResNet, one core's memset too slow on many). */
void zero_grad(float *grad, int64_t n, int nthreads);
void sgd_step_ref(float *param, float *buf, const float *grad, int64_t n, double lr,
                  double momentum, double dampening, double weight_decay, int nesterov,
                  int maximize, int first_step);
void adam_step_ref(float *param, float *exp_avg, float *exp_avg_sq, float *max_exp_avg_sq,
                   const float *grad, int64_t n, double lr, double beta1, double beta2,
                   double eps, double weight_decay, int decoupled, int maximize,
                   int64_t step);

/* peak.c --------------------------------------------------------------------- */

/* Measured FP32 throughput in GFLOP/s (an FMA counts 2 flops) of nthreads
 * threads each running a register-only FMA loop of the ISA in use
 * (fastcnn_isa()): best of 10 runs of about 10 ms. *threads_run gets the number
 * of threads that ran (1 without OpenMP). */
double fastcnn_fma_peak_gflops(int nthreads, int *threads_run);
/* The loops: iters rounds of independent multiply-add chains, returning their
 * sum so the work cannot be optimised away. */
float fastcnn_peak_loop_avx512(int64_t iters);   /* 16 chains x 16 lanes, FMA */
float fastcnn_peak_loop_avx2(int64_t iters);     /* 12 chains x 8 lanes, FMA */
float fastcnn_peak_loop_generic(int64_t iters);  /* 48 lanes, multiply + add */

#endif /* FASTCNN_H */
