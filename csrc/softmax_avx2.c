/* softmax_avx2.c - csrc/softmax_kernel.h's slab loops compiled for AVX2. */
#include "softmax_kernel.h"

void softmax_slab_avx2(float *y, const float *x, int64_t D, int64_t inner, int64_t n, int is_log)
{
    softmax_slab(y, x, D, inner, n, is_log);
}

void softmax_slab_backward_avx2(float *dx, const float *dy, const float *y, int64_t D,
                                int64_t inner, int64_t n, int is_log)
{
    softmax_slab_backward(dx, dy, y, D, inner, n, is_log);
}
