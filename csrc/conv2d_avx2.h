/* conv2d_avx2.h - conv2d_kernel.h's loops set up for AVX2: 8-float vectors;
 * the direct tile holds 4 channels x 3 vectors (12 of the 16 ymm
 * registers); masked stores and loads for row ends and the stride-1
 * im2col. Included by the conv2d_<algorithm>_avx2.c files, each compiled
 * with AVX2 + FMA flags. */
#ifndef FASTCNN_CONV2D_AVX2_H
#define FASTCNN_CONV2D_AVX2_H
#define DIRECT_VBYTES 32
#define DIRECT_ACC 12
#define DIRECT_STORE_PART(dst, vec, n) \
    _mm256_maskstore_ps(dst, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), \
                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), (__m256)(vec))
#include <immintrin.h>

/* Lanes [lo, hi) of an 8-lane vector, as a maskload mask. */
static inline __m256i lane_range(int64_t lo, int64_t hi)
{
    lo = lo < -1 ? -1 : lo > 8 ? 8 : lo;
    hi = hi < -1 ? -1 : hi > 8 ? 8 : hi;
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32((int)lo - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32((int)hi), lane));
}
#define DIRECT_LOAD_RANGE(src, lo, hi) ((dvec)_mm256_maskload_ps(src, lane_range(lo, hi)))
#include "conv2d_kernel.h"

#endif /* FASTCNN_CONV2D_AVX2_H */
