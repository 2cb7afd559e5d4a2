/* peak_avx2.c - the AVX2+FMA loop of the peak probe (see peak.c). */
#include <immintrin.h>

#include "fastcnn.h"

/* 12 independent chains of 8-lane FMAs (latency x ports of current cores);
 * 12 of the 16 ymm registers, so none spills. */
float fastcnn_peak_loop_avx2(int64_t iters)
{
    const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-6f);
    __m256 v[12];
    for (int j = 0; j < 12; j++)
        v[j] = _mm256_set1_ps((float)j);
    for (int64_t i = 0; i < iters; i++)
#pragma GCC unroll 12   /* keeps every chain in a register, at any -O */
        for (int j = 0; j < 12; j++)
            v[j] = _mm256_fmadd_ps(v[j], m, a);
    __m256 s = v[0];
    for (int j = 1; j < 12; j++)
        s = _mm256_add_ps(s, v[j]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
