/* conv2d_kvec.c - the channel-vector direct convolution (conv2d.c chooses
 * it when K is a multiple of the vector length and the kernel is wider than
 * 1x1, or by timing at any K: the last block's channels past K are zero
 * weights, computed and not stored): a tile keeps output positions x
 * channel vectors in registers (the loops in conv2d_kernel.h, compiled per
 * instruction set); at batch 1, rows split over the threads as the direct
 * kernel's (conv2d_part_rows). (conv2d.c also runs backward data on it, as
 * the forward convolution of dy with the flipped kernel.) */
#include <string.h>

#include "conv2d_generic.h"
#include "conv2d_internal.h"
#include "gemm.h"

/* The portable build of the channel-vector block kernel (conv2d_kernel.h, conv2d_generic.h). */
void conv2d_kvec_block_generic(float *y, const float *xpad, const float *wB, const float *b,
                               int64_t k0, int kv, int64_t p0, int64_t p1, const kvec_geom *g)
{
    kvec_block(y, xpad, wB, b, k0, kv, p0, p1, g);
}

/* One packing of the weight blocks, for fastcnn_parallel_for. */
typedef struct {
    float *wB;
    const float *w;
    int64_t K, CRS, kb;
} pack_call;

/* Block i of wB: rows i kb .. (i+1) kb - 1 of w transposed, zeros past K. */
static void pack_block(void *ctx, int64_t i, int slot)
{
    const pack_call *p = ctx;
    float *dst = p->wB + i * p->CRS * p->kb;
    int64_t rows = p->K - i * p->kb < p->kb ? p->K - i * p->kb : p->kb;
    (void)slot;
    if (rows < p->kb)
        memset(dst, 0, (size_t)(p->CRS * p->kb) * sizeof(float));
    sgemm_transpose(dst, p->kb, p->w + i * p->kb * p->CRS, p->CRS, rows, p->CRS);
}

/* wB (ceil(K / kb), CRS, kb) = w (K, CRS), each block of kb rows
 * transposed, zeros past K; the blocks are packed in parallel. */
static void pack_blocks(float *wB, const float *w, int64_t K, int64_t CRS, int64_t kb,
                        int nthreads)
{
    pack_call p = {wB, w, K, CRS, kb};
    /* each block is written by one work item */
    fastcnn_parallel_for((K + kb - 1) / kb, pack_block, &p,
                         fastcnn_threads_for(K * CRS, nthreads));
}

/* conv2d_prepare_fn of the weight blocks: variant = rows per block */
static int prepare_blocks(float *wB, const float *w, const conv2d_shape *s, int64_t kb,
                          int nthreads)
{
    pack_blocks(wB, w, s->K, s->C * s->R * s->S, kb, nthreads);
    return FASTCNN_OK;
}

/* One forward call's work items (image, channel block, part of the rows), for
 * fastcnn_parallel_for. */
typedef struct {
    float *y;
    const float *x, *wB, *b;
    const conv2d_shape *s;
    const kvec_geom *g;
    conv2d_kvec_block_fn fn;
    int64_t blocks, parts, rows, kv, vl, per, xsz, ysz;
    int in_place, shared;   /* shared: the padded images made beforehand, one each */
    float *scratch;         /* per slot (or per image when shared): a padded image */
    int64_t *padded;        /* per slot: the image its padded copy holds, or -1 */
} kvec_call;

/* Item it: its output rows of its channel block, from its image's padded copy
 * (the slot's, made here when it holds another image). */
static void kvec_item(void *ctx, int64_t it, int slot)
{
    const kvec_call *r = ctx;
    int64_t part = it % r->parts, n = it / r->parts / r->blocks;
    int64_t k0 = it / r->parts % r->blocks * r->kv * r->vl;
    int64_t p0 = part * r->rows, p1 = p0 + r->rows < r->s->P ? p0 + r->rows : r->s->P;
    const float *xin = r->in_place ? r->x + n * r->xsz
                     : r->shared ? r->scratch + n * r->per : r->scratch + slot * r->per;
    if (!r->in_place && !r->shared && r->padded[slot] != n) {
        conv2d_pad_image(r->scratch + slot * r->per, r->x + n * r->xsz, r->s, r->g->Hp, r->g->Wp);
        r->padded[slot] = n;
    }
    r->fn(r->y + n * r->ysz, xin, r->wB, r->b, k0, (int)r->kv, p0, p1, r->g);
}

