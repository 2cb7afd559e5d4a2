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

/* One sigmoid pass, for fastcnn_parallel_for: blocks of SIGMOID_BLOCK
 * elements (backward: dy given). */
typedef struct {
    const activation_kernels *kr;
    float *out;                 /* y or dx */
    const float *in, *dy;       /* forward: x; backward: y and dy */
    int64_t n;
} sigmoid_call;

static void sigmoid_block(void *ctx, int64_t b, int slot)
{
    const sigmoid_call *c = ctx;
    int64_t lo = b * SIGMOID_BLOCK, hi = c->n - lo < SIGMOID_BLOCK ? c->n : lo + SIGMOID_BLOCK;
    (void)slot;
    if (!c->dy) {
        c->kr->sigmoid_span(c->out + lo, c->in + lo, hi - lo);
        return;
    }
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++)
        c->out[i] = c->dy[i] * c->in[i] * (1.0f - c->in[i]);
}

void sigmoid_forward(float *y, const float *x, int64_t n, int nthreads)
{
    sigmoid_call c = {activation_kernels_for(fastcnn_isa()), y, x, NULL, n};
    /* each block of SIGMOID_BLOCK elements written by one work item */
    fastcnn_parallel_for((n + SIGMOID_BLOCK - 1) / SIGMOID_BLOCK, sigmoid_block, &c,
                         fastcnn_threads_for(n * 16, nthreads));
}

void sigmoid_backward(float *dx, const float *dy, const float *y, int64_t n, int nthreads)
{
    sigmoid_call c = {NULL, dx, y, dy, n};
    /* each block of SIGMOID_BLOCK elements written by one work item */
    fastcnn_parallel_for((n + SIGMOID_BLOCK - 1) / SIGMOID_BLOCK, sigmoid_block, &c,
                         fastcnn_threads_for(n, nthreads));
}
