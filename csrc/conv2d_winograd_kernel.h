/* conv2d_winograd_kernel.h - the filter, input and output transforms of the Winograd
 * F(2x2, 3x3) convolution (conv2d_winograd.c), compiled once per instruction
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
 * by image; each of the 16 values of a run of tiles is contiguous. */
#ifndef FASTCNN_CONV2D_WINOGRAD_KERNEL_H
#define FASTCNN_CONV2D_WINOGRAD_KERNEL_H

#include <stdint.h>
#include <string.h>

/* Tiles one transform call takes at most (one row segment). */
#define WINO_SEG 64

/* One convolution as the transforms see it: C input planes (H, W), K output
 * planes (P, Q), top/left padding ph, pw, th x tw tiles per image. */
typedef struct {
    int64_t C, K, H, W, P, Q, ph, pw, th, tw;
    int64_t clamp;      /* outputs clamped to [lo, hi] (conv2d_shape's clamp) */
    float lo, hi;
} wino_geom;

#ifdef DIRECT_VBYTES     /* the vectors of conv2d_kernel.h: an instruction set's build */

/* Room in a transform's column arrays: two runs' worth and a vector past. */
#define WINO_COLS (2 * WINO_SEG + 2 * DIRECT_VL)

static inline void wino_split_checked(float *ev, float *od, const float *row, int64_t c0,
                                      int64_t k0, int64_t k1, int64_t W)
{
    for (int64_t k = k0; k < k1; k++) {
        int64_t c = c0 + 2 * k;
        ev[k] = c >= 0 && c < W ? row[c] : 0.0f;
        od[k] = c + 1 >= 0 && c + 1 < W ? row[c + 1] : 0.0f;
    }
}

/* ev[k] = row[c0 + 2k], od[k] = row[c0 + 2k + 1] for k < n, zero outside
 * [0, W) or where row is NULL (a row of the padding). */
static inline void wino_split_row(float *restrict ev, float *restrict od, const float *row,
                                  int64_t c0, int64_t n, int64_t W)
{
    if (!row) {
        memset(ev, 0, (size_t)n * sizeof(float));
        memset(od, 0, (size_t)n * sizeof(float));
        return;
    }
    /* [lo, hi): the k whose two columns are both inside the row */
    int64_t lo = c0 >= 0 ? 0 : (1 - c0) / 2, hi = W - 2 - c0 < 0 ? 0 : (W - 2 - c0) / 2 + 1;
    hi = hi < n ? hi : n;
    lo = lo < hi ? lo : hi;
    wino_split_checked(ev, od, row, c0, 0, lo, W);
    for (int64_t k = lo; k < hi; k++) {
        ev[k] = row[c0 + 2 * k];
        od[k] = row[c0 + 2 * k + 1];
    }
    wino_split_checked(ev, od, row, c0, hi, n, W);
}

/* u[xi us + t] (xi < 16, t < n <= WINO_SEG) = B^T d B of the n tiles that
 * follow tile (i0, j0) of one input plane x (H, W) in row-major order (rows
 * of tiles after the first start at j = 0). The windows of a row of tiles
 * are split into even and odd columns, each row's run followed by the one
 * extra column its last window reads, so that the transform is one vector
 * loop over those columns; it is then compacted to the tiles' order. */
/* (GCC would turn the compaction's vector copies, 4 to 16 floats each, into
 * memcpy calls: 4% of a CIFAR-net inference at batch 256. Kept inline.) */
