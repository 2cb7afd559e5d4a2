/* conv2d_im2col_avx2.c - the stride-1 im2col of one kernel tap (masked loads):
 * conv2d_kernel.h's loop compiled for AVX2 (set up by conv2d_avx2.h). */
#include "conv2d_avx2.h"

void conv2d_im2col_tap_avx2(float *out, const float *xc, int64_t cnt, int64_t ostride,
                            int64_t xstride, int64_t r, int64_t t, const conv2d_shape *s)
{
    im2col_tap(out, xc, cnt, ostride, xstride, r, t, s);
}
