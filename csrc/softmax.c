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

/* y (outer, D, inner) = softmax (log_softmax with is_log) of x along D. */
void softmax_forward(float *y, const float *x, int64_t outer, int64_t D, int64_t inner,
                     int is_log, int nthreads)
{
    const softmax_kernels *k = softmax_kernels_for(fastcnn_isa());
    int64_t nb = blocks_of(inner);
    int nt = fastcnn_threads_for(outer * D * inner * 8, nthreads);
    /* each unit (outer index o, inner block b) writes only its own elements of y */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t u = 0; u < outer * nb; u++) {
        int64_t o = u / nb, off = o * D * inner + (u % nb) * SOFTMAX_BLOCK;
        k->slab(y + off, x + off, D, inner, block_len(inner, u % nb), is_log);
    }
}

/* dx (outer, D, inner) from dy and the forward's output y (outer, D, inner). */
void softmax_backward(float *dx, const float *dy, const float *y, int64_t outer, int64_t D,
                      int64_t inner, int is_log, int nthreads)
{
    const softmax_kernels *k = softmax_kernels_for(fastcnn_isa());
    int64_t nb = blocks_of(inner);
    int nt = fastcnn_threads_for(outer * D * inner * 4, nthreads);
    /* each unit (outer index o, inner block b) writes only its own elements of dx */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t u = 0; u < outer * nb; u++) {
        int64_t o = u / nb, off = o * D * inner + (u % nb) * SOFTMAX_BLOCK;
        k->slab_backward(dx + off, dy + off, y + off, D, inner, block_len(inner, u % nb),
                         is_log);
    }
}
