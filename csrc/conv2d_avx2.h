/* conv2d_avx2.h - conv2d_kernel.h's loops set up for AVX2: 8-float vectors;
 * the direct tile holds 4 channels x 3 vectors (12 of the 16 ymm
 * registers); part-vector stores (store_part_avx2.h) and masked loads for
 * row ends and the stride-1 im2col; the channel-vector epilogue's 8 x 8
 * register transpose (transpose_regs.h). Included by the
 * conv2d_<algorithm>_avx2.c files, each compiled with AVX2 + FMA flags. */
#ifndef FASTCNN_CONV2D_AVX2_H
#define FASTCNN_CONV2D_AVX2_H
#define DIRECT_VBYTES 32
#define DIRECT_ACC 12
#define DIRECT_STORE_PART(dst, vec, n) store_part8(dst, (__m256)(vec), n)
#include <immintrin.h>

#include "store_part_avx2.h"
#include "transpose_regs.h"

/* Lanes [lo, hi) of an 8-lane vector, as a maskload mask. */
static inline __m256i lane_range(int64_t lo, int64_t hi)
{
    lo = lo < -1 ? -1 : lo > 8 ? 8 : lo;
    hi = hi < -1 ? -1 : hi > 8 ? 8 : hi;
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32((int)lo - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32((int)hi), lane));
}
#define DIRECT_LOAD_RANGE(src, lo, hi) ((dvec)_mm256_maskload_ps(src, lane_range(lo, hi)))

#define KVEC_TRANSPOSE(m) transpose8((__m256 *)(m))

/* Winograd's column split (conv2d_winograd_kernel.h): 16 columns in two
 * masked loads, their even and odd floats shuffled apart. */
static inline void wino_split8(const float *row, int64_t c0, int64_t W, __m256 *ev, __m256 *od)
{
    __m256 a = _mm256_maskload_ps(row + c0, lane_range(-c0, W - c0));
    __m256 b = _mm256_maskload_ps(row + c0 + 8, lane_range(-c0 - 8, W - c0 - 8));
    *ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xd8));
    *od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xdd)), 0xd8));
}
#define WINO_SPLIT(row, c0, W, ev, od)                                          \
    do {                                                                        \
        __m256 e_, o_;     /* ev, od may be less aligned than __m256 */            \
        wino_split8(row, c0, W, &e_, &o_);                                      \
        (ev) = (dvec)e_, (od) = (dvec)o_;                                       \
    } while (0)

/* Winograd's column split for two rows of at most 4 tiles in one vector
 * (conv2d_winograd_kernel.h): one masked load of 8 columns from each row
 * (NULL: zeros), the even and odd floats of ra's first tw tiles permuted to
 * lanes 0 .. tw - 1, of rb's to lanes tw .. 2 tw - 1, and blended. */
typedef struct {
    __m256i a, b;       /* lane l: column 2 l of ra; 2 (l - tw) of rb */
    __m256 second;      /* lanes tw on */
} wino_pair_index;
static inline wino_pair_index wino_pair_index8(int64_t tw)
{
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), t = _mm256_set1_epi32((int)tw);
    __m256i second = _mm256_cmpgt_epi32(lane, _mm256_sub_epi32(t, _mm256_set1_epi32(1)));
    __m256i a = _mm256_add_epi32(lane, lane);
    wino_pair_index ix = {a, _mm256_and_si256(_mm256_sub_epi32(a, _mm256_add_epi32(t, t)), second),
                          _mm256_castsi256_ps(second)};
    return ix;
}
#define WINO_PAIR_INDEX(tw) wino_pair_index8(tw)

/* Lanes of a or b picked by the index pair (ia, ib) as ix.second says. */
static inline __m256 pick_pair8(__m256 a, __m256 b, __m256i ia, __m256i ib, __m256 second)
{
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(a, ia), _mm256_permutevar8x32_ps(b, ib),
                            second);
}

static inline void wino_split_pair8(const float *ra, const float *rb, int64_t c0, int64_t W,
                                    wino_pair_index ix, __m256 *ev, __m256 *od)
{
    __m256i in = lane_range(-c0, W - c0), one = _mm256_set1_epi32(1);
    __m256 a = ra ? _mm256_maskload_ps(ra + c0, in) : _mm256_setzero_ps();
    __m256 b = rb ? _mm256_maskload_ps(rb + c0, in) : _mm256_setzero_ps();
    *ev = pick_pair8(a, b, ix.a, ix.b, ix.second);
    *od = pick_pair8(a, b, _mm256_add_epi32(ix.a, one), _mm256_add_epi32(ix.b, one), ix.second);
}
#define WINO_SPLIT_PAIR(ra, rb, c0, W, idx, ev, od)                             \
    do {                                                                        \
        __m256 e_, o_;                                                          \
        wino_split_pair8(ra, rb, c0, W, idx, &e_, &o_);                         \
        (ev) = (dvec)e_, (od) = (dvec)o_;                                       \
    } while (0)

