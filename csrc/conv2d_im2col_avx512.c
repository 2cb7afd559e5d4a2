/* conv2d_im2col_avx512.c - the stride-1 im2col of one kernel tap (masked loads):
 * conv2d_kernel.h's loop compiled for AVX-512 (set up by conv2d_avx512.h);
 * and col2im of one tap. Planes of at most 16 floats (ResNet's last stages:
 * 4x4, 2x2) are one permute per image each way instead of a loop over rows
 * of a few floats. */
#include "conv2d_avx512.h"

/* im2col_tap for H W <= 16 and P Q <= 16: each image's output plane is its
 * input plane permuted, padding lanes zeroed. */
static void small_tap(float *out, const float *xc, int64_t cnt, int64_t ostride,
                      int64_t xstride, int64_t r, int64_t t, const conv2d_shape *s)
{
    int32_t idx[16];
    __mmask16 keep = (__mmask16)small_tap_index(idx, r, t, s);
    __mmask16 in = lane_range(0, s->H * s->W), all = lane_range(0, s->P * s->Q);
    __m512i vi = _mm512_loadu_si512(idx);
    for (int64_t i = 0; i < cnt; i++) {
        __m512 v = _mm512_maskz_loadu_ps(in, xc + i * xstride);
        _mm512_mask_storeu_ps(out + i * ostride, all, _mm512_maskz_permutexvar_ps(keep, vi, v));
    }
}

void conv2d_im2col_tap_avx512(float *out, const float *xc, int64_t cnt, int64_t ostride,
                              int64_t xstride, int64_t r, int64_t t, const conv2d_shape *s)
{
    if (s->H * s->W <= 16 && s->P * s->Q <= 16)
        small_tap(out, xc, cnt, ostride, xstride, r, t, s);
    else
        im2col_tap(out, xc, cnt, ostride, xstride, r, t, s);
}

/* col2im of one tap for H W <= 16 and P Q <= 16: each image's input plane
 * gains its output plane permuted back (lanes the tap does not reach are
 * not written). */
static void small_col2im(float *dxc, const float *in, int64_t cnt, int64_t xstride,
                         int64_t istride, int64_t r, int64_t t, const conv2d_shape *s)
{
    int32_t inv[16];
    __mmask16 back = (__mmask16)small_col2im_index(inv, r, t, s);
    __mmask16 plane = lane_range(0, s->H * s->W), all = lane_range(0, s->P * s->Q);
    __m512i vi = _mm512_loadu_si512(inv);
    for (int64_t i = 0; i < cnt; i++) {
        float *d = dxc + i * xstride;
        __m512 v = _mm512_maskz_loadu_ps(all, in + i * istride);
        __m512 sum = _mm512_add_ps(_mm512_maskz_loadu_ps(plane, d),
                                   _mm512_maskz_permutexvar_ps(back, vi, v));
        _mm512_mask_storeu_ps(d, back, sum);
    }
}

void conv2d_col2im_tap_avx512(float *dxc, const float *in, int64_t cnt, int64_t xstride,
                              int64_t istride, int64_t r, int64_t t, const conv2d_shape *s)
{
    if (s->H * s->W <= 16 && s->P * s->Q <= 16)
        small_col2im(dxc, in, cnt, xstride, istride, r, t, s);
    else if (s->sw == 1)
        col2im_tap(dxc, in, cnt, xstride, istride, r, t, s);
    else
        conv2d_col2im_tap_generic(dxc, in, cnt, xstride, istride, r, t, s);
}
