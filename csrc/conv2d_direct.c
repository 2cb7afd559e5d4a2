/* conv2d_direct.c - the direct forward convolution for first layers (stride
 * 1 or 2, C R S <= 75 or timed; conv2d.c chooses): output channels x row
 * vectors in registers (the loops in conv2d_kernel.h, compiled per
 * instruction set), reading a zero-padded copy of one image at a time (at
 * stride 2 each row split into its even and odd columns) and the weights
 * packed in blocks of a tile's channels; with fewer (image, channel block)
 * items than threads (batch 1), each block's rows split over the threads,
 * all reading one padded copy of each image. Also the padded copy
 * (conv2d_pad_image) and that split (conv2d_part_rows), used by the
 * channel-vector kernels too. */
#include <string.h>

#include "conv2d_generic.h"
#include "conv2d_internal.h"
#include "gemm.h"

/* The portable build of the direct block kernel (conv2d_kernel.h, conv2d_generic.h). */
void conv2d_direct_block_generic(float *y, const float *xpad, const float *wB, const float *b,
                                 int64_t k0, int64_t kn, int64_t p0, int64_t p1,
                                 const direct_geom *g)
{
    direct_block(y, xpad, wB, b, k0, kn, p0, p1, g);
}

/* xpad (C, Hp, Wp) = image x (C, H, W) shifted by the top/left padding,
 * zero elsewhere (rows and columns past the image are cut at Hp, Wp). */
void conv2d_pad_image(float *xpad, const float *x, const conv2d_shape *s, int64_t Hp,
                      int64_t Wp)
{
    for (int64_t c = 0; c < s->C; c++)
        for (int64_t hp = 0; hp < Hp; hp++) {
            float *row = xpad + (c * Hp + hp) * Wp;
            int64_t h = hp - s->ph;
            memset(row, 0, (size_t)Wp * sizeof(float));
            if (h < 0 || h >= s->H)
                continue;
            int64_t n = s->W + s->pw > Wp ? Wp - s->pw : s->W;
            if (n > 0)
                memcpy(row + s->pw, x + (c * s->H + h) * s->W, (size_t)n * sizeof(float));
        }
}

/* dst[i] = xr[2 i + off] where 0 <= 2 i + off < W, else 0 (i < Wh): one
 * column phase of a padded row. */
static void column_phase(float *dst, const float *xr, int64_t W, int64_t off, int64_t Wh)
{
    int64_t lo = off >= 0 ? 0 : (1 - off) / 2;          /* first i with 2 i + off >= 0 */
    int64_t hi = W > off ? (W - off + 1) / 2 : 0;       /* first i with 2 i + off >= W */
    lo = lo < Wh ? lo : Wh;
    hi = hi < lo ? lo : hi < Wh ? hi : Wh;
    for (int64_t i = 0; i < lo; i++)
        dst[i] = 0.0f;
    for (int64_t i = lo; i < hi; i++)
        dst[i] = xr[2 * i + off];
    for (int64_t i = hi; i < Wh; i++)
        dst[i] = 0.0f;
}

/* xpad (C, Hp, 2 Wh) = image x (C, H, W) zero-padded (top and left by the
 * shape's padding), each row stored as its even columns then its odd ones
 * (Wh each). */
static void pad_image_phases(float *xpad, const float *x, const conv2d_shape *s, int64_t Hp,
                             int64_t Wh)
{
    for (int64_t c = 0; c < s->C; c++)
        for (int64_t hp = 0; hp < Hp; hp++) {
            float *even = xpad + (c * Hp + hp) * 2 * Wh;
            int64_t h = hp - s->ph;
            if (h < 0 || h >= s->H) {
                memset(even, 0, (size_t)(2 * Wh) * sizeof(float));
                continue;
            }
            const float *xr = x + (c * s->H + h) * s->W;
            column_phase(even, xr, s->W, -s->pw, Wh);
            column_phase(even + Wh, xr, s->W, 1 - s->pw, Wh);
        }
}

/* wB (ceil(K / kb), C R S, kb) = w (K, C R S) in blocks of kb output
 * channels, each block transposed, zeros past K: a tap's kb weights are
 * adjacent, so the kernel broadcasts them from one pointer. */
static void pack_blocks(float *wB, const float *w, int64_t K, int64_t CRS, int64_t kb)
{
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        int64_t n = K - k0 < kb ? K - k0 : kb;
        if (n < kb)
            memset(wB + k0 * CRS, 0, (size_t)(kb * CRS) * sizeof(float));
        sgemm_transpose(wB + k0 * CRS, kb, w + k0 * CRS, CRS, n, CRS);
    }
}

int64_t conv2d_part_rows(int64_t P, int64_t items, int nt)
{
    if (items >= nt)
        return P;
    int64_t parts = (nt + items - 1) / items, rows = (P + parts - 1) / parts;
    rows = rows < 2 ? 2 : (rows + 1) / 2 * 2;
    return rows < P ? rows : P;
}

