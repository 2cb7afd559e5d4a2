/* conv2d_winograd_kernel.h - the filter, input and output transforms of the Winograd
 * F(2x2, 3x3) and F(4x4, 3x3) convolutions (conv2d_winograd.c), compiled once per instruction
 * set: loops over runs of tiles in the vectors of conv2d_kernel.h (dvec),
 * defined where a file has set those up (conv2d_generic.h, conv2d_avx2.h,
 * conv2d_avx512.h) before conv2d_internal.h includes this one; only inline
 * code here.
 *
 * A tile is 2x2 outputs, (2i .. 2i+1, 2j .. 2j+1), and reads the 4x4 input
 * window d starting at (2i - ph, 2j - pw) (zero outside the plane). With
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  A^T = [1 1 1 0; 0 1 -1 -1]
 * the input transform is u = B^T d B (16 values, position xi = 4 a + b), the
 * product m = sum over channels of u times the transformed weights, and the
 * output transform y = A^T m A (2x2). Tiles are numbered row by row, image
 * by image; each of the 16 values of a run of tiles is contiguous.
 *
 * F(4x4, 3x3) (g->m = 4) takes tiles of 4x4 outputs, (4i .. 4i+3, 4j ..
 * 4j+3), from 6x6 windows at (4i - ph, 4j - pw), with the points 0, 1, -1,
 * 2, -2 and infinity:
 *   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0;
 *          0 2 -1 -2 1 0; 0 4 0 -5 0 1],
 *   G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6;
 *        1/24 -1/12 1/6; 0 0 1],
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]:
 * 36 values per tile (xi = 6 a + b), 36 products per 16 outputs instead of
 * 16 per 4, at a per-layer error 3-7 times torch's (bench/CONV2D.md). */
#ifndef FASTCNN_CONV2D_WINOGRAD_KERNEL_H
#define FASTCNN_CONV2D_WINOGRAD_KERNEL_H

#include <stdint.h>
#include <string.h>

/* Tiles one transform call takes at most (one row segment). */
#define WINO_SEG 64

/* One convolution as the transforms see it: C input planes (H, W), K output
 * planes (P, Q), top/left padding ph, pw, th x tw tiles of m x m outputs
 * per image (m = 2 or 4). */
typedef struct {
    int64_t C, K, H, W, P, Q, ph, pw, m, th, tw;
    int64_t clamp;      /* outputs clamped to [lo, hi] (conv2d_shape's clamp) */
    float lo, hi;
} wino_geom;

#ifdef DIRECT_VBYTES     /* the vectors of conv2d_kernel.h: an instruction set's build */

static inline void wino_split_checked(float *ev, float *od, const float *row, int64_t c0,
                                      int64_t k0, int64_t k1, int64_t W)
{
    for (int64_t k = k0; k < k1; k++) {
        int64_t c = c0 + 2 * k;
        ev[k] = c >= 0 && c < W ? row[c] : 0.0f;
        od[k] = c + 1 >= 0 && c + 1 < W ? row[c + 1] : 0.0f;
    }
}

/* WINO_SPLIT(row, c0, W, ev, od): ev[l] = row[c0 + 2l], od[l] = row[c0 + 2l
 * + 1] for the VL lanes l, zero outside [0, W); nothing outside it read. An
 * including file may define it with masked loads and permutes, else a
 * plain loop. */
#ifndef WINO_SPLIT
#define WINO_SPLIT(row, c0, W, ev, od) wino_split_lanes(row, c0, W, &(ev), &(od))
static inline void wino_split_lanes(const float *row, int64_t c0, int64_t W, dvec *ev, dvec *od)
{
    float e[DIRECT_VL], o[DIRECT_VL];
    wino_split_checked(e, o, row, c0, 0, DIRECT_VL, W);
    memcpy(ev, e, sizeof e);
    memcpy(od, o, sizeof o);
}
#endif

/* Whether the tiles from tile j of row i of tiles on (left of them in the run)
 * start two whole rows of tiles that fit one vector together. */
static inline int wino_pair_fits(const wino_geom *g, int64_t i, int64_t j, int64_t left)
{
    return 2 * g->tw <= DIRECT_VL && j == 0 && left >= 2 * g->tw && i + 1 < g->th;
}

