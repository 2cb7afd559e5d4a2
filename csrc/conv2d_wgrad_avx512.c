/* conv2d_wgrad_avx512.c - the channel-vector weight gradient of one image
 * and the position-vector one of a kernel row's taps: conv2d_kernel.h's
 * loops compiled for AVX-512 (set up by conv2d_avx512.h). */
#include "conv2d_avx512.h"

_Static_assert(WGRAD_MAX_S == WGRAD_MAX_S_AVX512, "the kernel table's widest rows");

void conv2d_wgrad_image_avx512(float *dwT, const float *xpad, const float *dyT,
                               const kvec_geom *g)
{
    wgrad_image(dwT, xpad, dyT, g);
}

void conv2d_wgrad_row_avx512(float *vsums, int64_t K, const float *xpad, const float *dy,
                             int64_t c, int64_t r, int64_t t0, int ns, int64_t k0, int64_t kn,
                             const direct_geom *g)
{
    wgrad_row(vsums, K, xpad, dy, c, r, t0, ns, k0, kn, g);
}
