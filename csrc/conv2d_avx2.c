/* conv2d_avx2.c - the conv2d family's AVX2 loops (conv2d_kernel.h): the
 * direct first-layer convolution with 8-float vectors (4 channels x 3
 * vectors = 12 of the 16 ymm registers hold the tile) and the stride-1
 * im2col with masked loads. Calls nothing outside this file. */
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

void conv2d_direct_block_avx2(float *y, const float *xpad, const float *w, const float *b,
                              int64_t k0, int64_t kn, const direct_geom *g)
{
    direct_block(y, xpad, w, b, k0, kn, g);
}

void conv2d_im2col_tap_avx2(float *out, const float *xc, int64_t cnt, int64_t ostride,
                              int64_t xstride, int64_t r, int64_t t, const conv2d_shape *s)
{
    im2col_tap(out, xc, cnt, ostride, xstride, r, t, s);
}

void conv2d_kvec_block_avx2(float *y, const float *xpad, const float *wT, const float *b,
                              int64_t k0, int kv, const kvec_geom *g)
{
    kvec_block(y, xpad, wT, b, k0, kv, g);
}

void conv2d_wgrad_image_avx2(float *dwT, const float *xpad, const float *dyT,
                               const kvec_geom *g)
{
    wgrad_image(dwT, xpad, dyT, g);
}
