/* pool2d_avx2.c - csrc/pool2d_kernel.h's 2x2 forward tile loops compiled for AVX2. */
#include "pool2d_kernel.h"

void max_tiles_2x2_avx2(float *y, int32_t *am, const float *x, int64_t W, int64_t P, int64_t Q)
{
    max_tiles_2x2(y, am, x, W, P, Q);
}

void max_values_2x2_avx2(float *y, const float *x, int64_t W, int64_t P, int64_t Q)
{
    max_values_2x2(y, x, W, P, Q);
}
