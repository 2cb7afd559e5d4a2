/* linear_avx512.c - csrc/linear_kernel.h's few-rows loop compiled for AVX512. */
#include "linear_kernel.h"

void linear_rows_avx512(float *y, const float *x, const float *w, const float *b, int64_t N,
                        int64_t F, int64_t O, int64_t o0, int64_t o1)
{
    linear_rows(y, x, w, b, N, F, O, o0, o1);
}
