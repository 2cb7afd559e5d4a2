/* conv2d_kvec_avx512.c - the channel-vector direct convolution's block kernel:
 * conv2d_kernel.h's loop compiled for AVX-512 (set up by conv2d_avx512.h). */
#include "conv2d_avx512.h"

void conv2d_kvec_block_avx512(float *y, const float *xpad, const float *wB, const float *b,
                              int64_t k0, int kv, int64_t p0, int64_t p1, const kvec_geom *g)
{
    kvec_block(y, xpad, wB, b, k0, kv, p0, p1, g);
}