/* Plane i (image i / C, channel i % C) of the padded images, for fastcnn_parallel_for. */
static void pad_plane(void *ctx, int64_t i, int slot)
{
    const kvec_call *r = ctx;
    conv2d_shape one = *r->s;
    int64_t planes = r->per / r->s->C;
    (void)slot;
    one.C = 1;
    conv2d_pad_image(r->scratch + i * planes, r->x + i * r->s->H * r->s->W, &one, r->g->Hp,
                     r->g->Wp);
}

/* b (K) in bias (Kp), zeros past K: the kernel loads the last block's bias as vectors. */
static const float *padded_bias(float *bias, const float *b, int64_t K, int64_t Kp)
{
    if (!b || K == Kp)
        return b;
    memcpy(bias, b, (size_t)K * sizeof(float));
    memset(bias + K, 0, (size_t)(Kp - K) * sizeof(float));
    return bias;
}

/* y (N, K, P, Q) = conv(x, w) + b by the channel-vector kernel, in blocks
 * of one or two vectors of channels (the last padded with zero weights). */
int conv2d_kvec_forward(float *y, const float *x, const float *w, const float *b,
                        const conv2d_shape *s, conv2d_prepared *prep, int nthreads)
{
    const conv2d_kernels *kr = conv2d_kernels_for(fastcnn_isa());
    conv2d_kvec_block_fn fn = kr->kvec_block;
    int64_t vl = kr->vl;
    kvec_geom g = {s->C, s->K, s->R, s->S, s->sh, s->sw, s->P, s->Q,
                   (s->P - 1) * s->sh + s->R, (s->Q - 1) * s->sw + s->S,
                   s->clamp, s->lo, s->hi};
    int64_t vecs = (s->K + vl - 1) / vl, Kp = vecs * vl;
    int kv = vecs % 2 == 0 ? 2 : 1;
    int64_t blocks = vecs / kv, CRS = s->C * s->R * s->S;
    /* an image that is its own padded grid (no padding, every row and column
     * read: stride 1 'valid', e.g. a pointwise convolution) is read in place */
    int in_place = s->ph == 0 && s->pw == 0 && g.Hp == s->H && g.Wp == s->W;
    int64_t per = in_place ? 0 : s->C * g.Hp * g.Wp;
    int64_t xsz = s->C * s->H * s->W, ysz = s->K * s->P * s->Q;
    int nt = fastcnn_threads_for(2 * s->N * s->K * CRS * s->P * s->Q, nthreads);
    int64_t rows = conv2d_part_rows(s->P, s->N * blocks, nt), parts = (s->P + rows - 1) / rows;
    int64_t items = s->N * blocks * parts;
    int shared = parts > 1 && !in_place;
    if (nt > items)
        nt = (int)items;
    const float *kept = conv2d_prepared_get(prep, PREPARED_KVEC, w, s, kv * vl, CRS * Kp,
                                            prepare_blocks, nthreads);
    /* per slot: the image its padded copy holds (int64, first: aligned), then
     * the padded images (per slot, or per image when shared), the padded
     * bias, then the packed weights unless kept */
    int64_t marks = (2 * nt + 15) / 16 * 16, at = marks + (shared ? s->N : nt) * per;
    float *scratch = conv2d_scratch_take(at + Kp + (kept ? 0 : CRS * Kp));
    if (!scratch)
        return FASTCNN_ENOMEM;
    const float *wB = kept, *bias = padded_bias(scratch + at, b, s->K, Kp);
    if (!kept) {
        pack_blocks(scratch + at + Kp, w, s->K, CRS, kv * vl, nthreads);
        wB = scratch + at + Kp;
    }
    kvec_call r = {y, x, wB, bias, s, &g, fn, blocks, parts, rows, kv, vl, per, xsz, ysz,
                   in_place, shared, scratch + marks, (int64_t *)scratch};
    for (int t = 0; t < nt; t++)
        r.padded[t] = -1;
    if (shared)     /* each plane is written by one work item */
        fastcnn_parallel_for(s->N * s->C, pad_plane, &r, nt);
    /* each item (image, channel block, rows) writes its own output rows */
    fastcnn_parallel_for(items, kvec_item, &r, nt);
    conv2d_scratch_give(scratch);
    return FASTCNN_OK;
}
