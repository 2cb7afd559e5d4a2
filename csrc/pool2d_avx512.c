/* pool2d_avx512.c - csrc/pool2d_kernel.h's 2x2 forward tile loop written with
 * AVX512 intrinsics (gcc vectorizes its stride-2 reads poorly for 64-byte
 * vectors); the same results as the header's loop. (The backward stays
 * portable: its masked 64-byte stores ran 2x slower than the header's loop
 * on Zen 5, 64x64x56x56.) */
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

/* The values-only loop (inference): the header's, compiled for AVX-512. */
void max_values_2x2_avx512(float *y, const float *x, int64_t W, int64_t P, int64_t Q)
{
    max_values_2x2(y, x, W, P, Q);
}
