/* conv2d_wgrad_avx512.c - the channel-vector weight gradient of one image:
 * conv2d_kernel.h's loop compiled for AVX-512 (set up by conv2d_avx512.h). */
#include "conv2d_avx512.h"

void conv2d_wgrad_image_avx512(float *dwT, const float *xpad, const float *dyT,
                               const kvec_geom *g)
{
    wgrad_image(dwT, xpad, dyT, g);
}