/* u[xi us + t + l] (xi < 16, l < cnt) = B^T d B of the vector of tiles whose
 * window rows r are split into d[r] (columns 0 .. 3 of each tile). */
static inline void wino_input_store(float *restrict u, int64_t us, int64_t t, int64_t cnt,
                                    const dvec d[4][4])
{
    dvec v[4][4];       /* d B: rows of the window, columns transformed */
    for (int r = 0; r < 4; r++) {
        v[r][0] = d[r][0] - d[r][2];
        v[r][1] = d[r][1] + d[r][2];
        v[r][2] = d[r][2] - d[r][1];
        v[r][3] = d[r][1] - d[r][3];
    }
    for (int b = 0; b < 4; b++) {
        dvec col[4] = {v[0][b] - v[2][b], v[1][b] + v[2][b], v[2][b] - v[1][b],
                       v[1][b] - v[3][b]};
        for (int a = 0; a < 4; a++) {
            float *dst = u + (4 * a + b) * us + t;
            if (cnt == DIRECT_VL)
                *(dvec *)dst = col[a];
            else
                DIRECT_STORE_PART(dst, col[a], (int)cnt);
        }
    }
}

#ifdef WINO_SPLIT_PAIR
/* The tiles of rows i and i + 1 of tiles (tw <= VL / 2 each) in one vector
 * (WINO_SPLIT_PAIR): a narrow map's window rows loaded, split, transformed
 * and stored once for 2 tw tiles instead of once per row. */
static inline void wino_input_pair(float *restrict u, int64_t us, int64_t t, const float *x,
                                   int64_t i, wino_pair_index idx, const wino_geom *g)
{
    dvec d[4][4];
    for (int r = 0; r < 4; r++) {
        int64_t h = 2 * i - g->ph + r;
        const float *ra = h >= 0 && h < g->H ? x + h * g->W : NULL;
        const float *rb = h + 2 >= 0 && h + 2 < g->H ? x + (h + 2) * g->W : NULL;
        WINO_SPLIT_PAIR(ra, rb, -g->pw, g->W, idx, d[r][0], d[r][1]);
        WINO_SPLIT_PAIR(ra, rb, 2 - g->pw, g->W, idx, d[r][2], d[r][3]);
    }
    wino_input_store(u, us, t, 2 * g->tw, d);
}
#endif

/* u[xi us + t] (xi < 16, t < n) = B^T d B of the n tiles that follow tile
 * (i0, j0) of one input plane x (H, W) in row-major order (rows of tiles
 * after the first start at j = 0): up to VL tiles of one row at a time, each
 * window row split into its even and odd columns (tile j's columns 2j +
 * 0 .. 3 are ev[j], od[j], ev[j + 1], od[j + 1]); two whole rows of tiles
 * at a time where they fit one vector and the instruction set pairs them. */
static inline void wino_input_seg(float *restrict u, int64_t us, const float *x, int64_t i0,
                                  int64_t j0, int64_t n, const wino_geom *g)
{
#ifdef WINO_SPLIT_PAIR
    wino_pair_index idx = WINO_PAIR_INDEX(g->tw);
#endif
    for (int64_t i = i0, j = j0, t = 0; t < n; i++, j = 0) {
#ifdef WINO_SPLIT_PAIR
        if (wino_pair_fits(g, i, j, n - t)) {
            wino_input_pair(u, us, t, x, i, idx, g);
            t += 2 * g->tw, i++;
            continue;
        }
#endif
        for (int64_t end = t + (g->tw - j < n - t ? g->tw - j : n - t); t < end;) {
            int64_t cnt = end - t < DIRECT_VL ? end - t : DIRECT_VL, c0 = 2 * j - g->pw;
            dvec d[4][4] = {{{0}}};
            for (int r = 0; r < 4; r++) {
                int64_t h = 2 * i - g->ph + r;
                if (h >= 0 && h < g->H) {
                    WINO_SPLIT(x + h * g->W, c0, g->W, d[r][0], d[r][1]);
                    WINO_SPLIT(x + h * g->W, c0 + 2, g->W, d[r][2], d[r][3]);
                }
            }
            wino_input_store(u, us, t, cnt, d);
            t += cnt, j += cnt;
        }
    }
}