static inline __attribute__((optimize("no-tree-loop-distribute-patterns"))) void
wino_input_seg(float *restrict u, int64_t us, const float *x, int64_t i0, int64_t j0, int64_t n,
               const wino_geom *g)
{
    float ev[4][WINO_COLS], od[4][WINO_COLS], tr[16][WINO_COLS];
    int64_t cols = 0;
    for (int64_t i = i0, j = j0, left = n; left > 0; i++, j = 0) {
        int64_t cnt = g->tw - j < left ? g->tw - j : left;
        for (int r = 0; r < 4; r++) {
            int64_t h = 2 * i - g->ph + r;
            wino_split_row(ev[r] + cols, od[r] + cols, h >= 0 && h < g->H ? x + h * g->W : NULL,
                           2 * j - g->pw, cnt + 1, g->W);
        }
        cols += cnt + 1, left -= cnt;
    }
    for (int r = 0; r < 4; r++)         /* the last vector reads past the columns */
        for (int64_t c = cols; c < cols + DIRECT_VL; c++) ev[r][c] = od[r][c] = 0.0f;
    for (int64_t c = 0; c + 1 < cols; c += DIRECT_VL) {
        dvec v[4][4];       /* d B: rows of the window, columns transformed */
        for (int r = 0; r < 4; r++) {
            dvec d0 = *(const dvec *)(ev[r] + c), d1 = *(const dvec *)(od[r] + c);
            dvec d2 = *(const dvec *)(ev[r] + c + 1), d3 = *(const dvec *)(od[r] + c + 1);
            v[r][0] = d0 - d2;
            v[r][1] = d1 + d2;
            v[r][2] = d2 - d1;
            v[r][3] = d1 - d3;
        }
        for (int b = 0; b < 4; b++) {
            *(dvec *)(tr[b] + c) = v[0][b] - v[2][b];
            *(dvec *)(tr[4 + b] + c) = v[1][b] + v[2][b];
            *(dvec *)(tr[8 + b] + c) = v[2][b] - v[1][b];
            *(dvec *)(tr[12 + b] + c) = v[1][b] - v[3][b];
        }
    }
    for (int64_t j = j0, c = 0, t = 0; t < n; j = 0) {     /* drop each row's extra column */
        int64_t cnt = g->tw - j < n - t ? g->tw - j : n - t;
        for (int xi = 0; xi < 16; xi++) {
            float *restrict dst = u + xi * us + t;
            const float *restrict src = tr[xi] + c;
            int64_t k = 0;
            for (; k + DIRECT_VL <= cnt; k += DIRECT_VL)
                *(dvec *)(dst + k) = *(const dvec *)(src + k);
            for (; k < cnt; k++) dst[k] = src[k];
        }
        c += cnt + 1, t += cnt;
    }
}

/* v[xi vs + t] (xi < 16, t < n <= WINO_SEG) = G' e G'^T of the 2x2 blocks e
 * of an output gradient plane dy (P, Q) at the n tiles that follow tile
 * (i0, j0) in row-major order (zero past P, Q), G' = [1 0; 1/2 1/2;
 * 1/2 -1/2; 0 -1]: the weight gradient's F(3x3, 2x2) with dy's block as
 * the filter and B^T of the forward (see conv2d_winograd.c). */
static inline void wino_grad_seg(float *restrict v, int64_t vs, const float *dy, int64_t i0,
                                 int64_t j0, int64_t n, const wino_geom *g)
{
    float ev[2][WINO_SEG + DIRECT_VL], od[2][WINO_SEG + DIRECT_VL];
    int64_t cols = 0;
    for (int64_t i = i0, j = j0; cols < n; i++, j = 0) {
        int64_t cnt = g->tw - j < n - cols ? g->tw - j : n - cols;
        for (int a = 0; a < 2; a++) {
            int64_t p = 2 * i + a;
            wino_split_row(ev[a] + cols, od[a] + cols, p < g->P ? dy + p * g->Q : NULL, 2 * j,
                           cnt, g->Q);
        }
        cols += cnt;
    }
    for (int a = 0; a < 2; a++)         /* the last vector reads past the tiles */
        for (int64_t t = n; t < n + DIRECT_VL; t++) ev[a][t] = od[a][t] = 0.0f;
    float tail[16][DIRECT_VL];
    for (int64_t t = 0; t < n; t += DIRECT_VL) {
        dvec h[4][2];       /* G' e: rows transformed */
        for (int b = 0; b < 2; b++) {
            dvec e0 = *(const dvec *)((b ? od[0] : ev[0]) + t);
            dvec e1 = *(const dvec *)((b ? od[1] : ev[1]) + t);
            h[0][b] = e0;
            h[1][b] = 0.5f * (e0 + e1);
            h[2][b] = 0.5f * (e0 - e1);
            h[3][b] = -e1;
        }
        int full = t + DIRECT_VL <= n;
        float *dst = full ? v + t : tail[0];
        int64_t ds = full ? vs : DIRECT_VL;
        for (int a = 0; a < 4; a++) {
            *(dvec *)(dst + (4 * a + 0) * ds) = h[a][0];
            *(dvec *)(dst + (4 * a + 1) * ds) = 0.5f * (h[a][0] + h[a][1]);
            *(dvec *)(dst + (4 * a + 2) * ds) = 0.5f * (h[a][0] - h[a][1]);
            *(dvec *)(dst + (4 * a + 3) * ds) = -h[a][1];
        }
        if (!full)
            for (int xi = 0; xi < 16; xi++)
                memcpy(v + xi * vs + t, tail[xi], (size_t)(n - t) * sizeof(float));
    }
}

