/* conv2d_direct_avx512.c - the direct first-layer convolution
 * (conv2d_direct.h) with 16-float vectors: 8 channels x 3 vectors = 24 of
 * the 32 zmm registers hold the tile. Calls nothing outside this file. */
#define DIRECT_VBYTES 64
#define DIRECT_ACC 24
#define DIRECT_STORE_PART(dst, vec, n) \
    _mm512_mask_storeu_ps(dst, (__mmask16)((1u << (n)) - 1), (__m512)(vec))
#include <immintrin.h>

#include "conv2d_direct.h"

void conv2d_direct_block_avx512(float *y, const float *xpad, const float *w, const float *b,
                                int64_t k0, int64_t kn, const direct_geom *g)
{
    direct_block(y, xpad, w, b, k0, kn, g);
}