/* v[xi vs + t + l] (xi < 16, l < cnt) = G' e G'^T of the vector of tiles whose
 * dy blocks' rows a are split into e[a] (even, odd columns). */
static inline void wino_grad_store(float *restrict v, int64_t vs, int64_t t, int64_t cnt,
                                   const dvec e[2][2])
{
    dvec h[4][2];       /* G' e: rows transformed */
    for (int b = 0; b < 2; b++) {
        h[0][b] = e[0][b];
        h[1][b] = 0.5f * (e[0][b] + e[1][b]);
        h[2][b] = 0.5f * (e[0][b] - e[1][b]);
        h[3][b] = -e[1][b];
    }
    for (int a = 0; a < 4; a++) {
        dvec row[4] = {h[a][0], 0.5f * (h[a][0] + h[a][1]), 0.5f * (h[a][0] - h[a][1]),
                       -h[a][1]};
        for (int b = 0; b < 4; b++) {
            float *dst = v + (4 * a + b) * vs + t;
            if (cnt == DIRECT_VL)
                *(dvec *)dst = row[b];
            else
                DIRECT_STORE_PART(dst, row[b], (int)cnt);
        }
    }
}

/* v[xi vs + t] (xi < 16, t < n <= WINO_SEG) = G' e G'^T of the 2x2 blocks e
 * of an output gradient plane dy (P, Q) at the n tiles that follow tile
 * (i0, j0) in row-major order (zero past P, Q), G' = [1 0; 1/2 1/2;
 * 1/2 -1/2; 0 -1]: the weight gradient's F(3x3, 2x2) with dy's block as
 * the filter and B^T of the forward (see conv2d_winograd.c); two whole rows
 * of tiles at a time as the input's. */
static inline void wino_grad_seg(float *restrict v, int64_t vs, const float *dy, int64_t i0,
                                 int64_t j0, int64_t n, const wino_geom *g)
{
#ifdef WINO_SPLIT_PAIR
    wino_pair_index idx = WINO_PAIR_INDEX(g->tw);
#endif
    for (int64_t i = i0, j = j0, t = 0; t < n; i++, j = 0) {
#ifdef WINO_SPLIT_PAIR
        if (wino_pair_fits(g, i, j, n - t)) {   /* as the input's */
            dvec e[2][2];
            for (int a = 0; a < 2; a++) {
                const float *ra = dy + (2 * i + a) * g->Q;
                const float *rb = 2 * i + 2 + a < g->P ? dy + (2 * i + 2 + a) * g->Q : NULL;
                WINO_SPLIT_PAIR(ra, rb, 0, g->Q, idx, e[a][0], e[a][1]);
            }
            wino_grad_store(v, vs, t, 2 * g->tw, e);
            t += 2 * g->tw, i++;
            continue;
        }
#endif
        for (int64_t end = t + (g->tw - j < n - t ? g->tw - j : n - t); t < end;) {
            int64_t cnt = end - t < DIRECT_VL ? end - t : DIRECT_VL;
            dvec e[2][2] = {{{0}, {0}}, {{0}, {0}}};    /* [row a][even, odd column] */
            for (int a = 0; a < 2; a++)
                if (2 * i + a < g->P)
                    WINO_SPLIT(dy + (2 * i + a) * g->Q, 2 * j, g->Q, e[a][0], e[a][1]);
            wino_grad_store(v, vs, t, cnt, e);
            t += cnt, j += cnt;
        }
    }
}

/* WINO_MERGE_STORE(dst, ev, od, n): the first n (<= 2 VL) floats of ev[0],
 * od[0], ev[1], od[1], ... to dst. An including file may define it with
 * permutes and masked stores, else a plain loop. */
#ifndef WINO_MERGE_STORE
#define WINO_MERGE_STORE(dst, ev, od, n) wino_merge_lanes(dst, ev, od, n)
static inline void wino_merge_lanes(float *dst, dvec ev, dvec od, int64_t n)
{
    for (int64_t k = 0; k < n; k++)
        dst[k] = k % 2 ? od[k / 2] : ev[k / 2];
}
#endif

