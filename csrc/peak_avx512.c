/* peak_avx512.c - the AVX-512 FMA loop of the peak probe (see peak.c). */
#include <immintrin.h>

#include "fastcnn.h"

/* 16 independent chains of 16-lane FMAs: enough to cover latency x ports
 * (4 cycles x 2 pipes on Zen 4/5 and Intel server cores). */
float fastcnn_peak_loop_avx512(int64_t iters)
{
    const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-6f);
    __m512 v[16];
    for (int j = 0; j < 16; j++)
        v[j] = _mm512_set1_ps((float)j);
    for (int64_t i = 0; i < iters; i++)
#pragma GCC unroll 16   /* keeps every chain in a register, at any -O */
        for (int j = 0; j < 16; j++)
            v[j] = _mm512_fmadd_ps(v[j], m, a);
    __m512 s = v[0];
    for (int j = 1; j < 16; j++)
        s = _mm512_add_ps(s, v[j]);
    return _mm512_reduce_add_ps(s);
}
