/* conv2d_wgrad_avx2.c - the channel-vector weight gradient of one image:
 * conv2d_kernel.h's loop compiled for AVX2 (set up by conv2d_avx2.h). */
#include "conv2d_avx2.h"

void conv2d_wgrad_image_avx2(float *dwT, const float *xpad, const float *dyT,
                             const kvec_geom *g)
{
    wgrad_image(dwT, xpad, dyT, g);
}