/* The rows A^T m of the vector of tiles at t (cnt lanes) of M. */
static inline void wino_output_rows(dvec s[2][4], const float *restrict m, int64_t ms, int64_t t,
                                    int64_t cnt)
{
    for (int b = 0; b < 4; b++) {
        dvec mv[4];
        for (int a = 0; a < 4; a++) {
            const float *src = m + (4 * a + b) * ms + t;
            mv[a] = cnt == DIRECT_VL ? *(const dvec *)src : DIRECT_LOAD_PART(src, cnt);
        }
        s[0][b] = mv[0] + mv[1] + mv[2];
        s[1][b] = mv[1] - mv[2] - mv[3];
    }
}

/* Output row a of tiles with rows s: (even, odd) columns, + bias, clamped. */
static inline void wino_output_cols(dvec *y0, dvec *y1, const dvec s[2][4], int a, float bias,
                                    const wino_geom *g)
{
    *y0 = s[a][0] + s[a][1] + s[a][2] + bias;
    *y1 = s[a][1] - s[a][2] - s[a][3] + bias;
    if (g->clamp) {
        *y0 = clamp_vec(*y0, g->lo, g->hi);
        *y1 = clamp_vec(*y1, g->lo, g->hi);
    }
}

/* y = A^T m A + bias (clamped if g->clamp) for the n tiles that follow tile
 * (i0, j0) of one output plane y (P, Q) in row-major order, from m[xi ms +
 * t]; up to VL tiles of one row at a time; rows and columns past P, Q are
 * not written; two whole rows of tiles at a time as the input's. */
static inline void wino_output_seg(float *y, const float *restrict m, int64_t ms, int64_t i0,
                                   int64_t j0, int64_t n, float bias, const wino_geom *g)
{
    for (int64_t i = i0, j = j0, t = 0; t < n; i++, j = 0) {
#ifdef WINO_MERGE_PAIR
        if (wino_pair_fits(g, i, j, n - t)) {   /* as the input's */
            dvec s[2][4], y0, y1;
            wino_output_rows(s, m, ms, t, 2 * g->tw);
            for (int a = 0; a < 2; a++) {
                wino_output_cols(&y0, &y1, s, a, bias, g);
                float *yb = 2 * i + 2 + a < g->P ? y + (2 * i + 2 + a) * g->Q : NULL;
                WINO_MERGE_PAIR(y + (2 * i + a) * g->Q, yb, y0, y1, g->tw,
                                g->Q < 2 * g->tw ? g->Q : 2 * g->tw);
            }
            t += 2 * g->tw, i++;
            continue;
        }
#endif
        for (int64_t end = t + (g->tw - j < n - t ? g->tw - j : n - t); t < end;) {
            int64_t cnt = end - t < DIRECT_VL ? end - t : DIRECT_VL;
            dvec s[2][4], y0, y1;       /* A^T m: rows transformed */
            wino_output_rows(s, m, ms, t, cnt);
            int64_t cols = g->Q - 2 * j < 2 * cnt ? g->Q - 2 * j : 2 * cnt;
            for (int a = 0; a < 2 && 2 * i + a < g->P; a++) {
                wino_output_cols(&y0, &y1, s, a, bias, g);
                WINO_MERGE_STORE(y + (2 * i + a) * g->Q + 2 * j, y0, y1, cols);
            }
            t += cnt, j += cnt;
        }
    }
}

/* v[xi vs + k .. + VL] (16 rows) = G f G^T for the filters of DIRECT_VL
 * output channels from their taps f[r][t] (vectors over k). */
static inline void wino_filter_vector(float *v, int64_t vs, const dvec f[3][3])
{
    dvec gf[4][3];      /* G f */
    for (int t = 0; t < 3; t++) {
        gf[0][t] = f[0][t];
        gf[1][t] = 0.5f * (f[0][t] + f[1][t] + f[2][t]);
        gf[2][t] = 0.5f * (f[0][t] - f[1][t] + f[2][t]);
        gf[3][t] = f[2][t];
    }
    for (int a = 0; a < 4; a++) {
        *(dvec *)(v + (4 * a + 0) * vs) = gf[a][0];
        *(dvec *)(v + (4 * a + 1) * vs) = 0.5f * (gf[a][0] + gf[a][1] + gf[a][2]);
        *(dvec *)(v + (4 * a + 2) * vs) = 0.5f * (gf[a][0] - gf[a][1] + gf[a][2]);
        *(dvec *)(v + (4 * a + 3) * vs) = gf[a][2];
    }
}

