/* conv2d_winograd_avx512.c - the Winograd F(2x2, 3x3) and F(4x4, 3x3) filter, input,
 * output and output-gradient transforms (conv2d_winograd_kernel.h) compiled for AVX-512. */
#include "conv2d_avx512.h"
#include "conv2d_internal.h"

void conv2d_wino_input_avx512(float *u, int64_t us, const float *x, int64_t i0, int64_t j0,
                              int64_t n, const wino_geom *g)
{
    wino_input_tiles(u, us, x, i0, j0, n, g);
}

void conv2d_wino_output_avx512(float *y, const float *m, int64_t ms, int64_t i0, int64_t j0,
                               int64_t n, float bias, const wino_geom *g)
{
    wino_output_tiles(y, m, ms, i0, j0, n, bias, g);
}

void conv2d_wino_filters_avx512(float *v, int64_t vs, const float *taps, int64_t K, int flip,
                                int m)
{
    wino_filters_seg(v, vs, taps, K, flip, m);
}

void conv2d_wino_grad_avx512(float *v, int64_t vs, const float *dy, int64_t i0, int64_t j0,
                                int64_t n, const wino_geom *g)
{
    wino_grad_seg(v, vs, dy, i0, j0, n, g);
}