/* The first n (<= 16) floats of ev and od interleaved, to dst. */
static inline void wino_merge8(float *dst, __m256 ev, __m256 od, int64_t n)
{
    __m256 a = _mm256_unpacklo_ps(ev, od), b = _mm256_unpackhi_ps(ev, od);
    store_part8(dst, _mm256_permute2f128_ps(a, b, 0x20), (int)(n < 8 ? n : 8));
    if (n > 8)
        store_part8(dst + 8, _mm256_permute2f128_ps(a, b, 0x31), (int)(n - 8));
}
#define WINO_MERGE_STORE(dst, ev, od, n) wino_merge8(dst, (__m256)(ev), (__m256)(od), n)

/* The output side of WINO_SPLIT_PAIR: the first n (<= 8) floats of tiles
 * 0 .. tw - 1 of ev and od interleaved to da, of tiles tw .. 2 tw - 1 to db
 * (NULL: not stored). */
static inline void wino_merge_pair8(float *da, float *db, __m256 ev, __m256 od, int64_t tw,
                                    int64_t n)
{
    __m256i half = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    __m256i from_b = _mm256_add_epi32(half, _mm256_set1_epi32((int)tw));
    store_part8(da, _mm256_blend_ps(_mm256_permutevar8x32_ps(ev, half),
                                    _mm256_permutevar8x32_ps(od, half), 0xaa), (int)n);
    if (db)
        store_part8(db, _mm256_blend_ps(_mm256_permutevar8x32_ps(ev, from_b),
                                        _mm256_permutevar8x32_ps(od, from_b), 0xaa), (int)n);
}
#define WINO_MERGE_PAIR(da, db, ev, od, tw, n) \
    wino_merge_pair8(da, db, (__m256)(ev), (__m256)(od), tw, n)

/* Each 128-bit lane's 4 x 4 block of v[0 .. 3] transposed. */
static inline void transpose_lanes4x4(__m256 v[4])
{
    __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
    __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
    v[0] = _mm256_shuffle_ps(t0, t2, 0x44);
    v[1] = _mm256_shuffle_ps(t0, t2, 0xee);
    v[2] = _mm256_shuffle_ps(t1, t3, 0x44);
    v[3] = _mm256_shuffle_ps(t1, t3, 0xee);
}

/* F(4x4, 3x3)'s column split (conv2d_winograd_kernel.h): four 8-column
 * loads (masked across a row's ends); the lane transpose leaves phase r of
 * tiles 0, 2, 4, 6, 1, 3, 5, 7 in vector r, permuted to tile order. */
static inline void wino4_split8(const float *rows[4], const int64_t cols[4], int64_t W,
                                __m256 p[4])
{
    __m256 v[4];
    for (int k = 0; k < 4; k++) {
        int64_t at = cols[k];
        v[k] = !rows[k] || at + 8 <= 0 || at >= W ? _mm256_setzero_ps()
             : at >= 0 && at + 8 <= W ? _mm256_loadu_ps(rows[k] + at)
             : _mm256_maskload_ps(rows[k] + at, lane_range(-at, W - at));
    }
    transpose_lanes4x4(v);
    __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int r = 0; r < 4; r++)
        p[r] = _mm256_permutevar8x32_ps(v[r], order);
}
#define WINO4_SPLIT(rows, cols, W, p) wino4_split8(rows, cols, W, (__m256 *)(p))

/* The four phases y interleaved, chunk k (8 floats) stored in part to
 * dst[k]: the split's steps undone in reverse. */
static inline void wino4_merge8(float *dst[4], const int64_t n[4], const __m256 y[4])
{
    __m256 v[4];
    __m256i order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    for (int r = 0; r < 4; r++)
        v[r] = _mm256_permutevar8x32_ps(y[r], order);
    transpose_lanes4x4(v);
    for (int k = 0; k < 4; k++)
        if (dst[k])
            store_part8(dst[k], v[k], (int)n[k]);
}
#define WINO4_MERGE_STORE(dst, n, y) wino4_merge8(dst, n, (const __m256 *)(y))

/* Lanes lo .. hi of v to dst[0 .. hi - lo): moved down (permute), stored in part. */
static inline void store_run8(float *dst, __m256 v, int lo, int hi)
{
    if (lo > 0)
        v = _mm256_permutevar8x32_ps(v, _mm256_add_epi32(_mm256_set1_epi32(lo),
                                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    store_part8(dst, v, hi - lo);
}
#define KVEC_STORE_RUN(dst, vec, lo, hi) store_run8(dst, (__m256)(vec), lo, hi)
#include "conv2d_kernel.h"

#endif /* FASTCNN_CONV2D_AVX2_H */
