/* conv2d_avx512.h - conv2d_kernel.h's loops set up for AVX-512: 16-float
 * vectors; the direct tile holds 8 channels x 3 vectors (24 of the 32 zmm
 * registers), the channel-vector tile 14 positions x 2 vectors; masked
 * stores and loads for row ends and the stride-1 im2col. Included by the
 * conv2d_<algorithm>_avx512.c files, each compiled with AVX-512 flags. */
#ifndef FASTCNN_CONV2D_AVX512_H
#define FASTCNN_CONV2D_AVX512_H
#define DIRECT_VBYTES 64
#define DIRECT_ACC 24
#define KVEC_ACC 28             /* 14 positions x 2 vectors, + 2 weights + 1 broadcast */
#define DIRECT_STORE_PART(dst, vec, n) \
    _mm512_mask_storeu_ps(dst, (__mmask16)((1u << (n)) - 1), (__m512)(vec))
#include <immintrin.h>

/* Lanes [lo, hi) of a 16-lane vector, as a mask (lo, hi clipped to 0..16). */
static inline __mmask16 lane_range(int64_t lo, int64_t hi)
{
    lo = lo < 0 ? 0 : lo > 16 ? 16 : lo;
    hi = hi < lo ? lo : hi > 16 ? 16 : hi;
    return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}
#define DIRECT_LOAD_RANGE(src, lo, hi) ((dvec)_mm512_maskz_loadu_ps(lane_range(lo, hi), src))

/* The 16 x 16 floats of m[0 .. 16) transposed in place: pairs of rows
 * interleaved by floats, then by pairs, then 128-bit quarters regathered. */
static inline void transpose16(__m512 m[16])
{
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(m[i], m[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(m[i], m[i + 1]);
    }
    for (int i = 0; i < 16; i += 4)     /* u[i + j]: column 4q + j of rows i .. i + 3, quarter q */
        for (int h = 0; h < 2; h++) {
            __m512d a = _mm512_castps_pd(t[i + h]), c = _mm512_castps_pd(t[i + 2 + h]);
            u[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
            u[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        }
    for (int j = 0; j < 4; j++) {
        __m512 lo01 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);
        __m512 hi01 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xee);
        __m512 lo23 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44);
        __m512 hi23 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xee);
        m[j] = _mm512_shuffle_f32x4(lo01, lo23, 0x88);
        m[4 + j] = _mm512_shuffle_f32x4(lo01, lo23, 0xdd);
        m[8 + j] = _mm512_shuffle_f32x4(hi01, hi23, 0x88);
        m[12 + j] = _mm512_shuffle_f32x4(hi01, hi23, 0xdd);
    }
}
#define KVEC_TRANSPOSE(m) transpose16((__m512 *)(m))

/* Lanes lo .. hi of v to dst[0 .. hi - lo): moved down (compress), masked. */
static inline void store_run16(float *dst, __m512 v, int lo, int hi)
{
    if (lo == 0 && hi == 16) {
        _mm512_storeu_ps(dst, v);
        return;
    }
    if (lo > 0)
        v = _mm512_maskz_compress_ps(lane_range(lo, hi), v);
    _mm512_mask_storeu_ps(dst, lane_range(0, hi - lo), v);
}
#define KVEC_STORE_RUN(dst, vec, lo, hi) store_run16(dst, (__m512)(vec), lo, hi)
#include "conv2d_kernel.h"

#endif /* FASTCNN_CONV2D_AVX512_H */