/* o = G (f0, f1, f2) of F(4x4, 3x3). */
static inline void wino4_g(dvec o[6], dvec f0, dvec f1, dvec f2)
{
    dvec s = f0 + f2, q = (1.0f / 24) * f0 + (1.0f / 6) * f2;
    o[0] = 0.25f * f0;
    o[1] = (-1.0f / 6) * (s + f1);
    o[2] = (-1.0f / 6) * (s - f1);
    o[3] = q + (1.0f / 12) * f1;
    o[4] = q - (1.0f / 12) * f1;
    o[5] = f2;
}

/* v[xi vs + k .. + VL] (36 rows) = G f G^T of F(4x4, 3x3), as above. */
static inline void wino4_filter_vector(float *v, int64_t vs, const dvec f[3][3])
{
    dvec gf[3][6];      /* G f, by column t */
    for (int t = 0; t < 3; t++)
        wino4_g(gf[t], f[0][t], f[1][t], f[2][t]);
    for (int a = 0; a < 6; a++) {
        dvec row[6];
        wino4_g(row, gf[0][a], gf[1][a], gf[2][a]);
        for (int b = 0; b < 6; b++)
            *(dvec *)(v + (6 * a + b) * vs) = row[b];
    }
}

/* v[xi vs + k] ((m + 2)^2 rows, k < K) = G f G^T (F(m x m, 3x3)) of the
 * filters of K output channels whose taps are f[r][t][k] = taps[(3 r + t, or
 * 8 - that if flipped) K + k]; the last partial vector through a padded
 * copy. */
static inline void wino_filters_seg(float *v, int64_t vs, const float *taps, int64_t K,
                                    int flip, int m)
{
    int npos = (m + 2) * (m + 2);
    for (int64_t k = 0; k < K; k += DIRECT_VL) {
        dvec f[3][3];
        int64_t n = K - k < DIRECT_VL ? K - k : DIRECT_VL;
        for (int rt = 0; rt < 9; rt++) {
            const float *src = taps + (flip ? 8 - rt : rt) * K + k;
            if (n == DIRECT_VL) {
                f[rt / 3][rt % 3] = *(const dvec *)src;
                continue;
            }
            float lane[DIRECT_VL] = {0};
            for (int64_t i = 0; i < n; i++) lane[i] = src[i];
            memcpy(&f[rt / 3][rt % 3], lane, sizeof lane);
        }
        float part[36][DIRECT_VL];
        float *dst = n == DIRECT_VL ? v + k : part[0];
        int64_t ds = n == DIRECT_VL ? vs : DIRECT_VL;
        if (m == 4)
            wino4_filter_vector(dst, ds, f);
        else
            wino_filter_vector(dst, ds, f);
        if (n < DIRECT_VL)
            for (int xi = 0; xi < npos; xi++)
                memcpy(v + xi * vs + k, part[xi], (size_t)n * sizeof(float));
    }
}

/* ---- F(4x4, 3x3) ---- */

/* A vector of F(4x4, 3x3) tiles is taken as 4 chunks of VL / 4 tiles, each
 * chunk within one row of tiles: a chunk's 4 (VL / 4) input columns are one
 * load, its outputs one store. */
#define WINO4_CHUNK (DIRECT_VL / 4)

/* WINO4_SPLIT(rows, cols, W, p): p[r][l] (r < 4, the VL lanes l) = column
 * cols[k] + 4 (l % WINO4_CHUNK) + r of the row rows[k], k = l / WINO4_CHUNK:
 * zero outside [0, W) or where rows[k] is NULL; nothing outside it read. An
 * including file may define it with loads and shuffles, else a plain loop. */
