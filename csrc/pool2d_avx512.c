/* pool2d_avx512.c - csrc/pool2d_kernel.h's 2x2 tile loops (forward, and
 * backward routing), the values-only rows of 3-wide stride-2 windows and
 * the average's rows of 2- and 3-wide stride-2 windows, written with AVX512
 * intrinsics (gcc vectorizes their stride-2 accesses poorly, and not at all
 * on rows narrower than a vector); the same results as the header's loops.
 * A row's last part is read with full loads (chunk_start), not masked ones. */
#include <immintrin.h>

#include "pool2d_kernel.h"

/* The mask of lanes where v replaces m: v > m, or v is NaN. */
static inline __mmask16 beats(__m512 v, __m512 m)
{
    return _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
}

/* The mask of the first n <= 16 lanes. */
static inline __mmask16 first_lanes(int n)
{
    return (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1);
}

/* The first column of the 16-wide chunk that covers column q of the columns
 * [a, b): q, or b - 16 for a last part shorter than 16 when there are 16
 * columns at least. That chunk overlaps the one before it, whose outputs it
 * writes again (the same values), instead of reading a partial vector: a
 * masked load with lanes masked off took 59% of max_values_2x2's time on a
 * 56-wide map on Zen 5 (full loads: 2.5x faster in all). */
static inline int64_t chunk_start(int64_t q, int64_t a, int64_t b)
{
    return q + 16 <= b || b - a < 16 ? q : b - 16;
}

/* The outputs of the chunk from column s (chunk_start's) that covers [s, b). */
static inline int chunk_width(int64_t s, int64_t b)
{
    return b - s < 16 ? (int)(b - s) : 16;
}

/* *l, *h = the 32 floats at r, the first 2n of them loaded (the rest zero). */
static inline void load32(__m512 *l, __m512 *h, const float *r, int n)
{
    if (n == 16) {
        *l = _mm512_loadu_ps(r), *h = _mm512_loadu_ps(r + 16);
    } else {
        *l = _mm512_maskz_loadu_ps(first_lanes(2 * n), r);
        *h = _mm512_maskz_loadu_ps(first_lanes(2 * n - 16 > 0 ? 2 * n - 16 : 0), r + 16);
    }
}

/* Even (0) and odd (1) lanes of the 32 floats at r, the first 2n of them
 * loaded (the rest zero). */
static inline void split32(__m512 *ev, __m512 *od, const float *r, int n)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    __m512 l, h;
    load32(&l, &h, r, n);
    *ev = _mm512_permutex2var_ps(l, even, h);
    *od = _mm512_permutex2var_ps(l, odd, h);
}

/* split32's even and odd lanes in the order of in-lane shuffles: per 128-bit
 * lane L, floats 4L and 4L + 2 (or 4L + 1, 4L + 3) of r, then of r + 16.
 * Cheaper than split32's cross-lane permutes; a lane-wise result goes back
 * to the columns' order with one unshuffle. */
static inline void split32_shuffled(__m512 *ev, __m512 *od, const float *r, int n)
{
    __m512 l, h;
    load32(&l, &h, r, n);
    *ev = _mm512_shuffle_ps(l, h, _MM_SHUFFLE(2, 0, 2, 0));
    *od = _mm512_shuffle_ps(l, h, _MM_SHUFFLE(3, 1, 3, 1));
}

/* The lanes of split32_shuffled's order in the columns' order. */
static inline __m512 unshuffle(__m512 v)
{
    const __m512i pairs = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
    return _mm512_castpd_ps(_mm512_permutexvar_pd(pairs, _mm512_castps_pd(v)));
}

/* The four candidates of 16 (or n < 16: the rest zero) tiles from rows r0,
 * r1 at column 2q: t[0], t[1] r0's even and odd columns, t[2], t[3] r1's. */
static inline void load_tiles16(__m512 t[4], const float *r0, const float *r1, int64_t q, int n)
{
    split32(&t[0], &t[1], r0 + 2 * q, n);
    split32(&t[2], &t[3], r1 + 2 * q, n);
}

/* Tiles whose 32 floats from row r1 at column 2q lie inside the plane ending
 * at end: loaded whole (16), whatever their outputs n, the lanes past them
 * computed and not stored; else n (masked loads). A plane's rows but its
 * last are followed by more of it. Zen 4, 1 thread, values only: 64 x 6 x
 * 28 x 28 1.24x faster than masked loads, 64 x 16 x 10 x 10 1.18x. */
