/* pointwise.c - element-wise activations beyond ReLU and sigmoid: tanh, leaky
 * ReLU, hardtanh (ReLU6), hardsigmoid, hardswish, SiLU, GELU (exact and tanh).
 * x, y, dx, dy: (n). Backward takes the forward input x. a, b: the kind's
 * parameters (leaky ReLU's slope; hardtanh's min and max), torch's formulas. */
#include <math.h>
#include <stddef.h>

#include "dispatch.h"
#include "pointwise_kernel.h"

#define SQRT1_2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794
#define GELU_K 0.79788456080286535588   /* sqrt(2 / pi) */
#define GELU_C 0.044715

static double forward_one(int kind, double x, double a, double b)
{
    switch (kind) {
    case POINTWISE_TANH: return tanh(x);
    case POINTWISE_LEAKY_RELU: return x > 0 ? x : a * x;
    case POINTWISE_HARDTANH: return x < a ? a : (x > b ? b : x);
    case POINTWISE_HARDSIGMOID: return x <= -3 ? 0 : (x >= 3 ? 1 : x / 6 + 0.5);
    case POINTWISE_HARDSWISH: return x <= -3 ? 0 : (x >= 3 ? x : x * (x + 3) / 6);
    case POINTWISE_SILU: return x / (1 + exp(-x));
    case POINTWISE_GELU: return 0.5 * x * (1 + erf(x * SQRT1_2));
    case POINTWISE_GELU_TANH: return 0.5 * x * (1 + tanh(GELU_K * (x + GELU_C * x * x * x)));
    default: return x;
    }
}

/* d y / d x at x */
static double slope_one(int kind, double x, double a, double b)
{
    double s, t;
    switch (kind) {
    case POINTWISE_TANH: t = tanh(x); return 1 - t * t;
    case POINTWISE_LEAKY_RELU: return x > 0 ? 1 : a;
    case POINTWISE_HARDTANH: return x <= a || x >= b ? 0 : 1;
    case POINTWISE_HARDSIGMOID: return x > -3 && x < 3 ? 1.0 / 6 : 0;
    case POINTWISE_HARDSWISH: return x <= -3 ? 0 : (x < 3 ? x / 3 + 0.5 : 1);
    case POINTWISE_SILU: s = 1 / (1 + exp(-x)); return s * (1 + x * (1 - s));
    case POINTWISE_GELU:
        return 0.5 * (1 + erf(x * SQRT1_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x);
    case POINTWISE_GELU_TANH:
        t = tanh(GELU_K * (x + GELU_C * x * x * x));
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_K * (1 + 3 * GELU_C * x * x);
    default: return 1;
    }
}

/* Hardtanh (ReLU6) in float compares and selects, which vectorise: the same
 * values as forward_one and slope_one (a NaN passes through; the slope is 0
 * at and beyond the kinks, as torch's). It dominates MobileNetV2's
 * element-wise time, so it skips the per-element switch and runs at the
 * widest vectors the CPU has (pointwise_kernel.h). */
POINTWISE_HARDTANH_DEFINE(generic)

typedef struct {
    hardtanh_forward_fn forward;
    hardtanh_backward_fn backward;
} hardtanh_kernels;

static const hardtanh_kernels hardtanh_kernels_generic = {
    pointwise_hardtanh_forward_generic, pointwise_hardtanh_backward_generic,
};
#ifdef FASTCNN_X86_KERNELS
static const hardtanh_kernels hardtanh_kernels_avx2 = {
    pointwise_hardtanh_forward_avx2, pointwise_hardtanh_backward_avx2,
};
static const hardtanh_kernels hardtanh_kernels_avx512 = {
    pointwise_hardtanh_forward_avx512, pointwise_hardtanh_backward_avx512,
};
#endif

static const hardtanh_kernels *hardtanh(void)
{
    return FASTCNN_KERNELS_FOR(fastcnn_isa(), hardtanh_kernels);
}

#define POINTWISE_SPAN 16384    /* elements of one work item */

/* One forward or backward call, for fastcnn_parallel_spans. */
typedef struct {
    int kind, backward;
    float *out;                 /* y or dx */
    const float *x, *dy;
    float a, b;
} pointwise_call;

/* Elements [lo, hi) of the call. */
static void pointwise_span(void *ctx, int64_t lo, int64_t hi)
{
    const pointwise_call *p = ctx;
    float *out = p->out;
    const float *x = p->x, *dy = p->dy;
    if (p->kind == POINTWISE_HARDTANH && p->backward)
        hardtanh()->backward(out + lo, dy + lo, x + lo, hi - lo, p->a, p->b);
    else if (p->kind == POINTWISE_HARDTANH)
        hardtanh()->forward(out + lo, x + lo, hi - lo, p->a, p->b);
    else if (p->backward)
        for (int64_t i = lo; i < hi; i++)
            out[i] = (float)(dy[i] * slope_one(p->kind, x[i], p->a, p->b));
    else
        for (int64_t i = lo; i < hi; i++)
            out[i] = (float)forward_one(p->kind, x[i], p->a, p->b);
}

static void pointwise_run(pointwise_call *p, int64_t n, int nthreads)
{
    /* hardtanh: a ReLU's work per element; the others ~8x */
    int nt = fastcnn_threads_for(p->kind == POINTWISE_HARDTANH ? n : n * 8, nthreads);
    /* each span writes its own elements */
    fastcnn_parallel_spans(n, POINTWISE_SPAN, pointwise_span, p, nt);
}

void pointwise_forward(int kind, float *y, const float *x, int64_t n, float a, float b,
                       int nthreads)
{
    pointwise_call p = {kind, 0, y, x, NULL, a, b};
    pointwise_run(&p, n, nthreads);
}

void pointwise_backward(int kind, float *dx, const float *dy, const float *x, int64_t n,
                        float a, float b, int nthreads)
{
    pointwise_call p = {kind, 1, dx, x, dy, a, b};
    pointwise_run(&p, n, nthreads);
}