#ifndef WINO4_SPLIT
#define WINO4_SPLIT(rows, cols, W, p) wino4_split_lanes(rows, cols, W, p)
static inline void wino4_split_lanes(const float *rows[4], const int64_t cols[4], int64_t W,
                                     dvec p[4])
{
    float f[4][DIRECT_VL];
    for (int r = 0; r < 4; r++)
        for (int l = 0; l < DIRECT_VL; l++) {
            int k = l / WINO4_CHUNK;
            int64_t c = cols[k] + 4 * (l % WINO4_CHUNK) + r;
            f[r][l] = rows[k] && c >= 0 && c < W ? rows[k][c] : 0.0f;
        }
    memcpy(p, f, sizeof f);
}
#endif

/* WINO4_MERGE_STORE(dst, n, y): for each chunk k, the first n[k] (<= VL)
 * floats of y[0][l], y[1][l], y[2][l], y[3][l] for its lanes l in order, to
 * dst[k] (none where dst[k] is NULL). An including file may define it with
 * shuffles and part stores, else a plain loop. */
#ifndef WINO4_MERGE_STORE
#define WINO4_MERGE_STORE(dst, n, y) wino4_merge_lanes(dst, n, y)
static inline void wino4_merge_lanes(float *dst[4], const int64_t n[4], const dvec y[4])
{
    float f[4][DIRECT_VL];
    memcpy(f, y, sizeof f);
    for (int k = 0; k < 4; k++)
        for (int64_t e = 0; dst[k] && e < n[k]; e++)
            dst[k][e] = f[e % 4][k * WINO4_CHUNK + e / 4];
}
#endif

/* The next vector of tiles from tile (i, j), of the `left` tiles to go: its
 * count (<= VL), running on into the next rows where every chunk stays
 * within one row (tw and j multiples of WINO4_CHUNK: small maps fill the
 * vectors), else ending at the row's end; chunk k's first tile (ti[k],
 * tj[k]), ti[k] = -1 past the count. */
static inline int64_t wino4_vector(int64_t ti[4], int64_t tj[4], int64_t i, int64_t j,
                                   int64_t left, const wino_geom *g)
{
    int span = g->tw % WINO4_CHUNK == 0 && j % WINO4_CHUNK == 0;
    int64_t cnt = span || left < g->tw - j ? left : g->tw - j;
    cnt = cnt < DIRECT_VL ? cnt : DIRECT_VL;
    for (int k = 0; k < 4; k++) {
        int64_t at = j + k * WINO4_CHUNK;
        ti[k] = k * WINO4_CHUNK < cnt ? i + at / g->tw : -1;
        tj[k] = at % g->tw;
    }
    return cnt;
}

