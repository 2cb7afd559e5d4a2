/* activation.c - element-wise ReLU and sigmoid, forward and backward.
 * Every buffer is (n). Backward kernels take the forward output y. */
#include <math.h>

#include "dispatch.h"
#include "expf_vec.h"
#include "fastcnn.h"

void relu_forward_ref(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i];  /* NaN passes through, as in torch */
}

void relu_backward_ref(float *dx, const float *dy, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void sigmoid_forward_ref(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)(1.0 / (1.0 + exp(-(double)x[i])));
}

void sigmoid_backward_ref(float *dx, const float *dy, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

#define RELU_CHUNK 16384     /* elements of one work item of relu_forward */

typedef struct {
    float *y;
    const float *x;
    int64_t n;
} relu_call;

/* y[i] = max(x[i], 0) for i in [lo, hi). */
static void relu_span(float *y, const float *x, int64_t lo, int64_t hi)
{
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

/* Work item c: elements [c RELU_CHUNK, (c + 1) RELU_CHUNK) of y. */
static void relu_chunk(void *ctx, int64_t c, int slot)
{
    const relu_call *r = ctx;
    int64_t lo = c * RELU_CHUNK;
    (void)slot;
    relu_span(r->y, r->x, lo, lo + RELU_CHUNK < r->n ? lo + RELU_CHUNK : r->n);
}

void relu_forward(float *y, const float *x, int64_t n, int nthreads)
{
    relu_call r = {y, x, n};
    int nt = fastcnn_threads_for(n, nthreads);
    if (nt == 1) {  /* no work items for small work */
        relu_span(y, x, 0, n);
        return;
    }
    /* each work item writes its own elements */
    fastcnn_parallel_for((n + RELU_CHUNK - 1) / RELU_CHUNK, relu_chunk, &r, nt);
}

typedef struct {
    float *dx;
    const float *dy, *y;
    int64_t n;
} relu_grad_call;

/* dx[i] = dy[i] where y[i] > 0, else 0, for i in [lo, hi); dy is loaded
 * unconditionally (a select, not a branch): the loop vectorizes. */
static void relu_grad_span(float *dx, const float *dy, const float *y, int64_t lo, int64_t hi)
{
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        float d = dy[i];
        dx[i] = y[i] > 0.0f ? d : 0.0f;
    }
}

/* Work item c: elements [c RELU_CHUNK, (c + 1) RELU_CHUNK) of dx. */
static void relu_grad_chunk(void *ctx, int64_t c, int slot)
{
    const relu_grad_call *r = ctx;
    int64_t lo = c * RELU_CHUNK;
    (void)slot;
    relu_grad_span(r->dx, r->dy, r->y, lo, lo + RELU_CHUNK < r->n ? lo + RELU_CHUNK : r->n);
}

void relu_backward(float *dx, const float *dy, const float *y, int64_t n, int nthreads)
{
    relu_grad_call r = {dx, dy, y, n};
    int nt = fastcnn_threads_for(n, nthreads);
    if (nt == 1) {  /* no work items for small work */
        relu_grad_span(dx, dy, y, 0, n);
        return;
    }
    /* each work item writes its own elements */
    fastcnn_parallel_for((n + RELU_CHUNK - 1) / RELU_CHUNK, relu_grad_chunk, &r, nt);
}

/* The activation family's loops of one instruction set (expf_vec.h). */
typedef struct {
    void (*sigmoid_span)(float *y, const float *x, int64_t n);
} activation_kernels;

static void sigmoid_span_generic(float *y, const float *x, int64_t n)
{
    sigmoid_span(y, x, n);
}

static const activation_kernels activation_kernels_generic = {sigmoid_span_generic};
#ifdef FASTCNN_X86_KERNELS
static const activation_kernels activation_kernels_avx2 = {sigmoid_span_avx2};
static const activation_kernels activation_kernels_avx512 = {sigmoid_span_avx512};
#endif

static const activation_kernels *activation_kernels_for(int isa)
{
    return FASTCNN_KERNELS_FOR(isa, activation_kernels);
}

#define SIGMOID_BLOCK 4096

void sigmoid_forward(float *y, const float *x, int64_t n, int nthreads)
{
    const activation_kernels *kr = activation_kernels_for(fastcnn_isa());
    int nt = fastcnn_threads_for(n * 16, nthreads);
    if (nt == 1) {  /* no OpenMP call at all for small work */
        kr->sigmoid_span(y, x, n);
        return;
    }
    int64_t nb = (n + SIGMOID_BLOCK - 1) / SIGMOID_BLOCK;
    /* each block of SIGMOID_BLOCK elements written by one iteration */
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        int64_t lo = b * SIGMOID_BLOCK, len = n - lo < SIGMOID_BLOCK ? n - lo : SIGMOID_BLOCK;
        kr->sigmoid_span(y + lo, x + lo, len);
    }
}

void sigmoid_backward(float *dx, const float *dy, const float *y, int64_t n, int nthreads)
{
    int nt = fastcnn_threads_for(n, nthreads);
    if (nt == 1) {  /* no OpenMP call at all for small work */
        #pragma omp simd
        for (int64_t i = 0; i < n; i++)
            dx[i] = dy[i] * y[i] * (1.0f - y[i]);
        return;
    }
    /* each i written once */
    #pragma omp parallel for simd num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++)
        dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}
