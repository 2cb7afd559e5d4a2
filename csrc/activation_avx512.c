/* activation_avx512.c - expf_vec.h's sigmoid loop compiled for AVX512. */
#include "expf_vec.h"

void sigmoid_span_avx512(float *y, const float *x, int64_t n)
{
    sigmoid_span(y, x, n);
}
