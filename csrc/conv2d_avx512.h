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

/* Winograd's column split for two rows of at most 8 tiles in one vector
 * (conv2d_winograd_kernel.h): one masked load of 16 columns from each row
 * (NULL: zeros), the even and odd floats of the first tw tiles of ra, then
 * of rb, permuted out of the pair; idx = WINO_PAIR_INDEX(tw) picks them. */
typedef __m512i wino_pair_index;
static inline __m512i wino_pair_index16(int64_t tw)
{
    __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i twice = _mm512_add_epi32(lane, lane);
    __mmask16 second = _mm512_cmpge_epi32_mask(lane, _mm512_set1_epi32((int)tw));
    /* lane l: column 2 l of ra, or 2 (l - tw) of rb (index 16 on) */
    return _mm512_mask_add_epi32(twice, second, twice, _mm512_set1_epi32(16 - 2 * (int)tw));
}
#define WINO_PAIR_INDEX(tw) wino_pair_index16(tw)

static inline void wino_split_pair16(const float *ra, const float *rb, int64_t c0, int64_t W,
                                     __m512i idx, __m512 *ev, __m512 *od)
{
    __mmask16 in = lane_range(-c0, W - c0);
    __m512 a = ra ? _mm512_maskz_loadu_ps(in, ra + c0) : _mm512_setzero_ps();
    __m512 b = rb ? _mm512_maskz_loadu_ps(in, rb + c0) : _mm512_setzero_ps();
    *ev = _mm512_permutex2var_ps(a, idx, b);
    *od = _mm512_permutex2var_ps(a, _mm512_add_epi32(idx, _mm512_set1_epi32(1)), b);
}
#define WINO_SPLIT_PAIR(ra, rb, c0, W, idx, ev, od)                             \
    do {                                                                        \
        __m512 e_, o_;                                                          \
        wino_split_pair16(ra, rb, c0, W, idx, &e_, &o_);                        \
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

/* The output side of WINO_SPLIT_PAIR: the first n (<= 16) floats of tiles
 * 0 .. tw - 1 of ev and od interleaved to da, of tiles tw .. 2 tw - 1 to db
 * (NULL: not stored). */
static inline void wino_merge_pair16(float *da, float *db, __m512 ev, __m512 od, int64_t tw,
                                     int64_t n)
{
    __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    __mmask16 keep = lane_range(0, n);
    _mm512_mask_storeu_ps(da, keep, _mm512_permutex2var_ps(ev, lo, od));
    if (db)
        _mm512_mask_storeu_ps(db, keep, _mm512_permutex2var_ps(
                                            ev, _mm512_add_epi32(lo, _mm512_set1_epi32((int)tw)), od));
}
#define WINO_MERGE_PAIR(da, db, ev, od, tw, n) \
    wino_merge_pair16(da, db, (__m512)(ev), (__m512)(od), tw, n)

/* F(4x4, 3x3)'s column split (conv2d_winograd_kernel.h): four masked
 * 16-column loads; phase r of tiles 0 .. 7 permuted out of the first two,
 * of tiles 8 .. 15 out of the last two. */
static inline void wino4_split16(const float *rows[4], const int64_t cols[4], int64_t W,
                                 __m512 p[4])
{
    __m512 v[4];
    for (int k = 0; k < 4; k++)
        v[k] = rows[k] ? _mm512_maskz_loadu_ps(lane_range(-cols[k], W - cols[k]), rows[k] + cols[k])
                       : _mm512_setzero_ps();
    __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    for (int r = 0; r < 4; r++) {
        __m512i at = _mm512_add_epi32(idx, _mm512_set1_epi32(r));
        p[r] = _mm512_mask_blend_ps(0xff00, _mm512_permutex2var_ps(v[0], at, v[1]),
                                    _mm512_permutex2var_ps(v[2], at, v[3]));
    }
}
#define WINO4_SPLIT(rows, cols, W, p) wino4_split16(rows, cols, W, (__m512 *)(p))

/* The four phases y interleaved, chunk k (16 floats) stored masked to
 * dst[k]: phases 0, 1 and 2, 3 paired, then the pairs interleaved. */
static inline void wino4_merge16(float *dst[4], const int64_t n[4], const __m512 y[4])
{
    __m512i pair = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    __m512i quad = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
    __m512i eight = _mm512_set1_epi32(8);
    for (int h = 0; h < 2; h++) {       /* tiles 8 h .. 8 h + 7 */
        __m512i at = h ? _mm512_add_epi32(pair, eight) : pair;
        __m512 p01 = _mm512_permutex2var_ps(y[0], at, y[1]);
        __m512 p23 = _mm512_permutex2var_ps(y[2], at, y[3]);
        for (int q = 0; q < 2; q++) {   /* tiles 8 h + 4 q .. + 3: chunk 2 h + q */
            int k = 2 * h + q;
            __m512 out = _mm512_permutex2var_ps(p01, q ? _mm512_add_epi32(quad, eight) : quad, p23);
            if (dst[k])
                _mm512_mask_storeu_ps(dst[k], lane_range(0, n[k]), out);
        }
    }
}
#define WINO4_MERGE_STORE(dst, n, y) wino4_merge16(dst, n, (const __m512 *)(y))

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
