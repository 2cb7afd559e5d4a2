/* pool2d_avx2.c - csrc/pool2d_kernel.h's 2x2 tile loops (forward, and
 * backward routing) written with AVX2 intrinsics; the same results as the
 * header's loops. (gcc compiles the header's forward for AVX2 with a branch
 * per candidate wherever a row has fewer than 8 outputs left: LeNet-5's 14
 * and 5 wide maps.) */
#include <immintrin.h>

#include "pool2d_kernel.h"
#include "store_part_avx2.h"

/* The lanes where v replaces m (all ones): v > m, or v is NaN. */
static inline __m256 beats(__m256 v, __m256 m)
{
    return _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

/* The lanes below n (all ones); n may be <= 0 or >= 8. */
static inline __m256i lanes_below(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* *ev, *od = the even and odd ones of the 16 floats at r, of which the
 * first 2n (n <= 8) are read, the rest taken as zero. */
static inline void split16(__m256 *ev, __m256 *od, const float *r, int n)
{
    __m256 a, b;
    if (n == 8) {
        a = _mm256_loadu_ps(r), b = _mm256_loadu_ps(r + 8);
    } else {
        a = _mm256_maskload_ps(r, lanes_below(2 * n));
        b = _mm256_maskload_ps(r + 8, lanes_below(2 * n - 8));
    }
    /* per 128-bit half: a0 a2 b0 b2 | a4 a6 b4 b6; then the 64-bit pairs reordered */
    __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    *ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    *od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* y[0 .. n) = the maxima of n <= 8 tiles whose rows start at c0, c1 (2n
 * floats each); with am, am[0 .. n) = their flat indices, i0 and i1 those of
 * c0[0] and c1[0]. A tree (each row's pair, then the rows) that gives the
 * header's sequential scan's results: the first maximum, or the last NaN. */
static inline void tiles8(float *y, int32_t *am, const float *c0, const float *c1, int32_t i0,
                          int32_t i1, int n)
{
    __m256 a, b, c, d;
    split16(&a, &b, c0, n);
    split16(&c, &d, c1, n);
    __m256 tb = beats(b, a), td = beats(d, c);
    __m256 top = _mm256_blendv_ps(a, b, tb), bottom = _mm256_blendv_ps(c, d, td);
    __m256 tr = beats(bottom, top);
    __m256 m = _mm256_blendv_ps(top, bottom, tr);
    store_part8(y, m, n);
    if (!am)
        return;
    const __m256i cols = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    /* a taken odd column is one further: the mask's lanes are -1 */
    __m256i it = _mm256_sub_epi32(_mm256_add_epi32(_mm256_set1_epi32(i0), cols),
                                  _mm256_castps_si256(tb));
    __m256i ib = _mm256_sub_epi32(_mm256_add_epi32(_mm256_set1_epi32(i1), cols),
                                  _mm256_castps_si256(td));
    __m256i idx = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(it), _mm256_castsi256_ps(ib), tr));
    if (n == 8) {
        _mm256_storeu_si256((__m256i *)am, idx);
        return;
    }
    int32_t lanes[8];       /* no masked store (slow on AMD): the first n lanes by hand */
    _mm256_storeu_si256((__m256i *)lanes, idx);
    for (int j = 0; j < n; j++) am[j] = lanes[j];
}

/* Rows p of y (and am, when not NULL) from x (2P, W), 8 tiles at a time. */
static void max_rows_2x2(float *y, int32_t *am, const float *x, int64_t W, int64_t P, int64_t Q)
{
    for (int64_t p = 0; p < P; p++) {
        const float *r0 = x + 2 * p * W, *r1 = r0 + W;
        int32_t b0 = (int32_t)(2 * p * W), b1 = b0 + (int32_t)W;
        for (int64_t q = 0; q < Q; q += 8)
            tiles8(y + p * Q + q, am ? am + p * Q + q : NULL, r0 + 2 * q, r1 + 2 * q,
                   b0 + (int32_t)(2 * q), b1 + (int32_t)(2 * q), Q - q < 8 ? (int)(Q - q) : 8);
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

/* d[0 .. 2n) = ev and od interleaved (d[2i] = ev[i], d[2i + 1] = od[i]), n <= 8. */
static inline void store_interleaved(float *d, __m256 ev, __m256 od, int n)
{
    __m256 lo = _mm256_unpacklo_ps(ev, od), hi = _mm256_unpackhi_ps(ev, od);
    __m256 a = _mm256_permute2f128_ps(lo, hi, 0x20), b = _mm256_permute2f128_ps(lo, hi, 0x31);
    store_part8(d, a, 2 * n);
    store_part8(d + 8, b, 2 * n - 8);
}

/* The lanes where the even or odd ones of the 2n floats at m are > 0. */
static inline void positive(__m256 *ev, __m256 *od, const float *m, int n)
{
    split16(ev, od, m, n);
    *ev = _mm256_cmp_ps(*ev, _mm256_setzero_ps(), _CMP_GT_OQ);
    *od = _mm256_cmp_ps(*od, _mm256_setzero_ps(), _CMP_GT_OQ);
}

/* n <= 8 tiles of route_tiles_2x2: d0, d1 (2n floats of rows 2p, 2p + 1 at
 * column 2q, whose flat indices are c0, c1) from g, a (n each) and, if m0
 * is not NULL, the mask rows m0, m1 (2n each); returns the hits. */
static inline int route8(float *d0, float *d1, const float *g, const int32_t *a,
                         const float *m0, const float *m1, int32_t c0, int32_t c1, int n)
{
    const __m256i cols = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i one = _mm256_set1_epi32(1);
    __m256i in = lanes_below(n);
    __m256 gv = n == 8 ? _mm256_loadu_ps(g) : _mm256_maskload_ps(g, in);
    __m256i av = n == 8 ? _mm256_loadu_si256((const __m256i *)a)
                        : _mm256_maskload_epi32((const int *)a, in);
    gv = _mm256_add_ps(gv, _mm256_setzero_ps());    /* -0 -> +0 */
    __m256i e0 = _mm256_add_epi32(_mm256_set1_epi32(c0), cols);
    __m256i e1 = _mm256_add_epi32(_mm256_set1_epi32(c1), cols);
    __m256 h00 = _mm256_castsi256_ps(_mm256_and_si256(in, _mm256_cmpeq_epi32(av, e0)));
    __m256 h01 = _mm256_castsi256_ps(
        _mm256_and_si256(in, _mm256_cmpeq_epi32(av, _mm256_add_epi32(e0, one))));
    __m256 h10 = _mm256_castsi256_ps(_mm256_and_si256(in, _mm256_cmpeq_epi32(av, e1)));
    __m256 h11 = _mm256_castsi256_ps(
        _mm256_and_si256(in, _mm256_cmpeq_epi32(av, _mm256_add_epi32(e1, one))));
    int hits = __builtin_popcount((unsigned)_mm256_movemask_ps(h00))
             + __builtin_popcount((unsigned)_mm256_movemask_ps(h01))
             + __builtin_popcount((unsigned)_mm256_movemask_ps(h10))
             + __builtin_popcount((unsigned)_mm256_movemask_ps(h11));
    if (m0) {   /* a ReLU's output: only where it is > 0 */
        __m256 ev, od;
        positive(&ev, &od, m0, n);
        h00 = _mm256_and_ps(h00, ev), h01 = _mm256_and_ps(h01, od);
        positive(&ev, &od, m1, n);
        h10 = _mm256_and_ps(h10, ev), h11 = _mm256_and_ps(h11, od);
    }
    store_interleaved(d0, _mm256_and_ps(h00, gv), _mm256_and_ps(h01, gv), n);
    store_interleaved(d1, _mm256_and_ps(h10, gv), _mm256_and_ps(h11, gv), n);
    return hits;
}

/* csrc/pool2d_kernel.h's route_tiles_2x2, 8 tiles at a time. */
int64_t route_tiles_2x2_avx2(float *dx, const float *dy, const int32_t *am, const float *mask,
                             int64_t P, int64_t Q)
{
    int64_t W = 2 * Q, hits = 0;
    for (int64_t p = 0; p < P; p++) {
        int64_t r0 = 2 * p * W, r1 = r0 + W;
        for (int64_t q = 0; q < Q; q += 8)
            hits += route8(dx + r0 + 2 * q, dx + r1 + 2 * q, dy + p * Q + q, am + p * Q + q,
                           mask ? mask + r0 + 2 * q : NULL, mask ? mask + r1 + 2 * q : NULL,
                           (int32_t)(r0 + 2 * q), (int32_t)(r1 + 2 * q),
                           Q - q < 8 ? (int)(Q - q) : 8);
        if (hits != (p + 1) * Q)
            break;
    }
    return hits;
}

/* m, or v in the lanes where v beats it (the header's POOL2D_BEAT). */
static inline __m256 beat8(__m256 m, __m256 v)
{
    return _mm256_blendv_ps(m, v, beats(v, m));
}

/* Lane k = r[2k + 2], for k < n <= 8, given e (lane k = r[2k]); reads r[2 .. 2n]. */
static inline __m256 next_evens(__m256 e, const float *r, int n)
{
    if (n == 8) {       /* e's next lane; the last, r[16], loaded alone */
        const __m256i next = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
        return _mm256_blend_ps(_mm256_permutevar8x32_ps(e, next), _mm256_broadcast_ss(r + 16),
                               0x80);
    }
    /* the even ones of r[2 .. 2n] (not a gather: slower) */
    __m256 a = _mm256_maskload_ps(r + 2, lanes_below(2 * n - 1));
    __m256 b = _mm256_maskload_ps(r + 10, lanes_below(2 * n - 9));
    __m256 t = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* The scans of n <= 8 windows 3 wide at stride 2 along one input row: lane k
 * = the scan of r[2k], r[2k + 1], r[2k + 2] (read: r[0 .. 2n]). */
static inline __m256 row_windows3(const float *r, int n)
{
    __m256 e, o;
    split16(&e, &o, r, n);
    return beat8(beat8(e, o), next_evens(e, r, n));
}

/* The n <= 8 floats at r (lanes past n zero). */
static inline __m256 load_part8(const float *r, int n)
{
    return n == 8 ? _mm256_loadu_ps(r) : _mm256_maskload_ps(r, lanes_below(n));
}

/* The scans of n <= 8 windows 3 wide at stride 1 along one input row: lane k
 * = the scan of r[k], r[k + 1], r[k + 2] (read: r[0 .. n + 2)). */
static inline __m256 row_windows3s1(const float *r, int n)
{
    return beat8(beat8(load_part8(r, n), load_part8(r + 1, n)), load_part8(r + 2, n));
}

/* The header's max_values_cols for 3-wide windows at stride 2 (ResNet's
 * stem pooling) or 1: 8 output columns at a time, each input row's windows
 * scanned in registers (at stride 2 its even and odd columns split by
 * shuffles), then the rows top to bottom: the header's order, so the same
 * values bit for bit. */
static void max_values_cols3(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                             int64_t dh, int64_t qa, int64_t qb, int64_t sw, int64_t pw)
{
    for (int64_t q = qa; q < qb; q += 8) {
        int n = qb - q < 8 ? (int)(qb - q) : 8;
        const float *c = x + sw * q - pw;
        __m256 m = sw == 2 ? row_windows3(c + h0 * W, n) : row_windows3s1(c + h0 * W, n);
        for (int64_t h = h0 + dh; h < h1; h += dh)
            m = beat8(m, sw == 2 ? row_windows3(c + h * W, n) : row_windows3s1(c + h * W, n));
        store_part8(y + q, m, n);
    }
}

/* The header's values-only row of any window, compiled for AVX2; 3-wide
 * windows at stride 1 and 2 in registers. */
void max_values_row_avx2(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                         int64_t dh, int64_t qa, int64_t qb, int S, int64_t sw, int64_t dw,
                         int64_t pw)
{
    if (S == 3 && (sw == 1 || sw == 2) && dw == 1)
        max_values_cols3(y, x, W, h0, h1, dh, qa, qb, sw, pw);
    else
        max_values_row(y, x, W, h0, h1, dh, qa, qb, S, sw, dw, pw);
}

/* The header's avg_values_cols for 2- or 3-wide windows at stride 2: 8
 * output columns at a time, each input row's even and odd columns split by
 * shuffles, the sums kept in registers and added in the header's order (row
 * by row, left to right), so the same bits. (gcc builds the header's loop
 * for AVX2 with a scalar insert per strided read: 2-3x slower than the
 * portable build's.) */
static void avg_cols_s2(float *y, const float *x, int64_t W, int64_t h0, int64_t h1, int64_t qa,
                        int64_t qb, int S, int64_t pw, float n)
{
    for (int64_t q = qa; q < qb; q += 8) {
        int m = qb - q < 8 ? (int)(qb - q) : 8;
        const float *c = x + 2 * q - pw;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t h = h0; h < h1; h++) {
            __m256 e, o;
            split16(&e, &o, c + h * W, m);
            acc = _mm256_add_ps(_mm256_add_ps(acc, e), o);
            if (S == 3)
                acc = _mm256_add_ps(acc, next_evens(e, c + h * W, m));
        }
        store_part8(y + q, _mm256_div_ps(acc, _mm256_set1_ps(n)), m);
    }
}

/* The header's average row, compiled for AVX2; 2- and 3-wide windows at
 * stride 2 in registers. */
void avg_values_row_avx2(float *y, const float *x, int64_t W, int64_t h0, int64_t h1, int64_t qa,
                         int64_t qb, int S, int64_t sw, int64_t pw, float n)
{
    if ((S == 2 || S == 3) && sw == 2)
        avg_cols_s2(y, x, W, h0, h1, qa, qb, S, pw, n);
    else
        avg_values_row(y, x, W, h0, h1, qa, qb, S, sw, pw, n);
}

/* row_windows3 with the column (0, 1 or 2) of each lane's pick in *col. */
static inline __m256 row_picks3(const float *r, int n, __m256i *col)
{
    __m256 e, o;
    split16(&e, &o, r, n);
    __m256 b1 = beats(o, e), w = _mm256_blendv_ps(e, o, b1);
    __m256 e1 = next_evens(e, r, n), b2 = beats(e1, w);
    /* b1's lanes are -1 where the odd column was taken: 0 - b1 is its column */
    __m256i c1 = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_castps_si256(b1));
    *col = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(c1),
                                                _mm256_castsi256_ps(_mm256_set1_epi32(2)), b2));
    return _mm256_blendv_ps(w, e1, b2);
}

/* The indexed rows of max pooling by 3-wide windows at stride 2 (ResNet's
 * stem pooling in training; pool2d.c's max_cols_s2): max_values_cols3 with each lane's flat index
 * h W - pw + 2 q + its pick's column, replaced where a row's pick replaces
 * the value (the row-major scan's pick: its first maximum or last NaN). */
void max_indexed_3s2_avx2(float *y, int32_t *am, const float *x, int64_t W, int64_t h0,
                          int64_t h1, int64_t dh, int64_t qa, int64_t qb, int64_t pw)
{
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    for (int64_t q = qa; q < qb; q += 8) {
        int n = qb - q < 8 ? (int)(qb - q) : 8;
        const float *c = x + 2 * q - pw;
        __m256i col, cols = _mm256_add_epi32(even, _mm256_set1_epi32((int32_t)(2 * q - pw)));
        __m256 m = row_picks3(c + h0 * W, n, &col);
        __m256i idx = _mm256_add_epi32(_mm256_add_epi32(cols, col),
                                       _mm256_set1_epi32((int32_t)(h0 * W)));
        for (int64_t h = h0 + dh; h < h1; h += dh) {
            __m256 v = row_picks3(c + h * W, n, &col), b = beats(v, m);
            __m256i at = _mm256_add_epi32(_mm256_add_epi32(cols, col),
                                          _mm256_set1_epi32((int32_t)(h * W)));
            m = _mm256_blendv_ps(m, v, b);
            idx = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(idx),
                                                       _mm256_castsi256_ps(at), b));
        }
        store_part8(y + q, m, n);
        if (n == 8) {
            _mm256_storeu_si256((__m256i *)(am + q), idx);
            continue;
        }
        int32_t lanes[8];   /* no masked store (slow on AMD): the first n lanes by hand */
        _mm256_storeu_si256((__m256i *)lanes, idx);
        for (int j = 0; j < n; j++) am[q + j] = lanes[j];
    }
}
