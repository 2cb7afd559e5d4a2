/* pointwise_kernel.h - hardtanh's (ReLU6's) loops, compiled once per
 * instruction set (pointwise.c: SSE2, pointwise_avx2.c, pointwise_avx512.c)
 * so that a pass over memory runs at the widest vectors the CPU has; each
 * file defines the functions of its `isa` with POINTWISE_HARDTANH_DEFINE.
 * x, y, dx, dy: (n); a <= b the bounds. The selects compile to max and min
 * in the order that keeps a NaN x as NaN, as the scalar formulas do. */
#ifndef FASTCNN_POINTWISE_KERNEL_H
#define FASTCNN_POINTWISE_KERNEL_H

#include <stdint.h>

typedef void (*hardtanh_forward_fn)(float *, const float *, int64_t, float, float);
typedef void (*hardtanh_backward_fn)(float *, const float *, const float *, int64_t, float,
                                     float);

#define POINTWISE_HARDTANH_DECLARE(isa)                                                    \
    void pointwise_hardtanh_forward_##isa(float *y, const float *x, int64_t n, float a,     \
                                          float b);                                        \
    void pointwise_hardtanh_backward_##isa(float *dx, const float *dy, const float *x,      \
                                           int64_t n, float a, float b);
POINTWISE_HARDTANH_DECLARE(generic)
POINTWISE_HARDTANH_DECLARE(avx2)
POINTWISE_HARDTANH_DECLARE(avx512)

/* y = min(max(x, a), b); dx = dy where a < x < b, else 0 (torch's slope at
 * the kinks). y may be x (in place). One thread: pointwise.c hands out
 * chunks. */
#define POINTWISE_HARDTANH_DEFINE(isa)                                                     \
    void pointwise_hardtanh_forward_##isa(float *y, const float *x, int64_t n, float a,     \
                                          float b)                                         \
    {                                                                                      \
        _Pragma("omp simd")                                                                \
        for (int64_t i = 0; i < n; i++) {                                                  \
            float v = x[i] < a ? a : x[i];      /* a max and a min: NaN stays NaN */       \
            y[i] = v > b ? b : v;                                                          \
        }                                                                                  \
    }                                                                                      \
    __attribute__((optimize("no-trapping-math")))   /* lets the compares vectorise */      \
    void pointwise_hardtanh_backward_##isa(float *dx, const float *dy, const float *x,      \
                                           int64_t n, float a, float b)                    \
    {                                                                                      \
        _Pragma("omp simd")                                                                \
        for (int64_t i = 0; i < n; i++) {                                                  \
            float g = dy[i], v = x[i];          /* both loaded: two selects vectorise */   \
            float below = v <= a ? 0.0f : g;                                               \
            dx[i] = v >= b ? 0.0f : below;                                                 \
        }                                                                                  \
    }

#endif /* FASTCNN_POINTWISE_KERNEL_H */
