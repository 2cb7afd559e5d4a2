/* store_part_avx2.h - the first n of the 8 floats of an AVX2 vector stored
 * without a masked store: on AMD Zen 3 a 256-bit vmaskmovps store takes
 * about 20 cycles (6.3 ns against 1.0 for a full store, measured in a loop
 * on the 2-core EPYC VM), more than the 9 taps of a depthwise row it ends.
 * Shared by the AVX2 kernels that end rows in part vectors; defined only
 * where AVX2 is enabled. */
#ifndef FASTCNN_STORE_PART_AVX2_H
#define FASTCNN_STORE_PART_AVX2_H
#include <immintrin.h>

#ifdef __AVX2__
/* dst[0 .. n) = lanes 0 .. n of v (none for n <= 0, all 8 for n >= 8);
 * nothing past dst + n is written: 4, 2 and 1 floats by the bits of n. */
static inline __attribute__((always_inline)) void store_part8(float *dst, __m256 v, int n)
{
    if (n <= 0)
        return;
    if (n >= 8) {
        _mm256_storeu_ps(dst, v);
        return;
    }
    __m128 part = _mm256_castps256_ps128(v);
    if (n & 4) {
        _mm_storeu_ps(dst, part);
        part = _mm256_extractf128_ps(v, 1);
        dst += 4;
    }
    if (n & 2) {
        _mm_storel_pi((__m64 *)dst, part);
        part = _mm_movehl_ps(part, part);
        dst += 2;
    }
    if (n & 1)
        _mm_store_ss(dst, part);
}
#endif

#endif /* FASTCNN_STORE_PART_AVX2_H */
