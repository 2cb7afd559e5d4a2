/* loss_avx512.c - expf_vec.h's softmax exponentials compiled for AVX512. */
#include "expf_vec.h"

float softmax_exps_avx512(float *p, const float *z, float m, int64_t L)
{
    return softmax_exps(p, z, m, L);
}
