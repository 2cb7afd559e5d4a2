/* conv2d_im2col_avx512.c - the stride-1 im2col of one kernel tap (masked loads):
 * conv2d_kernel.h's loop compiled for AVX-512 (set up by conv2d_avx512.h);
 * col2im of one tap; and col2im of a whole channel at column stride 1 or 2.
 * Planes of at most 16 floats (ResNet's last stages: 4x4, 2x2) are one
 * permute per image each way instead of a loop over rows of a few floats. */
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

/* Lane l of 16 columns whose first takes 2 q0 + par from a tap: q0 + (l + par) / 2,
 * for the lanes where l + par is even (par 0 or 1). */
static const int32_t S2_INDEX[2][16] = {
    {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7},
    {0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8},
};
static const __mmask16 S2_LANES[2] = {0x5555, 0xaaaa};

/* Tap t's part of 16 columns of a dx row: its row of col read from off (a
 * masked load, floats outside the row as zeros), permuted onto every other
 * column. */
typedef struct {
    int64_t off[CONV2D_COL2IM_MAX_R];
    __mmask16 in[CONV2D_COL2IM_MAX_R], lanes[CONV2D_COL2IM_MAX_R];
    __m512i idx[CONV2D_COL2IM_MAX_R];
} s2_taps;

static void s2_taps_at(s2_taps *k, int64_t x0, int64_t row, const conv2d_shape *s)
{
    for (int64_t t = 0; t < s->S; t++) {
        int64_t u = x0 + s->pw - t * s->dw;     /* 2 q of lane 0, plus its parity */
        int64_t par = u & 1, q0 = (u - par) / 2;
        k->off[t] = t * row + q0;
        k->in[t] = lane_range(-q0, s->Q - q0);
        k->lanes[t] = S2_LANES[par];
        k->idx[t] = _mm512_loadu_si512(S2_INDEX[par]);
    }
}

/* Columns [x0, x0 + 16) of a dx row: the taps of the rows of col that land
 * on it (row r's at src[r], or src[r] NULL), in the taps' order (r, then t:
 * the one-tap-at-a-time sums, to the bit). */
static __m512 s2_chunk(const float *const *src, const s2_taps *k, const conv2d_shape *s)
{
    __m512 acc = _mm512_setzero_ps();
    for (int64_t r = 0; r < s->R; r++) {
        if (!src[r])
            continue;
        for (int64_t t = 0; t < s->S; t++) {
            __m512 x = _mm512_maskz_loadu_ps(k->in[t], src[r] + k->off[t]);
            acc = _mm512_add_ps(acc, _mm512_maskz_permutexvar_ps(k->lanes[t], k->idx[t], x));
        }
    }
    return acc;
}

void conv2d_col2im_s2_avx512(float *dxc, const float *colc, int64_t cnt, int64_t xstride,
                             const conv2d_shape *s)
{
    int64_t PQ = s->P * s->Q, row = cnt * PQ;
    const float *src[CONV2D_COL2IM_MAX_R];
    s2_taps k;
    for (int64_t x0 = 0; x0 < s->W; x0 += 16) {
        s2_taps_at(&k, x0, row, s);
        __mmask16 out = lane_range(0, s->W - x0);
        for (int64_t y = 0; y < s->H; y++) {
            for (int64_t r = 0; r < s->R; r++) {     /* the taps r whose output row lands on y */
                int64_t v = y + s->ph - r * s->dh;
                src[r] = v >= 0 && v % s->sh == 0 && v / s->sh < s->P
                       ? colc + r * s->S * row + v / s->sh * s->Q : NULL;
            }
            for (int64_t i = 0; i < cnt; i++) {
                _mm512_mask_storeu_ps(dxc + i * xstride + y * s->W + x0, out,
                                      s2_chunk(src, &k, s));
                for (int64_t r = 0; r < s->R; r++)
                    src[r] = src[r] ? src[r] + PQ : NULL;
            }
        }
    }
}

/* Images whose dx rows col2im_s1 sums side by side (independent chains). */
#define S1_IMAGES 4

/* A chunk of n (<= S1_IMAGES) images' dx rows (16 columns, the first nx
 * stored, at dst + j xstride): the taps of the rows of col that land on it
 * (kernel row r's at src[r] + at + j P Q, or src[r] NULL; tap t's columns at
 * + off[t], lanes in[t]), in the taps' order (r, then t: the
 * one-tap-at-a-time sums, to the bit). */
static inline __attribute__((always_inline)) void
s1_chunk(float *dst, int64_t xstride, const float *const *src, int64_t at, const int64_t *off,
         const __mmask16 *in, int64_t nx, int n, const conv2d_shape *s)
{
    __m512 acc[S1_IMAGES];
    for (int j = 0; j < n; j++) acc[j] = _mm512_setzero_ps();
    int64_t PQ = s->P * s->Q;
    for (int64_t r = 0; r < s->R; r++) {
        if (!src[r])
            continue;
        for (int64_t t = 0; t < s->S; t++)
            for (int j = 0; j < n; j++)
                acc[j] = _mm512_add_ps(
                    acc[j], _mm512_maskz_loadu_ps(in[t], src[r] + at + j * PQ + off[t]));
    }
    for (int j = 0; j < n; j++)
        _mm512_mask_storeu_ps(dst + j * xstride, lane_range(0, nx), acc[j]);
}

/* Column stride 1, every tap at once: a vector of a dx row gathers its
 * taps' columns with one masked load each, where col2im_tap reads and
 * writes the row once per tap (LeNet's 10-column rows: 10 scalar adds). */
void conv2d_col2im_s1_avx512(float *dxc, const float *colc, int64_t cnt, int64_t xstride,
                             const conv2d_shape *s)
{
    int64_t PQ = s->P * s->Q, row = cnt * PQ;
    const float *src[CONV2D_COL2IM_MAX_R];
    int64_t off[CONV2D_COL2IM_MAX_R];
    __mmask16 in[CONV2D_COL2IM_MAX_R];
    for (int64_t x0 = 0; x0 < s->W; x0 += 16) {
        for (int64_t t = 0; t < s->S; t++) {
            int64_t q0 = x0 + s->pw - t * s->dw;    /* tap t's output column of lane 0 */
            off[t] = t * row + q0;
            in[t] = lane_range(-q0, s->Q - q0);
        }
        for (int64_t y = 0; y < s->H; y++) {
            for (int64_t r = 0; r < s->R; r++) {     /* the taps r whose output row lands on y */
                int64_t v = y + s->ph - r * s->dh;
                src[r] = v >= 0 && v % s->sh == 0 && v / s->sh < s->P
                       ? colc + r * s->S * row + v / s->sh * s->Q : NULL;
            }
            float *dst = dxc + y * s->W + x0;
            int64_t i = 0;
            for (; i + S1_IMAGES <= cnt; i += S1_IMAGES)
                s1_chunk(dst + i * xstride, xstride, src, i * PQ, off, in, s->W - x0, S1_IMAGES, s);
            for (; i < cnt; i++)
                s1_chunk(dst + i * xstride, xstride, src, i * PQ, off, in, s->W - x0, 1, s);
        }
    }
}