static inline int tiles_loaded(const float *r1, int64_t q, const float *end, int n)
{
    return r1 + 2 * q + 32 <= end ? 16 : n;
}

/* 16 (or n < 16: masked) outputs of max_tiles_2x2 from rows r0, r1 at column
 * 2q, ln tiles loaded (tiles_loaded); b0, b1 the flat indices of the rows'
 * first elements. A tree (each row's pair, then the rows) that gives the
 * header's sequential scan's results: the first maximum, or the last NaN. */
static inline void tiles16(float *y, int32_t *am, const float *r0, const float *r1,
                           int32_t b0, int32_t b1, int64_t q, int n, int ln)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i one = _mm512_set1_epi32(1);
    __m512 t[4];
    load_tiles16(t, r0, r1, q, ln);
    __mmask16 tb = beats(t[1], t[0]), td = beats(t[3], t[2]), out = first_lanes(n);
    __m512 top = _mm512_mask_blend_ps(tb, t[0], t[1]);
    __m512 bottom = _mm512_mask_blend_ps(td, t[2], t[3]);
    __m512i col = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(2 * q)), even);
    __m512i i0 = _mm512_add_epi32(col, _mm512_set1_epi32(b0));
    __m512i i1 = _mm512_add_epi32(col, _mm512_set1_epi32(b1));
    __m512i it = _mm512_mask_add_epi32(i0, tb, i0, one);
    __m512i ib = _mm512_mask_add_epi32(i1, td, i1, one);
    __mmask16 tr = beats(bottom, top);
    _mm512_mask_storeu_ps(y + q, out, _mm512_mask_blend_ps(tr, top, bottom));
    _mm512_mask_storeu_epi32(am + q, out, _mm512_mask_blend_epi32(tr, it, ib));
}

/* tiles16's values alone (inference), lane-wise in split32_shuffled's order. */
static inline void values16(float *y, const float *r0, const float *r1, int64_t q, int n, int ln)
{
    __m512 t[4];
    split32_shuffled(&t[0], &t[1], r0 + 2 * q, ln);
    split32_shuffled(&t[2], &t[3], r1 + 2 * q, ln);
    __m512 top = _mm512_mask_blend_ps(beats(t[1], t[0]), t[0], t[1]);
    __m512 bottom = _mm512_mask_blend_ps(beats(t[3], t[2]), t[2], t[3]);
    __m512 m = _mm512_mask_blend_ps(beats(bottom, top), top, bottom);
    _mm512_mask_storeu_ps(y + q, first_lanes(n), unshuffle(m));
}

void max_tiles_2x2_avx512(float *y, int32_t *am, const float *x, int64_t W, int64_t P, int64_t Q)
{
    const float *end = x + 2 * P * W;
    for (int64_t p = 0; p < P; p++) {
        const float *r0 = x + 2 * p * W, *r1 = r0 + W;
        int32_t b0 = (int32_t)(2 * p * W), b1 = b0 + (int32_t)W;
        for (int64_t q = 0; q < Q; q += 16) {
            int64_t s = chunk_start(q, 0, Q);
            int n = chunk_width(s, Q);
            tiles16(y + p * Q, am + p * Q, r0, r1, b0, b1, s, n, tiles_loaded(r1, s, end, n));
        }
    }
}

/* The values-only loop (inference). (The header's loop, compiled for
 * AVX-512, ran scalar with a branch per candidate on maps narrower than 16
 * outputs: 55% of a LeNet-5 inference at batch 256.) */
void max_values_2x2_avx512(float *y, const float *x, int64_t W, int64_t P, int64_t Q)
{
    const float *end = x + 2 * P * W;
    for (int64_t p = 0; p < P; p++) {
        const float *r0 = x + 2 * p * W, *r1 = r0 + W;
        for (int64_t q = 0; q < Q; q += 16) {
            int64_t s = chunk_start(q, 0, Q);
            int n = chunk_width(s, Q);
            values16(y + p * Q, r0, r1, s, n, tiles_loaded(r1, s, end, n));
        }
    }
}

/* d[0 .. 2n) = ev and od interleaved (d[2i] = ev[i], d[2i + 1] = od[i]);
 * masked stores only for a row's last tiles (masked stores throughout made
 * this loop 2x slower than the portable one on Zen 5). */
