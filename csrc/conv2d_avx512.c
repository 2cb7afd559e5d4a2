/* conv2d_avx512.c - the conv2d family's AVX-512 loops (conv2d_kernel.h):
 * the direct first-layer convolution with 16-float vectors (8 channels x 3
 * vectors = 24 of the 32 zmm registers hold the tile) and the stride-1
 * im2col with masked loads. Calls nothing outside this file. */
#define DIRECT_VBYTES 64
#define DIRECT_ACC 24
#define KVEC_ACC 28             /* 14 positions x 2 vectors, + 2 weights + 1 broadcast */
#define DIRECT_STORE_PART(dst, vec, n) \
    _mm512_mask_storeu_ps(dst, (__mmask16)((1u << (n)) - 1), (__m512)(vec))
#include <immintrin.h>

/* Lanes [lo, hi) of a 16-lane vector, as a mask (lo, hi clipped to 0..16). */
static inline __mmask16 lane_range(int64_t lo, int64_t hi)
{
    lo = lo < 0 ? 0 : lo > 16 ? 16 : lo;
    hi = hi < lo ? lo : hi > 16 ? 16 : hi;
    return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}
#define DIRECT_LOAD_RANGE(src, lo, hi) ((dvec)_mm512_maskz_loadu_ps(lane_range(lo, hi), src))
#include "conv2d_kernel.h"

void conv2d_direct_block_avx512(float *y, const float *xpad, const float *w, const float *b,
                                int64_t k0, int64_t kn, const direct_geom *g)
{
    direct_block(y, xpad, w, b, k0, kn, g);
}

void conv2d_im2col_tap_avx512(float *out, const float *xc, int64_t cnt, int64_t ostride,
                              int64_t xstride, int64_t r, int64_t t, const conv2d_shape *s)
{
    im2col_tap(out, xc, cnt, ostride, xstride, r, t, s);
}

void conv2d_kvec_block_avx512(float *y, const float *xpad, const float *wT, const float *b,
                              int64_t k0, int kv, const kvec_geom *g)
{
    kvec_block(y, xpad, wT, b, k0, kv, g);
}

void conv2d_wgrad_image_avx512(float *dwT, const float *xpad, const float *dyT,
                               const kvec_geom *g)
{
    wgrad_image(dwT, xpad, dyT, g);
}
