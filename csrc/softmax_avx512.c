/* softmax_avx512.c - csrc/softmax_kernel.h's slab loops compiled for AVX512. */
#include "softmax_kernel.h"

void softmax_slab_avx512(float *y, const float *x, int64_t D, int64_t inner, int64_t n, int is_log)
{
    softmax_slab(y, x, D, inner, n, is_log);
}

void softmax_slab_backward_avx512(float *dx, const float *dy, const float *y, int64_t D,
                                int64_t inner, int64_t n, int is_log)
{
    softmax_slab_backward(dx, dy, y, D, inner, n, is_log);
}
