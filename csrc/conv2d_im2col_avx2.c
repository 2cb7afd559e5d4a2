/* conv2d_im2col_avx2.c - the stride-1 im2col of one kernel tap (masked loads):
 * conv2d_kernel.h's loop compiled for AVX2 (set up by conv2d_avx2.h); and
 * col2im of one tap. Planes of at most 8 floats (2x2 maps) are one permute
 * per image each way instead of a loop over rows of a few floats. */
#include "conv2d_avx2.h"

/* The lanes whose bits are set in mask, as an all-ones / all-zeros vector. */
static inline __m256 lanes_of(uint32_t mask)
{
    __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    __m256i set = _mm256_and_si256(_mm256_set1_epi32((int)mask), bit);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(set, bit));
}

/* im2col_tap for H W <= 8 and P Q <= 8: each image's output plane is its
 * input plane permuted, padding lanes zeroed. */
static void small_tap(float *out, const float *xc, int64_t cnt, int64_t ostride,
                      int64_t xstride, int64_t r, int64_t t, const conv2d_shape *s)
{
    int32_t idx[8];
    __m256 kept = lanes_of(small_tap_index(idx, r, t, s));
    __m256i in = lane_range(0, s->H * s->W);
    __m256i vi = _mm256_loadu_si256((const __m256i *)idx);
    for (int64_t i = 0; i < cnt; i++) {
        __m256 v = _mm256_maskload_ps(xc + i * xstride, in);
        store_part8(out + i * ostride, _mm256_and_ps(_mm256_permutevar8x32_ps(v, vi), kept),
                    (int)(s->P * s->Q));
    }
}

void conv2d_im2col_tap_avx2(float *out, const float *xc, int64_t cnt, int64_t ostride,
                            int64_t xstride, int64_t r, int64_t t, const conv2d_shape *s)
{
    if (s->H * s->W <= 8 && s->P * s->Q <= 8)
        small_tap(out, xc, cnt, ostride, xstride, r, t, s);
    else
        im2col_tap(out, xc, cnt, ostride, xstride, r, t, s);
}

/* col2im of one tap for H W <= 8 and P Q <= 8: each image's input plane
 * gains its output plane permuted back. */
static void small_col2im(float *dxc, const float *in, int64_t cnt, int64_t xstride,
                         int64_t istride, int64_t r, int64_t t, const conv2d_shape *s)
{
    int32_t inv[8];
    __m256 back = lanes_of(small_col2im_index(inv, r, t, s));
    __m256i plane = lane_range(0, s->H * s->W), all = lane_range(0, s->P * s->Q);
    __m256i vi = _mm256_loadu_si256((const __m256i *)inv);
    for (int64_t i = 0; i < cnt; i++) {
        float *d = dxc + i * xstride;
        __m256 v = _mm256_maskload_ps(in + i * istride, all);
        __m256 old = _mm256_maskload_ps(d, plane);
        __m256 sum = _mm256_add_ps(old, _mm256_permutevar8x32_ps(v, vi));
        /* lanes the tap does not reach keep their value (-0.0 included) */
        store_part8(d, _mm256_blendv_ps(old, sum, back), (int)(s->H * s->W));
    }
}

void conv2d_col2im_tap_avx2(float *dxc, const float *in, int64_t cnt, int64_t xstride,
                            int64_t istride, int64_t r, int64_t t, const conv2d_shape *s)
{
    if (s->H * s->W <= 8 && s->P * s->Q <= 8)
        small_col2im(dxc, in, cnt, xstride, istride, r, t, s);
    else if (s->sw == 1)
        col2im_tap(dxc, in, cnt, xstride, istride, r, t, s);
    else
        conv2d_col2im_tap_generic(dxc, in, cnt, xstride, istride, r, t, s);
}
