/* conv2d_direct_avx2.c - the direct first-layer convolution
 * (conv2d_direct.h) with 8-float vectors: 4 channels x 3 vectors = 12 of
 * the 16 ymm registers hold the tile. Calls nothing outside this file. */
#define DIRECT_VBYTES 32
#define DIRECT_ACC 12
#define DIRECT_STORE_PART(dst, vec, n) \
    _mm256_maskstore_ps(dst, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), \
                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), (__m256)(vec))
#include <immintrin.h>

#include "conv2d_direct.h"

void conv2d_direct_block_avx2(float *y, const float *xpad, const float *w, const float *b,
                              int64_t k0, int64_t kn, const direct_geom *g)
{
    direct_block(y, xpad, w, b, k0, kn, g);
}