/* o = B^T d of F(4x4, 3x3). */
static inline void wino4_bt(dvec o[6], const dvec d[6])
{
    dvec t0 = d[4] - 4.0f * d[2], t1 = d[3] - 4.0f * d[1];
    dvec t2 = d[4] - d[2], t3 = 2.0f * (d[3] - d[1]);
    o[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
    o[1] = t0 + t1;
    o[2] = t0 - t1;
    o[3] = t2 + t3;
    o[4] = t2 - t3;
    o[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
}

/* o = A^T m of F(4x4, 3x3). */
static inline void wino4_at(dvec o[4], const dvec m[6])
{
    dvec s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    o[0] = m[0] + s12 + s34;
    o[1] = d12 + 2.0f * d34;
    o[2] = s12 + 4.0f * s34;
    o[3] = d12 + 8.0f * d34 + m[5];
}

/* u[xi us + t] (xi < 36, t < n) = B^T d B of F(4x4, 3x3) for the n tiles
 * that follow tile (i0, j0) of one input plane x (H, W) in row-major order,
 * a vector of tiles at a time (wino4_vector): tile j's window columns 4j +
 * 0 .. 5 are the phases 0 .. 3 of the columns from 4j and 0, 1 of those
 * from 4j + 4. */
static inline void wino4_input_seg(float *restrict u, int64_t us, const float *x, int64_t i0,
                                   int64_t j0, int64_t n, const wino_geom *g)
{
    for (int64_t i = i0, j = j0, t = 0; t < n;) {
        int64_t ti[4], tj[4], cnt = wino4_vector(ti, tj, i, j, n - t, g);
        dvec v[6][6];       /* d B: rows of the windows, columns transformed */
        for (int r = 0; r < 6; r++) {
            const float *rows[4];
            int64_t cols[4], next[4];
            for (int k = 0; k < 4; k++) {
                int64_t h = 4 * ti[k] - g->ph + r;
                rows[k] = ti[k] >= 0 && h >= 0 && h < g->H ? x + h * g->W : NULL;
                cols[k] = 4 * tj[k] - g->pw;
                next[k] = cols[k] + 4;
            }
            dvec d[8];
            WINO4_SPLIT(rows, cols, g->W, d);
            WINO4_SPLIT(rows, next, g->W, d + 4);
            wino4_bt(v[r], d);
        }
        for (int b = 0; b < 6; b++) {
            dvec col[6] = {v[0][b], v[1][b], v[2][b], v[3][b], v[4][b], v[5][b]}, o[6];
            wino4_bt(o, col);
            for (int a = 0; a < 6; a++) {
                float *dst = u + (6 * a + b) * us + t;
                if (cnt == DIRECT_VL)
                    *(dvec *)dst = o[a];
                else
                    DIRECT_STORE_PART(dst, o[a], (int)cnt);
            }
        }
        t += cnt, j += cnt, i += j / g->tw, j %= g->tw;
    }
}

/* y = A^T m A + bias (clamped if g->clamp) of F(4x4, 3x3) for the n tiles
 * that follow tile (i0, j0) of one output plane y (P, Q) in row-major order,
 * from m[xi ms + t]; rows and columns past P, Q are not written. */
static inline void wino4_output_seg(float *y, const float *restrict m, int64_t ms, int64_t i0,
                                    int64_t j0, int64_t n, float bias, const wino_geom *g)
{
    for (int64_t i = i0, j = j0, t = 0; t < n;) {
        int64_t ti[4], tj[4], cnt = wino4_vector(ti, tj, i, j, n - t, g);
        dvec s[4][6];       /* A^T m: rows transformed */
        for (int b = 0; b < 6; b++) {
            dvec mv[6], o[4];
            for (int a = 0; a < 6; a++) {
                const float *src = m + (6 * a + b) * ms + t;
                mv[a] = cnt == DIRECT_VL ? *(const dvec *)src : DIRECT_LOAD_PART(src, cnt);
            }
            wino4_at(o, mv);
            for (int a = 0; a < 4; a++)
                s[a][b] = o[a];
        }
        for (int a = 0; a < 4; a++) {
            dvec o[4];
            wino4_at(o, s[a]);
            for (int b = 0; b < 4; b++) {
                o[b] += bias;
                if (g->clamp)
                    o[b] = clamp_vec(o[b], g->lo, g->hi);
            }
            float *dst[4];
            int64_t cols[4];
            for (int k = 0; k < 4; k++) {
                int64_t p = 4 * ti[k] + a, tiles = cnt - k * WINO4_CHUNK;
                tiles = tiles < WINO4_CHUNK ? tiles : WINO4_CHUNK;
                dst[k] = ti[k] >= 0 && p < g->P ? y + p * g->Q + 4 * tj[k] : NULL;
                cols[k] = g->Q - 4 * tj[k] < 4 * tiles ? g->Q - 4 * tj[k] : 4 * tiles;
            }
            WINO4_MERGE_STORE(dst, cols, o);
        }
        t += cnt, j += cnt, i += j / g->tw, j %= g->tw;
    }
}

/* The input and output transforms of either tile size (g->m), for each
 * instruction set's entry points. */
static inline void wino_input_tiles(float *restrict u, int64_t us, const float *x, int64_t i0,
                                    int64_t j0, int64_t n, const wino_geom *g)
{
    if (g->m == 4)
        wino4_input_seg(u, us, x, i0, j0, n, g);
    else
        wino_input_seg(u, us, x, i0, j0, n, g);
}

static inline void wino_output_tiles(float *y, const float *restrict m, int64_t ms, int64_t i0,
                                     int64_t j0, int64_t n, float bias, const wino_geom *g)
{
    if (g->m == 4)
        wino4_output_seg(y, m, ms, i0, j0, n, bias, g);
    else
        wino_output_seg(y, m, ms, i0, j0, n, bias, g);
}

#endif /* DIRECT_VBYTES */

#endif /* FASTCNN_CONV2D_WINOGRAD_KERNEL_H */
