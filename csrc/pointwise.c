/* pointwise.c - element-wise activations beyond ReLU and sigmoid: tanh, leaky
 * ReLU, hardtanh (ReLU6), hardsigmoid, hardswish, SiLU, GELU (exact and tanh).
 * x, y, dx, dy: (n). Backward takes the forward input x. a, b: the kind's
 * parameters (leaky ReLU's slope; hardtanh's min and max), torch's formulas. */
#include <math.h>

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

void pointwise_forward(int kind, float *y, const float *x, int64_t n, float a, float b,
                       int nthreads)
{
    int nt = fastcnn_threads_for(n * 8, nthreads);     /* ~8x a ReLU's work per element */
    if (kind == POINTWISE_HARDTANH) {
        hardtanh()->forward(y, x, n, a, b, fastcnn_threads_for(n, nthreads));
        return;
    }
    /* each i written once */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)forward_one(kind, x[i], a, b);
}

void pointwise_backward(int kind, float *dx, const float *dy, const float *x, int64_t n,
                        float a, float b, int nthreads)
{
    int nt = fastcnn_threads_for(n * 8, nthreads);
    if (kind == POINTWISE_HARDTANH) {
        hardtanh()->backward(dx, dy, x, n, a, b, fastcnn_threads_for(n, nthreads));
        return;
    }
    /* each i written once */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t i = 0; i < n; i++)
        dx[i] = (float)(dy[i] * slope_one(kind, x[i], a, b));
}
