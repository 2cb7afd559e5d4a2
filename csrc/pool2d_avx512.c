/* pool2d_avx512.c - csrc/pool2d_kernel.h's 2x2 tile loops written with AVX512
 * intrinsics (gcc vectorizes their stride-2 reads and interleaved writes
 * poorly for 64-byte vectors); the same results as the header's loops. */
#include <immintrin.h>

#include "pool2d_kernel.h"

/* 16 (or n < 16: masked) outputs of max_tiles_2x2 from rows r0, r1 at column
 * 2q; b0, b1 the flat indices of the rows' first elements. Same tree as there. */
static inline void tiles16(float *y, int32_t *am, const float *r0, const float *r1,
                           int32_t b0, int32_t b1, int64_t q, int n)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i one = _mm512_set1_epi32(1);
    __mmask16 out = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1);
    __mmask16 lo = (__mmask16)(n >= 8 ? 0xFFFF : (1u << (2 * n)) - 1);
    __mmask16 hi = (__mmask16)(n >= 16 ? 0xFFFF : n > 8 ? (1u << (2 * n - 16)) - 1 : 0);
    __m512 l0 = _mm512_maskz_loadu_ps(lo, r0 + 2 * q), h0 = _mm512_maskz_loadu_ps(hi, r0 + 2 * q + 16);
    __m512 l1 = _mm512_maskz_loadu_ps(lo, r1 + 2 * q), h1 = _mm512_maskz_loadu_ps(hi, r1 + 2 * q + 16);
    __m512 a = _mm512_permutex2var_ps(l0, even, h0), b = _mm512_permutex2var_ps(l0, odd, h0);
    __m512 c = _mm512_permutex2var_ps(l1, even, h1), d = _mm512_permutex2var_ps(l1, odd, h1);
    __mmask16 tb = _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
    __mmask16 td = _mm512_cmp_ps_mask(d, c, _CMP_GT_OQ) | _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q);
    __m512 top = _mm512_mask_blend_ps(tb, a, b), bottom = _mm512_mask_blend_ps(td, c, d);
    __m512i col = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(2 * q)), even);
    __m512i i0 = _mm512_add_epi32(col, _mm512_set1_epi32(b0));
    __m512i i1 = _mm512_add_epi32(col, _mm512_set1_epi32(b1));
    __m512i it = _mm512_mask_add_epi32(i0, tb, i0, one), ib = _mm512_mask_add_epi32(i1, td, i1, one);
    __mmask16 tr = _mm512_cmp_ps_mask(bottom, top, _CMP_GT_OQ)
                 | _mm512_cmp_ps_mask(bottom, bottom, _CMP_UNORD_Q);
    _mm512_mask_storeu_ps(y + q, out, _mm512_mask_blend_ps(tr, top, bottom));
    _mm512_mask_storeu_epi32(am + q, out, _mm512_mask_blend_epi32(tr, it, ib));
}

void max_tiles_2x2_avx512(float *y, int32_t *am, const float *x, int64_t W, int64_t P, int64_t Q)
{
    for (int64_t p = 0; p < P; p++) {
        const float *r0 = x + 2 * p * W, *r1 = r0 + W;
        int32_t b0 = (int32_t)(2 * p * W), b1 = b0 + (int32_t)W;
        int64_t q = 0;
        for (; q + 16 <= Q; q += 16)
            tiles16(y + p * Q, am + p * Q, r0, r1, b0, b1, q, 16);
        if (q < Q)
            tiles16(y + p * Q, am + p * Q, r0, r1, b0, b1, q, (int)(Q - q));
    }
}

/* One row of 16 (or n < 16: masked) tiles' gradients: the row's two
 * candidates per tile v0 (even columns), v1 (odd) interleaved into d (2n),
 * zeroed where m (2n, optional) <= 0. */
static inline void store_pairs(float *d, const float *m, __m512 v0, __m512 v1, __mmask16 lo,
                               __mmask16 hi)
{
    const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22,
                                            7, 23);
    const __m512i second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
    __m512 a = _mm512_permutex2var_ps(v0, first, v1), b = _mm512_permutex2var_ps(v0, second, v1);
    if (m) {
        __m512 zero = _mm512_setzero_ps();
        a = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(lo, m), zero, _CMP_GT_OQ), a);
        b = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(hi, m + 16), zero,
                                                   _CMP_GT_OQ), b);
    }
    _mm512_mask_storeu_ps(d, lo, a);
    _mm512_mask_storeu_ps(d + 16, hi, b);
}

int64_t route_tiles_2x2_avx512(float *dx, const float *dy, const int32_t *am, const float *mask,
                               int64_t P, int64_t Q)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i one = _mm512_set1_epi32(1);
    int64_t W = 2 * Q, hits = 0;
    for (int64_t p = 0; p < P; p++) {
        float *d0 = dx + 2 * p * W, *d1 = d0 + W;
        const float *m0 = mask ? mask + 2 * p * W : NULL, *m1 = mask ? m0 + W : NULL;
        int32_t b0 = (int32_t)(2 * p * W), b1 = b0 + (int32_t)W;
        for (int64_t q = 0; q < Q; q += 16) {
            int n = Q - q < 16 ? (int)(Q - q) : 16;
            __mmask16 out = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1);
            __mmask16 lo = (__mmask16)(n >= 8 ? 0xFFFF : (1u << (2 * n)) - 1);
            __mmask16 hi = (__mmask16)(n >= 16 ? 0xFFFF : n > 8 ? (1u << (2 * n - 16)) - 1 : 0);
            /* -0 -> +0, as torch's 0 + dy */
            __m512 g = _mm512_add_ps(_mm512_maskz_loadu_ps(out, dy + p * Q + q), _mm512_setzero_ps());
            __m512i a = _mm512_maskz_loadu_epi32(out, am + p * Q + q);
            __m512i col = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(2 * q)), even);
            __m512i c0 = _mm512_add_epi32(col, _mm512_set1_epi32(b0));
            __m512i c1 = _mm512_add_epi32(col, _mm512_set1_epi32(b1));
            __mmask16 h00 = _mm512_mask_cmpeq_epi32_mask(out, a, c0);
            __mmask16 h01 = _mm512_mask_cmpeq_epi32_mask(out, a, _mm512_add_epi32(c0, one));
            __mmask16 h10 = _mm512_mask_cmpeq_epi32_mask(out, a, c1);
            __mmask16 h11 = _mm512_mask_cmpeq_epi32_mask(out, a, _mm512_add_epi32(c1, one));
            hits += __builtin_popcount(h00) + __builtin_popcount(h01) + __builtin_popcount(h10)
                  + __builtin_popcount(h11);
            store_pairs(d0 + 2 * q, m0 ? m0 + 2 * q : NULL, _mm512_maskz_mov_ps(h00, g),
                        _mm512_maskz_mov_ps(h01, g), lo, hi);
            store_pairs(d1 + 2 * q, m1 ? m1 + 2 * q : NULL, _mm512_maskz_mov_ps(h10, g),
                        _mm512_maskz_mov_ps(h11, g), lo, hi);
        }
    }
    return hits;
}
