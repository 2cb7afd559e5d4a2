/* pool2d_avx2.c - csrc/pool2d_kernel.h's 2x2 forward tile loops written with
 * AVX2 intrinsics; the same results as the header's loop. (gcc compiles the
 * header's loop for AVX2 with a branch per candidate wherever a row has
 * fewer than 8 outputs left: LeNet-5's 14 and 5 wide maps.) */
#include <immintrin.h>
#include <string.h>

#include "pool2d_kernel.h"

/* The lanes where v replaces m (all ones): v > m, or v is NaN. */
static inline __m256 beats(__m256 v, __m256 m)
{
    return _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

/* *ev, *od = the even and odd ones of the 16 floats at r. */
static inline void split16(__m256 *ev, __m256 *od, const float *r)
{
    __m256 a = _mm256_loadu_ps(r), b = _mm256_loadu_ps(r + 8);
    /* per 128-bit half: a0 a2 b0 b2 | a4 a6 b4 b6; then the 64-bit pairs reordered */
    __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    *ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    *od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* y[0 .. 8) = the maxima of 8 tiles whose rows start at c0, c1 (16 floats
 * each); with am, am[0 .. 8) = their flat indices, i0 and i1 those of c0[0]
 * and c1[0]. A tree (each row's pair, then the rows) that gives the header's
 * sequential scan's results: the first maximum, or the last NaN. */
static inline void tiles8(float *y, int32_t *am, const float *c0, const float *c1, int32_t i0,
                          int32_t i1)
{
    __m256 a, b, c, d;
    split16(&a, &b, c0);
    split16(&c, &d, c1);
    __m256 tb = beats(b, a), td = beats(d, c);
    __m256 top = _mm256_blendv_ps(a, b, tb), bottom = _mm256_blendv_ps(c, d, td);
    __m256 tr = beats(bottom, top);
    _mm256_storeu_ps(y, _mm256_blendv_ps(top, bottom, tr));
    if (!am)
        return;
    const __m256i cols = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    /* a taken odd column is one further: the mask's lanes are -1 */
    __m256i it = _mm256_sub_epi32(_mm256_add_epi32(_mm256_set1_epi32(i0), cols),
                                  _mm256_castps_si256(tb));
    __m256i ib = _mm256_sub_epi32(_mm256_add_epi32(_mm256_set1_epi32(i1), cols),
                                  _mm256_castps_si256(td));
    __m256 idx = _mm256_blendv_ps(_mm256_castsi256_ps(it), _mm256_castsi256_ps(ib), tr);
    _mm256_storeu_si256((__m256i *)am, _mm256_castps_si256(idx));
}

/* Rows p of y (and am, when not NULL) from x (2P, W): 8 tiles at a time,
 * the last n < 8 through zero-padded copies. */
static void max_rows_2x2(float *y, int32_t *am, const float *x, int64_t W, int64_t P, int64_t Q)
{
    for (int64_t p = 0; p < P; p++) {
        const float *r0 = x + 2 * p * W, *r1 = r0 + W;
        int32_t b0 = (int32_t)(2 * p * W), b1 = b0 + (int32_t)W;
        float *yr = y + p * Q;
        int32_t *ar = am ? am + p * Q : NULL;
        int64_t q = 0;
        for (; q + 8 <= Q; q += 8)
            tiles8(yr + q, ar ? ar + q : NULL, r0 + 2 * q, r1 + 2 * q, b0 + (int32_t)(2 * q),
                   b1 + (int32_t)(2 * q));
        if (q == Q)
            continue;
        float rows[2][16] = {{0}}, out[8];
        int32_t idx[8];
        size_t n = (size_t)(Q - q);
        memcpy(rows[0], r0 + 2 * q, 2 * n * sizeof(float));
        memcpy(rows[1], r1 + 2 * q, 2 * n * sizeof(float));
        tiles8(out, ar ? idx : NULL, rows[0], rows[1], b0 + (int32_t)(2 * q),
               b1 + (int32_t)(2 * q));
        memcpy(yr + q, out, n * sizeof(float));
        if (ar)
            memcpy(ar + q, idx, n * sizeof(int32_t));
    }
}

void max_tiles_2x2_avx2(float *y, int32_t *am, const float *x, int64_t W, int64_t P, int64_t Q)
{
    max_rows_2x2(y, am, x, W, P, Q);
}

void max_values_2x2_avx2(float *y, const float *x, int64_t W, int64_t P, int64_t Q)
{
    max_rows_2x2(y, NULL, x, W, P, Q);
}
