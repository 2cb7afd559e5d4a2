/* conv2d_direct_avx512.c - the direct first-layer convolution's block kernel:
 * conv2d_kernel.h's loop compiled for AVX-512 (set up by conv2d_avx512.h). */
#include "conv2d_avx512.h"

void conv2d_direct_block_avx512(float *y, const float *xpad, const float *wB, const float *b,
                                int64_t k0, int64_t kn, int64_t p0, int64_t p1,
                                const direct_geom *g)
{
    direct_block(y, xpad, wB, b, k0, kn, p0, p1, g);
}