static inline void store_interleaved(float *d, __m512 ev, __m512 od, int n)
{
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    __m512 a = _mm512_permutex2var_ps(ev, lo, od), b = _mm512_permutex2var_ps(ev, hi, od);
    if (n == 16) {
        _mm512_storeu_ps(d, a);
        _mm512_storeu_ps(d + 16, b);
        return;
    }
    _mm512_mask_storeu_ps(d, first_lanes(2 * n), a);
    _mm512_mask_storeu_ps(d + 16, first_lanes(2 * n - 16 > 0 ? 2 * n - 16 : 0), b);
}

/* One row of tiles (at column 2q of rows r0 = d0, r1 = d1 of dx; c0, c1 the
 * flat indices of their column 2q) for n <= 16 outputs: route_tiles_2x2's
 * stores; returns its hits, not counting the first `skip` tiles (routed
 * before: chunk_start's overlap). */
static inline int route16(float *d0, float *d1, const float *g, const int32_t *a,
                          const float *m0, const float *m1, int32_t c0, int32_t c1, int n,
                          int skip)
{
    const __m512i cols = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i one = _mm512_set1_epi32(1);
    __mmask16 out = first_lanes(n), fresh = out & (__mmask16)~first_lanes(skip);
    __m512 gv = n == 16 ? _mm512_loadu_ps(g) : _mm512_maskz_loadu_ps(out, g);
    __m512i av = n == 16 ? _mm512_loadu_si512(a) : _mm512_maskz_loadu_epi32(out, a);
    gv = _mm512_add_ps(gv, _mm512_setzero_ps());    /* -0 -> +0 */
    __m512i e0 = _mm512_add_epi32(_mm512_set1_epi32(c0), cols);
    __m512i e1 = _mm512_add_epi32(_mm512_set1_epi32(c1), cols);
    __mmask16 h00 = _mm512_mask_cmpeq_epi32_mask(out, av, e0);
    __mmask16 h01 = _mm512_mask_cmpeq_epi32_mask(out, av, _mm512_add_epi32(e0, one));
    __mmask16 h10 = _mm512_mask_cmpeq_epi32_mask(out, av, e1);
    __mmask16 h11 = _mm512_mask_cmpeq_epi32_mask(out, av, _mm512_add_epi32(e1, one));
    int hits = __builtin_popcount(h00 & fresh) + __builtin_popcount(h01 & fresh)
             + __builtin_popcount(h10 & fresh) + __builtin_popcount(h11 & fresh);
    if (m0) {   /* a ReLU's output: only where it is > 0 */
        __m512 ev, od;
        split32(&ev, &od, m0, n);
        h00 &= _mm512_cmp_ps_mask(ev, _mm512_setzero_ps(), _CMP_GT_OQ);
        h01 &= _mm512_cmp_ps_mask(od, _mm512_setzero_ps(), _CMP_GT_OQ);
        split32(&ev, &od, m1, n);
        h10 &= _mm512_cmp_ps_mask(ev, _mm512_setzero_ps(), _CMP_GT_OQ);
        h11 &= _mm512_cmp_ps_mask(od, _mm512_setzero_ps(), _CMP_GT_OQ);
    }
    store_interleaved(d0, _mm512_maskz_mov_ps(h00, gv), _mm512_maskz_mov_ps(h01, gv), n);
    store_interleaved(d1, _mm512_maskz_mov_ps(h10, gv), _mm512_maskz_mov_ps(h11, gv), n);
    return hits;
}

/* csrc/pool2d_kernel.h's route_tiles_2x2, 16 tiles at a time. */
int64_t route_tiles_2x2_avx512(float *dx, const float *dy, const int32_t *am, const float *mask,
                               int64_t P, int64_t Q)
{
    int64_t W = 2 * Q, hits = 0;
    for (int64_t p = 0; p < P; p++) {
        int64_t r0 = 2 * p * W, r1 = r0 + W;
        for (int64_t q = 0; q < Q; q += 16) {
            int64_t s = chunk_start(q, 0, Q);
            hits += route16(dx + r0 + 2 * s, dx + r1 + 2 * s, dy + p * Q + s, am + p * Q + s,
                            mask ? mask + r0 + 2 * s : NULL, mask ? mask + r1 + 2 * s : NULL,
                            (int32_t)(r0 + 2 * s), (int32_t)(r1 + 2 * s), chunk_width(s, Q),
                            (int)(q - s));
        }
        if (hits != (p + 1) * Q)
            break;
    }
    return hits;
}