/* y = A^T m A + bias (clamped if g->clamp) for the n <= WINO_SEG tiles that
 * follow tile (i0, j0) of one output plane y (P, Q) in row-major order, from
 * m[xi ms + t]; rows and columns past P, Q are not written. */
static inline void wino_output_seg(float *y, const float *restrict m, int64_t ms, int64_t i0,
                                   int64_t j0, int64_t n, float bias, const wino_geom *g)
{
    float out[2][2][WINO_SEG + DIRECT_VL];      /* [row a][column b][tile] */
    float tail[16][DIRECT_VL];
    for (int64_t t = 0; t < n; t += DIRECT_VL) {
        const float *src = m + t;
        int64_t stride = ms;
        if (t + DIRECT_VL > n) {        /* the last tiles, through a padded copy */
            memset(tail, 0, sizeof tail);
            for (int xi = 0; xi < 16; xi++)
                memcpy(tail[xi], m + xi * ms + t, (size_t)(n - t) * sizeof(float));
            src = tail[0], stride = DIRECT_VL;
        }
        dvec s[2][4];       /* A^T m: rows transformed */
        for (int b = 0; b < 4; b++) {
            dvec m0 = *(const dvec *)(src + b * stride);
            dvec m1 = *(const dvec *)(src + (4 + b) * stride);
            dvec m2 = *(const dvec *)(src + (8 + b) * stride);
            dvec m3 = *(const dvec *)(src + (12 + b) * stride);
            s[0][b] = m0 + m1 + m2;
            s[1][b] = m1 - m2 - m3;
        }
        for (int a = 0; a < 2; a++) {
            dvec y0 = s[a][0] + s[a][1] + s[a][2] + bias;
            dvec y1 = s[a][1] - s[a][2] - s[a][3] + bias;
            if (g->clamp) {
                y0 = clamp_vec(y0, g->lo, g->hi);
                y1 = clamp_vec(y1, g->lo, g->hi);
            }
            *(dvec *)(out[a][0] + t) = y0;
            *(dvec *)(out[a][1] + t) = y1;
        }
    }
    for (int64_t i = i0, j = j0, t = 0; t < n; i++, j = 0) {
        int64_t cnt = g->tw - j < n - t ? g->tw - j : n - t;
        int64_t q0 = 2 * j, pairs = (g->Q - q0) / 2 < cnt ? (g->Q - q0) / 2 : cnt;
        for (int a = 0; a < 2 && 2 * i + a < g->P; a++) {
            float *restrict row = y + (2 * i + a) * g->Q + q0;
            const float *restrict e = out[a][0] + t, *restrict o = out[a][1] + t;
            for (int64_t k = 0; k < pairs; k++) {
                row[2 * k] = e[k];
                row[2 * k + 1] = o[k];
            }
            if (pairs < cnt)    /* an odd Q: the last tile's first column only */
                row[2 * pairs] = e[pairs];
        }
        t += cnt;
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

/* v[xi vs + k] (16 rows, k < K) = G f G^T of the filters of K output
 * channels whose taps are f[r][t][k] = taps[(3 r + t, or 8 - that if
 * flipped) K + k]; the last partial vector through a padded copy. */
static inline void wino_filters_seg(float *v, int64_t vs, const float *taps, int64_t K,
                                    int flip)
{
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
        if (n == DIRECT_VL) {
            wino_filter_vector(v + k, vs, f);
            continue;
        }
        float part[16][DIRECT_VL];
        wino_filter_vector(part[0], DIRECT_VL, f);
        for (int xi = 0; xi < 16; xi++)
            memcpy(v + xi * vs + k, part[xi], (size_t)n * sizeof(float));
    }
}

#endif /* DIRECT_VBYTES */

#endif /* FASTCNN_CONV2D_WINOGRAD_KERNEL_H */
