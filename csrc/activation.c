/* activation.c - element-wise ReLU and sigmoid, forward and backward.
 * Every buffer is (n). Backward kernels take the forward output y. */
#include <math.h>
#include <stddef.h>

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

#define RELU_SPAN 16384      /* elements of one work item */

typedef struct {
    float *out;             /* y or dx */
    const float *in, *dy;   /* x, or y and dy */
} relu_call;

/* y[i] = max(x[i], 0) for i in [lo, hi). */
static void relu_span(void *ctx, int64_t lo, int64_t hi)
{
    const relu_call *r = ctx;
    float *y = r->out;
    const float *x = r->in;
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

void relu_forward(float *y, const float *x, int64_t n, int nthreads)
{
    relu_call r = {y, x, NULL};
    /* each span writes its own elements */
    fastcnn_parallel_spans(n, RELU_SPAN, relu_span, &r, fastcnn_threads_for(n, nthreads));
}

/* dx[i] = dy[i] where y[i] > 0, else 0, for i in [lo, hi); dy is loaded
 * unconditionally (a select, not a branch): the loop vectorizes. */
static void relu_grad_span(void *ctx, int64_t lo, int64_t hi)
{
    const relu_call *r = ctx;
    float *dx = r->out;
    const float *y = r->in, *dy = r->dy;
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        float d = dy[i];
        dx[i] = y[i] > 0.0f ? d : 0.0f;
    }
}

void relu_backward(float *dx, const float *dy, const float *y, int64_t n, int nthreads)
{
    relu_call r = {dx, y, dy};
    /* each span writes its own elements */
    fastcnn_parallel_spans(n, RELU_SPAN, relu_grad_span, &r, fastcnn_threads_for(n, nthreads));
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