int64_t route_small_2x2_avx512(float *dx, const float *dy, const int32_t *am, const float *mask,
                               const int32_t *tile_of, int64_t P, int64_t Q)
{
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int PQ = (int)(P * Q), HW = 4 * PQ, hits = 0;
    __mmask16 lo = first_lanes(PQ), hi = PQ > 16 ? first_lanes(PQ - 16) : 0;
    __m512 g0 = _mm512_add_ps(_mm512_maskz_loadu_ps(lo, dy), _mm512_setzero_ps()); /* -0 -> +0 */
    __m512 g1 = _mm512_add_ps(_mm512_maskz_loadu_ps(hi, dy + 16), _mm512_setzero_ps());
    __m512i a0 = _mm512_maskz_loadu_epi32(lo, am), a1 = _mm512_maskz_loadu_epi32(hi, am + 16);
    for (int i = 0; i < HW; i += 16) {
        __mmask16 in = first_lanes(HW - i);
        __m512i tile = _mm512_maskz_loadu_epi32(in, tile_of + i);
        __m512i at = _mm512_add_epi32(_mm512_set1_epi32(i), lane);
        __mmask16 hit = _mm512_mask_cmpeq_epi32_mask(
            in, _mm512_permutex2var_epi32(a0, tile, a1), at);
        hits += __builtin_popcount(hit);
        if (mask)   /* a ReLU's output: only where it is > 0 */
            hit &= _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(in, mask + i), _mm512_setzero_ps(),
                                      _CMP_GT_OQ);
        _mm512_mask_storeu_ps(dx + i, in,
                              _mm512_maskz_mov_ps(hit, _mm512_permutex2var_ps(g0, tile, g1)));
    }
    return hits;
}

/* The columns of 16 (or n < 16: the rest zero) windows 3 wide at stride 2
 * from c: *ev, *od, *ev1 lane k = c[2k], c[2k + 1], c[2k + 2]; columns
 * c[0 .. 2n] read and no further. */
static inline void columns3s2(__m512 *ev, __m512 *od, __m512 *ev1, const float *c, int n)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i next = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                           16);
    int m = 2 * n + 1;      /* columns read */
    __m512 a, b, t;
    if (n == 16) {
        a = _mm512_loadu_ps(c), b = _mm512_loadu_ps(c + 16), t = _mm512_set1_ps(c[32]);
    } else {
        a = _mm512_maskz_loadu_ps(first_lanes(m), c);
        b = _mm512_maskz_loadu_ps(first_lanes(m - 16 > 0 ? m - 16 : 0), c + 16);
        t = _mm512_maskz_loadu_ps(first_lanes(m - 32 > 0 ? m - 32 : 0), c + 32);
    }
    *ev = _mm512_permutex2var_ps(a, even, b);
    *od = _mm512_permutex2var_ps(a, _mm512_add_epi32(even, _mm512_set1_epi32(1)), b);
    *ev1 = _mm512_permutex2var_ps(*ev, next, t);
}

/* 16 (or n < 16: masked) windows 3 wide at stride 2 of the row r from
 * column 2q: their scan (the first maximum, or the last NaN). */
static inline __m512 windows3s2(const float *r, int64_t q, int n)
{
    __m512 ev, od, ev1;
    columns3s2(&ev, &od, &ev1, r + 2 * q, n);
    __m512 w = _mm512_mask_blend_ps(beats(od, ev), ev, od);
    return _mm512_mask_blend_ps(beats(ev1, w), w, ev1);
}

/* max_values_row for 3-wide windows at stride 2 (ResNet's 3x3 stride-2
 * pooling): 16 windows of each row at a time, rows combined by the same
 * rule (the row-major scan). */
static void values_3s2(float *y, const float *x, int64_t W, int64_t h0, int64_t h1, int64_t dh,
                       int64_t qa, int64_t qb, int64_t pw)
{
    for (int64_t q = qa; q < qb; q += 16) {
        int64_t s = chunk_start(q, qa, qb);
        int n = chunk_width(s, qb);
        __m512 acc = windows3s2(x + h0 * W - pw, s, n);
        for (int64_t h = h0 + dh; h < h1; h += dh) {
            __m512 v = windows3s2(x + h * W - pw, s, n);
            acc = _mm512_mask_blend_ps(beats(v, acc), acc, v);
        }
        _mm512_mask_storeu_ps(y + s, first_lanes(n), acc);
    }
}

/* The header's values-only row of any window, compiled for AVX-512; 3-wide
 * windows at stride 2 through values_3s2. */
void max_values_row_avx512(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                           int64_t dh, int64_t qa, int64_t qb, int S, int64_t sw, int64_t dw,
                           int64_t pw)
{
    if (S == 3 && sw == 2 && dw == 1)
        values_3s2(y, x, W, h0, h1, dh, qa, qb, pw);
    else
        max_values_row(y, x, W, h0, h1, dh, qa, qb, S, sw, dw, pw);
}

