/* pointwise_kernel.h - hardtanh's (ReLU6's) loops, compiled once per
 * instruction set (pointwise.c: SSE2, pointwise_avx2.c, pointwise_avx512.c)
 * so that a pass over memory runs at the widest vectors the CPU has; each
 * file defines the functions of its `isa` with POINTWISE_HARDTANH_DEFINE.
 * x, y, dx, dy: (n); a <= b the bounds. The selects compile to max and min
 * in the order that keeps a NaN x as NaN, as the scalar formulas do. */
#ifndef FASTCNN_POINTWISE_KERNEL_H
#define FASTCNN_POINTWISE_KERNEL_H

#include <stdint.h>

typedef void (*hardtanh_forward_fn)(float *, const float *, int64_t, float, float, int);
typedef void (*hardtanh_backward_fn)(float *, const float *, const float *, int64_t, float,
                                     float, int);

#define POINTWISE_HARDTANH_DECLARE(isa)                                                    \
    void pointwise_hardtanh_forward_##isa(float *y, const float *x, int64_t n, float a,     \
                                          float b, int nt);                                \
    void pointwise_hardtanh_backward_##isa(float *dx, const float *dy, const float *x,      \
                                           int64_t n, float a, float b, int nt);
POINTWISE_HARDTANH_DECLARE(generic)
POINTWISE_HARDTANH_DECLARE(avx2)
POINTWISE_HARDTANH_DECLARE(avx512)

/* y = min(max(x, a), b); dx = dy where a < x < b, else 0 (torch's slope at
 * the kinks). y may be x (in place). if(parallel:) leaves the simd loop on
 * when nt == 1 (a plain if clause would apply to simd too). */
#define POINTWISE_HARDTANH_DEFINE(isa)                                                     \
    void pointwise_hardtanh_forward_##isa(float *y, const float *x, int64_t n, float a,     \
                                          float b, int nt)                                 \
    {                                                                                      \
        /* each i written once */                                                          \
        _Pragma("omp parallel for simd num_threads(nt) if (parallel: nt > 1) schedule(static)") \
        for (int64_t i = 0; i < n; i++) {                                                  \
            float v = x[i] < a ? a : x[i];      /* a max and a min: NaN stays NaN */       \
            y[i] = v > b ? b : v;                                                          \
        }                                                                                  \
    }                                                                                      \
    __attribute__((optimize("no-trapping-math")))   /* lets the compares vectorise */      \
    void pointwise_hardtanh_backward_##isa(float *dx, const float *dy, const float *x,      \
                                           int64_t n, float a, float b, int nt)            \
    {                                                                                      \
        /* each i written once */                                                          \
        _Pragma("omp parallel for simd num_threads(nt) if (parallel: nt > 1) schedule(static)") \
        for (int64_t i = 0; i < n; i++) {                                                  \
            float g = dy[i], v = x[i];          /* both loaded: two selects vectorise */   \
            float below = v <= a ? 0.0f : g;                                               \
            dx[i] = v >= b ? 0.0f : below;                                                 \
        }                                                                                  \
    }

#endif /* FASTCNN_POINTWISE_KERNEL_H */
