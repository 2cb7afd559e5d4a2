/* conv2d_avx512.h - conv2d_kernel.h's loops set up for AVX-512: 16-float
 * vectors; the direct tile holds 8 channels x 3 vectors (24 of the 32 zmm
 * registers), the channel-vector tile 14 positions x 2 vectors; masked
 * stores and loads for row ends and the stride-1 im2col; the channel-vector
 * epilogue's 16 x 16 register transpose (transpose_regs.h). Included by the
 * conv2d_<algorithm>_avx512.c files, each compiled with AVX-512 flags. */
#ifndef FASTCNN_CONV2D_AVX512_H
#define FASTCNN_CONV2D_AVX512_H
#define DIRECT_VBYTES 64
#define DIRECT_ACC 24
#define KVEC_ACC 28             /* 14 positions x 2 vectors, + 2 weights + 1 broadcast */
#define DIRECT_STORE_PART(dst, vec, n) \
    _mm512_mask_storeu_ps(dst, (__mmask16)((1u << (n)) - 1), (__m512)(vec))
#include <immintrin.h>

#include "transpose_regs.h"

/* Lanes [lo, hi) of a 16-lane vector, as a mask (lo, hi clipped to 0..16). */
static inline __mmask16 lane_range(int64_t lo, int64_t hi)
{
    lo = lo < 0 ? 0 : lo > 16 ? 16 : lo;
    hi = hi < lo ? lo : hi > 16 ? 16 : hi;
    return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}
#define DIRECT_LOAD_RANGE(src, lo, hi) ((dvec)_mm512_maskz_loadu_ps(lane_range(lo, hi), src))

#define KVEC_TRANSPOSE(m) transpose16((__m512 *)(m))

/* Winograd's column split (conv2d_winograd_kernel.h): 32 columns in two
 * masked loads, their even and odd floats permuted apart. */
static inline void wino_split16(const float *row, int64_t c0, int64_t W, __m512 *ev, __m512 *od)
{
    __m512 a = _mm512_maskz_loadu_ps(lane_range(-c0, W - c0), row + c0);
    __m512 b = _mm512_maskz_loadu_ps(lane_range(-c0 - 16, W - c0 - 16), row + c0 + 16);
    __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    *ev = _mm512_permutex2var_ps(a, even, b);
    *od = _mm512_permutex2var_ps(a, _mm512_add_epi32(even, _mm512_set1_epi32(1)), b);
}
#define WINO_SPLIT(row, c0, W, ev, od)                                          \
    do {                                                                        \
        __m512 e_, o_;     /* ev, od may be less aligned than __m512 */            \
        wino_split16(row, c0, W, &e_, &o_);                                     \
        (ev) = (dvec)e_, (od) = (dvec)o_;                                       \
    } while (0)

/* The first n (<= 32) floats of ev and od interleaved, to dst. */
static inline void wino_merge16(float *dst, __m512 ev, __m512 od, int64_t n)
{
    __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    _mm512_mask_storeu_ps(dst, lane_range(0, n), _mm512_permutex2var_ps(ev, lo, od));
    if (n > 16)
        _mm512_mask_storeu_ps(dst + 16, lane_range(0, n - 16), _mm512_permutex2var_ps(ev, hi, od));
}
#define WINO_MERGE_STORE(dst, ev, od, n) wino_merge16(dst, (__m512)(ev), (__m512)(od), n)

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