/* The header's avg_values_cols for 2- or 3-wide windows at stride 2: 16
 * output columns at a time (chunk_start's overlap for a row's last part),
 * each input row's even and odd columns split by permutes, the sums kept in
 * registers and added in the header's order (row by row, left to right), so
 * the same bits. */
static void avg_cols_s2(float *y, const float *x, int64_t W, int64_t h0, int64_t h1, int64_t qa,
                        int64_t qb, int S, int64_t pw, float n)
{
    for (int64_t q = qa; q < qb; q += 16) {
        int64_t s = chunk_start(q, qa, qb);
        int m = chunk_width(s, qb);
        const float *c = x + 2 * s - pw;
        __m512 acc = _mm512_setzero_ps();
        for (int64_t h = h0; h < h1; h++) {
            __m512 e, o, e1;
            if (S == 3) {
                columns3s2(&e, &o, &e1, c + h * W, m);
                acc = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(acc, e), o), e1);
            } else {    /* lane-wise sums: in split32_shuffled's order */
                split32_shuffled(&e, &o, c + h * W, m);
                acc = _mm512_add_ps(_mm512_add_ps(acc, e), o);
            }
        }
        if (S != 3)
            acc = unshuffle(acc);
        _mm512_mask_storeu_ps(y + s, first_lanes(m), _mm512_div_ps(acc, _mm512_set1_ps(n)));
    }
}

/* The header's average row, compiled for AVX-512; 2- and 3-wide windows at
 * stride 2 in registers. */
void avg_values_row_avx512(float *y, const float *x, int64_t W, int64_t h0, int64_t h1,
                           int64_t qa, int64_t qb, int S, int64_t sw, int64_t pw, float n)
{
    if ((S == 2 || S == 3) && sw == 2)
        avg_cols_s2(y, x, W, h0, h1, qa, qb, S, pw, n);
    else
        avg_values_row(y, x, W, h0, h1, qa, qb, S, sw, pw, n);
}

/* windows3s2 with the column (0, 1 or 2) of each window's pick in *col. */
static inline __m512 picks3s2(const float *r, int64_t q, int n, __m512i *col)
{
    __m512 ev, od, ev1;
    columns3s2(&ev, &od, &ev1, r + 2 * q, n);
    __mmask16 b1 = beats(od, ev);
    __m512 w = _mm512_mask_blend_ps(b1, ev, od);
    __mmask16 b2 = beats(ev1, w);
    *col = _mm512_mask_blend_epi32(b2, _mm512_maskz_set1_epi32(b1, 1), _mm512_set1_epi32(2));
    return _mm512_mask_blend_ps(b2, w, ev1);
}

/* The indexed rows of max pooling by 3-wide windows at stride 2 (ResNet's
 * 3x3 stride-2 pooling in training; pool2d.c's max_cols_s2): values_3s2 with each lane's flat index
 * h W - pw + 2 q + its pick's column, replaced where a row's pick replaces
 * the value (the row-major scan's pick: its first maximum or last NaN). */
void max_indexed_3s2_avx512(float *y, int32_t *am, const float *x, int64_t W, int64_t h0,
                            int64_t h1, int64_t dh, int64_t qa, int64_t qb, int64_t pw)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    for (int64_t q = qa; q < qb; q += 16) {
        int64_t s = chunk_start(q, qa, qb);
        int n = chunk_width(s, qb);
        __m512i col, cols = _mm512_add_epi32(even, _mm512_set1_epi32((int32_t)(2 * s - pw)));
        __m512 acc = picks3s2(x + h0 * W - pw, s, n, &col);
        __m512i idx = _mm512_add_epi32(_mm512_add_epi32(cols, col),
                                       _mm512_set1_epi32((int32_t)(h0 * W)));
        for (int64_t h = h0 + dh; h < h1; h += dh) {
            __m512 v = picks3s2(x + h * W - pw, s, n, &col);
            __mmask16 b = beats(v, acc);
            acc = _mm512_mask_blend_ps(b, acc, v);
            idx = _mm512_mask_blend_epi32(
                b, idx, _mm512_add_epi32(_mm512_add_epi32(cols, col),
                                         _mm512_set1_epi32((int32_t)(h * W))));
        }
        _mm512_mask_storeu_ps(y + s, first_lanes(n), acc);
        _mm512_mask_storeu_epi32(am + s, first_lanes(n), idx);
    }
}
