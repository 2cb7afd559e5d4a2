/* softmax.c - softmax and log-softmax along one axis of any tensor, forward
 * and backward, with PyTorch's semantics (csrc/softmax_kernel.h states the
 * arithmetic and the NaN/inf rules).
 *
 * The tensor is seen as (outer, D, inner): D the axis, outer the product of
 * the dimensions before it, inner of those after. The fast kernels split it
 * into units, one outer index and a block of up to SOFTMAX_BLOCK inner
 * positions each (the whole row when inner == 1), and run the units in
 * parallel through the slab loops of the running instruction set. */
#include <math.h>

#include "dispatch.h"
#include "fastcnn.h"
#include "softmax_kernel.h"

/* ---- reference kernels (double) ------------------------------------------ */

/* y (outer, D, inner) = softmax (log_softmax with is_log) of x along D. */
void softmax_forward_ref(float *y, const float *x, int64_t outer, int64_t D, int64_t inner,
                         int is_log)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            const float *xl = x + o * D * inner + j;
            float *yl = y + o * D * inner + j;
            double m = xl[0], s = 0.0;
            for (int64_t d = 1; d < D; d++)
                m = xl[d * inner] > m ? xl[d * inner] : m;
            for (int64_t d = 0; d < D; d++)
                s += exp(xl[d * inner] - m);
            for (int64_t d = 0; d < D; d++) {
                double z = xl[d * inner] - m;
                yl[d * inner] = (float)(is_log ? z - log(s) : exp(z) / s);
            }
        }
}

/* dx (outer, D, inner) from dy and the forward's output y (outer, D, inner). */
void softmax_backward_ref(float *dx, const float *dy, const float *y, int64_t outer, int64_t D,
                          int64_t inner, int is_log)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            int64_t base = o * D * inner + j;
            double t = 0.0;
            for (int64_t d = 0; d < D; d++) {
                int64_t i = base + d * inner;
                t += is_log ? (double)dy[i] : (double)dy[i] * y[i];
            }
            for (int64_t d = 0; d < D; d++) {
                int64_t i = base + d * inner;
                dx[i] = (float)(is_log ? dy[i] - exp((double)y[i]) * t : y[i] * (dy[i] - t));
            }
        }
}

/* ---- fast kernels --------------------------------------------------------- */

/* The softmax family's loops of one instruction set (softmax_kernel.h). */
typedef struct {
    void (*slab)(float *y, const float *x, int64_t D, int64_t inner, int64_t n, int is_log);
    void (*slab_backward)(float *dx, const float *dy, const float *y, int64_t D, int64_t inner,
                          int64_t n, int is_log);
} softmax_kernels;

static void softmax_slab_generic(float *y, const float *x, int64_t D, int64_t inner, int64_t n,
                                 int is_log)
{
    softmax_slab(y, x, D, inner, n, is_log);
}

static void softmax_slab_backward_generic(float *dx, const float *dy, const float *y, int64_t D,
                                          int64_t inner, int64_t n, int is_log)
{
    softmax_slab_backward(dx, dy, y, D, inner, n, is_log);
}

static const softmax_kernels softmax_kernels_generic = {softmax_slab_generic,
                                                        softmax_slab_backward_generic};
#ifdef FASTCNN_X86_KERNELS
static const softmax_kernels softmax_kernels_avx2 = {softmax_slab_avx2,
                                                     softmax_slab_backward_avx2};
static const softmax_kernels softmax_kernels_avx512 = {softmax_slab_avx512,
                                                       softmax_slab_backward_avx512};
#endif

static const softmax_kernels *softmax_kernels_for(int isa)
{
    return FASTCNN_KERNELS_FOR(isa, softmax_kernels);
}

/* Blocks of inner positions per outer index: 1 when inner == 1 (rows). */
static inline int64_t blocks_of(int64_t inner)
{
    return inner == 1 ? 1 : (inner + SOFTMAX_BLOCK - 1) / SOFTMAX_BLOCK;
}

/* Inner positions in block b (of blocks_of(inner)). */
static inline int64_t block_len(int64_t inner, int64_t b)
{
    int64_t left = inner - b * SOFTMAX_BLOCK;
    return left < SOFTMAX_BLOCK ? left : SOFTMAX_BLOCK;
}

/* One softmax pass, for fastcnn_parallel_for: units (outer index o, inner
 * block b), u = o nb + b. dy is NULL in the forward. */
typedef struct {
    const softmax_kernels *k;
    float *out;                 /* y or dx */
    const float *x, *dy;        /* forward: x; backward: y and dy */
    int64_t D, inner, nb;
    int is_log;
} softmax_call;

/* Unit u: only its own elements of y or dx. */
static void softmax_unit(void *ctx, int64_t u, int slot)
{
    const softmax_call *c = ctx;
    int64_t o = u / c->nb, off = o * c->D * c->inner + (u % c->nb) * SOFTMAX_BLOCK;
    int64_t len = block_len(c->inner, u % c->nb);
    (void)slot;
    if (c->dy)
        c->k->slab_backward(c->out + off, c->dy + off, c->x + off, c->D, c->inner, len,
                            c->is_log);
    else
        c->k->slab(c->out + off, c->x + off, c->D, c->inner, len, c->is_log);
}

/* y (outer, D, inner) = softmax (log_softmax with is_log) of x along D, on
 * fastcnn's pool (pool.c). */
void softmax_forward(float *y, const float *x, int64_t outer, int64_t D, int64_t inner,
                     int is_log, int nthreads)
{
    softmax_call c = {softmax_kernels_for(fastcnn_isa()), y, x, NULL, D, inner,
                      blocks_of(inner), is_log};
    fastcnn_parallel_for(outer * c.nb, softmax_unit, &c,
                         fastcnn_threads_for(outer * D * inner * 8, nthreads));
}

/* dx (outer, D, inner) from dy and the forward's output y (outer, D, inner). */
void softmax_backward(float *dx, const float *dy, const float *y, int64_t outer, int64_t D,
                      int64_t inner, int is_log, int nthreads)
{
    softmax_call c = {softmax_kernels_for(fastcnn_isa()), dx, y, dy, D, inner,
                      blocks_of(inner), is_log};
    fastcnn_parallel_for(outer * c.nb, softmax_unit, &c,
                         fastcnn_threads_for(outer * D * inner * 4, nthreads));
}
