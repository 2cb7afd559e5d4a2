/* activation_avx2.c - expf_vec.h's sigmoid loop compiled for AVX2. */
#include "expf_vec.h"

void sigmoid_span_avx2(float *y, const float *x, int64_t n)
{
    sigmoid_span(y, x, n);
}