/* One forward call's work items (image, channel block, part of the rows), for
 * fastcnn_parallel_for. */
typedef struct {
    float *y;
    const float *x, *wB, *b;
    const conv2d_shape *s;
    const direct_geom *g;
    conv2d_direct_block_fn fn;
    int64_t blocks, parts, rows, kb, per, xsz, ysz;
    int shared;             /* the padded images made beforehand, one each */
    float *scratch;         /* per slot (or per image when shared): a padded image */
    int64_t *padded;        /* per slot: the image its padded copy holds, or -1 */
} direct_run;

/* x's image or plane at x into xpad, padded (at stride 2 in column phases). */
static void pad_into(const direct_run *r, float *xpad, const float *x, const conv2d_shape *s)
{
    if (r->g->Wh)
        pad_image_phases(xpad, x, s, r->g->Hp, r->g->Wh);
    else
        conv2d_pad_image(xpad, x, s, r->g->Hp, r->g->Wp);
}

/* Item it: its output rows of its channel block, from its image's padded copy
 * (the slot's, made here when it holds another image). */
static void direct_item(void *ctx, int64_t it, int slot)
{
    const direct_run *r = ctx;
    const conv2d_shape *s = r->s;
    int64_t part = it % r->parts, n = it / r->parts / r->blocks;
    int64_t k0 = it / r->parts % r->blocks * r->kb;
    int64_t p0 = part * r->rows, p1 = p0 + r->rows < s->P ? p0 + r->rows : s->P;
    float *xpad = r->scratch + (r->shared ? n : slot) * r->per;
    if (!r->shared && r->padded[slot] != n) {
        pad_into(r, xpad, r->x + n * r->xsz, s);
        r->padded[slot] = n;
    }
    r->fn(r->y + n * r->ysz, xpad, r->wB, r->b, k0, s->K - k0 < r->kb ? s->K - k0 : r->kb, p0, p1,
          r->g);
}

/* Plane i (image i / C, channel i % C) of the shared padded images, for
 * fastcnn_parallel_for. */
static void pad_plane(void *ctx, int64_t i, int slot)
{
    const direct_run *r = ctx;
    conv2d_shape one = *r->s;
    (void)slot;
    one.C = 1;
    pad_into(r, r->scratch + i * (r->per / r->s->C), r->x + i * r->s->H * r->s->W, &one);
}

/* y (N, K, P, Q) = conv(x, w) + b by the direct kernel (stride 1 or 2, both ways). */
int conv2d_direct_forward(float *y, const float *x, const float *w, const float *b,
                          const conv2d_shape *s, int nthreads)
{
    const conv2d_kernels *kr = conv2d_kernels_for(fastcnn_isa());
    conv2d_direct_block_fn fn = kr->direct_block;
    int64_t kb = kr->direct_kb;
    int64_t Qv = (s->Q + DIRECT_WP_ALIGN - 1) / DIRECT_WP_ALIGN * DIRECT_WP_ALIGN;
    int64_t Wh = s->sw == 2 ? Qv + s->S / 2 : 0;
    direct_geom g = {s->C, s->K, s->R, s->S, s->P, s->Q, (s->P - 1) * s->sh + s->R,
                     Wh ? 2 * Wh : Qv + s->S - 1, s->clamp, s->lo, s->hi, Wh};
    int64_t blocks = (s->K + kb - 1) / kb, CRS = s->C * s->R * s->S;
    int64_t per = s->C * g.Hp * g.Wp, xsz = s->C * s->H * s->W, ysz = s->K * s->P * s->Q;
    int nt = fastcnn_threads_for(2 * s->N * s->K * s->C * s->R * s->S * s->P * s->Q, nthreads);
    int64_t rows = conv2d_part_rows(s->P, s->N * blocks, nt), parts = (s->P + rows - 1) / rows;
    int64_t items = s->N * blocks * parts;
    int shared = parts > 1;
    if (nt > items)
        nt = (int)items;
    /* per slot: the image its padded copy holds (int64, first: aligned), then
     * the padded images (per slot, or per image when shared), then the
     * packed weights */
    int64_t marks = (2 * nt + 15) / 16 * 16, at = marks + (shared ? s->N : nt) * per;
    float *scratch = conv2d_scratch_take(at + blocks * kb * CRS);
    if (!scratch)
        return FASTCNN_ENOMEM;
    float *wB = scratch + at;
    pack_blocks(wB, w, s->K, CRS, kb);
    direct_run r = {y, x, wB, b, s, &g, fn, blocks, parts, rows, kb, per, xsz, ysz, shared,
                    scratch + marks, (int64_t *)scratch};
    for (int t = 0; t < nt; t++)
        r.padded[t] = -1;
    if (shared)     /* each plane is written by one work item */
        fastcnn_parallel_for(s->N * s->C, pad_plane, &r, nt);
    /* each item (image, channel block, rows) writes its own output rows */
    fastcnn_parallel_for(items, direct_item, &r, nt);
    conv2d_scratch_give(scratch);
    return FASTCNN_OK;
}
