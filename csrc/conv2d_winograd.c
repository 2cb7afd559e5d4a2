/* conv2d_winograd.c - Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution
 * (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
 * 2015) for 3x3, stride-1, undilated convolutions (conv2d.c times them
 * against the other paths): each 2x2 block of outputs costs 16 multiply-adds
 * per channel pair instead of 36, in 16 GEMMs over channels; each 4x4
 * block 36 instead of 144, in 36 GEMMs (F(4x4, 3x3) has 36 positions
 * wherever the text below says 16).
 *
 * With V (16, K, C) the transformed filters G g G^T, G = [1 0 0; 1/2 1/2 1/2;
 * 1/2 -1/2 1/2; 0 0 1], the tiles of all images are taken in blocks of tb:
 *   U (16, C, tb) = input transforms of the block's tiles  (per ISA)
 *   M (16, K, tb) = V[xi] U[xi] for each xi                 (sgemm, V packed)
 *   y             = output transforms of M, + b, clamped    (per ISA)
 * Threads take contiguous ranges of blocks (each with its own U and M, GEMMs
 * on one thread) when there are blocks for all; otherwise blocks run one
 * after another and each phase splits over channels or the 16 products.
 * Backward data is the forward of dy with the flipped kernel (stride 1: dy
 * padded by 2 - ph, 2 - pw), so it needs ph, pw <= 2.
 *
 * The weight gradient is F(3x3, 2x2) over the same tiles: each tile adds
 * the correlation of its 4x4 input window d with its 2x2 block e of dy to
 * dw's 3x3, as A'^T [(G' e G'^T) . (B^T d B)] A' with the forward's B^T,
 * G' = [1 0; 1/2 1/2; 1/2 -1/2; 0 -1] and A'^T = [1 1 1 0; 0 1 -1 0;
 * 0 1 1 1] (points 0, 1, -1 and infinity; the sign of B^T's last row moved
 * into G'). Summed over tiles in 16 GEMMs, MW[xi] (K, C) += E[xi] U[xi]^T,
 * the 3x3 comes out once per filter at the end. */
#include <stdatomic.h>
#include <string.h>

#include "conv2d_generic.h"
#include "conv2d_internal.h"
#include "gemm.h"

/* The portable build of the transforms (conv2d_winograd_kernel.h). */
void conv2d_wino_input_generic(float *u, int64_t us, const float *x, int64_t i0, int64_t j0,
                               int64_t n, const wino_geom *g)
{
    wino_input_tiles(u, us, x, i0, j0, n, g);
}

void conv2d_wino_output_generic(float *y, const float *m, int64_t ms, int64_t i0, int64_t j0,
                                int64_t n, float bias, const wino_geom *g)
{
    wino_output_tiles(y, m, ms, i0, j0, n, bias, g);
}

void conv2d_wino_filters_generic(float *v, int64_t vs, const float *taps, int64_t K, int flip,
                                 int m)
{
    wino_filters_seg(v, vs, taps, K, flip, m);
}

void conv2d_wino_grad_generic(float *v, int64_t vs, const float *dy, int64_t i0, int64_t j0,
                              int64_t n, const wino_geom *g)
{
    wino_grad_seg(v, vs, dy, i0, j0, n, g);
}

/* ---- filters ------------------------------------------------------------------ */

/* taps (cnt, 9, kb) = the taps of the filters from input channels c0 ..
 * c0 + cnt - 1 to output channels k0 .. k0 + kb - 1, taps[(c - c0) 9 kb +
 * rt kb + k - k0] = tap rt (not rotated) of filter (k, c): w (K, C, 3,
 * 3)[k][c], or with flip w (C, K, 3, 3)[c][k]. */
static void gather_taps(float *taps, const float *w, int64_t K, int64_t C, int flip, int64_t k0,
                        int64_t kb, int64_t c0, int64_t cnt)
{
    if (!flip) {
        sgemm_transpose(taps, kb, w + k0 * C * 9 + c0 * 9, C * 9, kb, 9 * cnt);
        return;
    }
    for (int64_t c = c0; c < c0 + cnt; c++)
        sgemm_transpose(taps + (c - c0) * 9 * kb, kb, w + (c * K + k0) * 9, 9, kb, 9);
}

/* The GEMM kernel of the wide layout's packed V[xi] (K, C): chosen by K
 * alone (sgemm's choice for K rows and many columns, where the columns'
 * padding no longer counts), so that one packing serves every batch size. */
static int wide_kernel(int64_t K)
{
    return sgemm_packed_a_kernel(K, (int64_t)1 << 20);
}

/* Positions of a tile's transforms: 16 for F(2x2, 3x3), 36 for F(4x4, 3x3). */
static int64_t positions(int64_t m)
{
    return (m + 2) * (m + 2);
}

/* Floats of V: (16, C, K) if narrow; else 16 V[xi] (K, C), each packed as
 * sgemm's A for wide_kernel(K). */
static int64_t filter_floats(int64_t K, int64_t C, int narrow, int m)
{
    return positions(m) * (narrow ? K * C : sgemm_packed_a_floats(wide_kernel(K), K, C));
}

/* One filter transform, for fastcnn_parallel_for. */
typedef struct {
    const conv2d_kernels *kr;
    float *V, *VT, *taps;
    const float *w;
    int64_t K, C;
    int flip, kernel, m;
} filter_transform;

/* Input channels [8 i, 8 i + 8): their taps and rows of VT's 16 matrices. */
static void transform_channels(void *ctx, int64_t i, int slot)
{
    const filter_transform *ft = ctx;
    int64_t K = ft->K, C = ft->C, c0 = 8 * i, cnt = C - c0 < 8 ? C - c0 : 8;
    (void)slot;
    gather_taps(ft->taps + c0 * 9 * K, ft->w, K, C, ft->flip, 0, K, c0, cnt);
    for (int64_t c = c0; c < c0 + cnt; c++)
        ft->kr->wino_filters(ft->VT + c * K, C * K, ft->taps + c * 9 * K, K, ft->flip, ft->m);
}

/* Packed matrix xi of V from VT's. */
static void pack_position(void *ctx, int64_t xi, int slot)
{
    const filter_transform *ft = ctx;
    (void)slot;
    sgemm_pack_a(ft->V + xi * sgemm_packed_a_floats(ft->kernel, ft->K, ft->C), ft->kernel, 1,
                 ft->K, ft->C, ft->VT + xi * ft->C * ft->K, ft->K, 1);
}

/* V (filter_floats) = G f G^T of the filter from input channel c to output
 * channel k: w (K, C, 3, 3)[k][c], or with flip (backward data) w (C, K,
 * 3, 3)[c][k] rotated by 180 degrees. Each input channel's taps are first
 * transposed to (9, K) in tmp (9 C K floats), so the transform runs along
 * k into (16, C, K), in tmp (16 C K floats more) when wide: each V[xi] is
 * then packed from its transpose, once per call (not once per block of
 * tiles: the deep layers' V is larger than their blocks' inputs). */
static void transform_filters(float *V, float *tmp, const float *w, int64_t K, int64_t C,
                              int flip, int narrow, int m, int nthreads)
{
    filter_transform ft = {conv2d_kernels_for(fastcnn_isa()), V, narrow ? V : tmp + 9 * C * K,
                           tmp, w, K, C, flip, wide_kernel(K), m};
    int nt = fastcnn_threads_for(64 * K * C, nthreads);
    /* each chunk of 8 input channels c writes its own taps and rows c of VT's
     * 16 matrices */
    fastcnn_parallel_for((C + 7) / 8, transform_channels, &ft, nt);
    if (!narrow)
        /* each xi writes its own packed matrix of V */
        fastcnn_parallel_for(positions(m), pack_position, &ft, nt);
}

/* ---- blocks of tiles ---------------------------------------------------------- */

/* Floats from one position's matrix of a block to the next: rows x tb, and
 * a cache line more. Without it the 16 (or 36) matrices of U and M lie a
 * multiple of 4 KiB apart whenever rows x tb is a multiple of 1024, and a
 * transform's 16 streams of stores (or loads) all fall into the same set of
 * L1 lines (12 ways on Zen 5), evicting each other's lines before they are
 * complete. */
static int64_t matrix_stride(int64_t rows, int64_t tb)
{
    return rows * tb + 16;
}

/* Tiles per block at most (the GEMMs' columns), and the bytes of one block's
 * U and M at most (so that they stay in the outer caches). */
#define WINO_BLOCK 512
#define WINO_BLOCK_BYTES ((int64_t)4 << 20)

/* Up to this many tiles per block, the products are taken transposed (see
 * multiply_block). */
#define WINO_NARROW 64
/* Output channels whose filters a fused product transforms at once (at most). */
#define WINO_KB 64

typedef struct {
    const conv2d_kernels *kr;
    const wino_geom *g;
    const float *x, *w, *V, *b;     /* V: the transformed filters, NULL if fused */
    float *y;
    int64_t tb;         /* tiles per block */
    int narrow;         /* tb <= WINO_NARROW: V is (16, C, K), else packed (filter_floats) */
    int fused;          /* narrow, one block: filters transformed inside the product */
    int flip;           /* backward data: w is (C, K, 3, 3), rotated */
} wino_call;

/* A run of tiles within one image's rows of tiles: image n, first tile
 * (i0, j0), len tiles in row-major order. */
typedef struct {
    int64_t n, i0, j0, len;
} tile_run;

/* The run that starts at tile t (counting over all images) and ends at the
 * image's end, at tile `end` or after WINO_SEG tiles, whichever is first. */
static tile_run run_at(const wino_geom *g, int64_t t, int64_t end)
{
    int64_t per = g->th * g->tw, in = t % per;
    tile_run r = {t / per, in / g->tw, in % g->tw, per - in};
    r.len = r.len < end - t ? r.len : end - t;
    r.len = r.len < WINO_SEG ? r.len : WINO_SEG;
    return r;
}

/* One phase of one block of tiles [t0, t0 + cnt), for fastcnn_parallel_for. */
typedef struct {
    const wino_call *w;
    float *M, *T, *scratch;
    const float *U;
    int64_t t0, cnt, kb, per;
    atomic_int err;
} wino_phase;

/* The cache lines of a small plane of n floats (at most 16 KB), fetched
 * ahead: a channel's planes lie an image apart, each too short for the
 * hardware prefetcher to follow (64x64x16x16 at batch 256, F(4x4, 3x3): input
 * transform 0.58 -> 0.50 of the products' time, perf on Zen 3). */
static void prefetch_plane(const float *plane, int64_t n)
{
    for (int64_t e = 0; n <= 4096 && e < n; e += 16)
        __builtin_prefetch(plane + e);
}

/* Channel c's rows of U: the input transforms of the block's tiles (the next
 * image's plane fetched ahead as its first run starts). */
static void input_channel(void *ctx, int64_t c, int slot)
{
    const wino_phase *ph = ctx;
    const wino_call *w = ph->w;
    const wino_geom *g = w->g;
    int64_t HW = g->H * g->W, us = matrix_stride(g->C, w->tb);
    float *U = (float *)ph->U;
    (void)slot;
    for (int64_t off = 0; off < ph->cnt;) {
        tile_run r = run_at(g, ph->t0 + off, ph->t0 + ph->cnt);
        if (r.i0 == 0 && r.j0 == 0 && off + r.len < ph->cnt)
            prefetch_plane(w->x + ((r.n + 1) * g->C + c) * HW, HW);
        w->kr->wino_input(U + c * w->tb + off, us, w->x + (r.n * g->C + c) * HW, r.i0, r.j0,
                          r.len, g);
        off += r.len;
    }
}

/* U (16, C, tb) = the input transforms of tiles [t0, t0 + cnt). */
static void input_block(const wino_call *w, float *U, int64_t t0, int64_t cnt, int nt)
{
    wino_phase ph = {w, NULL, NULL, NULL, U, t0, cnt, 0, 0, 0};
    /* each channel writes its own rows of U */
    fastcnn_parallel_for(w->g->C, input_channel, &ph, nt);
}

/* T[xi] (cnt, K) = U[xi]^T V[xi]^T for the 16 positions xi of the one
 * narrow block of a call (few tiles: deep layers at batch 1), with the
 * filters transformed here, kb output channels at a time into a thread's own
 * Vb (16, C, kb): so V is never written out whole (16 C K floats, 1.8 times
 * the filters) and read back. */
/* Output channel block i of multiply_fused, in the slot's taps and Vb. */
static void fused_kblock(void *ctx, int64_t i, int slot)
{
    wino_phase *ph = ctx;
    const wino_call *w = ph->w;
    int64_t C = w->g->C, K = w->g->K, kb = ph->kb, tb = w->tb;
    int64_t k0 = i * kb, n = K - k0 < kb ? K - k0 : kb;
    float *taps = ph->scratch + slot * ph->per, *vb = taps + 9 * C * kb;
    int m = (int)w->g->m;
    gather_taps(taps, w->w, K, C, w->flip, k0, n, 0, C);
    for (int64_t c = 0; c < C; c++)
        w->kr->wino_filters(vb + c * n, C * n, taps + c * 9 * n, n, w->flip, m);
    for (int xi = 0; xi < positions(m); xi++)
        if (sgemm(1, 0, ph->cnt, n, C, 1.0f, ph->U + xi * matrix_stride(C, tb), tb,
                  vb + xi * C * n, n, 0.0f,
                  ph->T + xi * tb * K + k0, K, 1))
            atomic_store(&ph->err, 1);
}

static int multiply_fused(const wino_call *w, float *T, const float *U, int64_t cnt, int nt)
{
    const wino_geom *g = w->g;
    int64_t C = g->C, K = g->K, kb = WINO_KB;
    while (kb > 16 && (K + kb - 1) / kb < nt)
        kb /= 2;
    int64_t kblocks = (K + kb - 1) / kb, per = (9 + positions(g->m)) * C * kb;
    int nth = nt < kblocks ? nt : (int)kblocks;
    float *scratch = conv2d_scratch_take(nth * per);
    if (!scratch)
        return FASTCNN_ENOMEM;
    wino_phase ph = {w, NULL, T, scratch, U, 0, cnt, kb, per, 0};
    /* each output channel block writes its own columns of T */
    fastcnn_parallel_for(kblocks, fused_kblock, &ph, nth);
    conv2d_scratch_give(scratch);
    return atomic_load(&ph.err) ? FASTCNN_ENOMEM : FASTCNN_OK;
}

/* M[xi] (K, cnt) = V[xi] (K, C) U[xi] (C, cnt) for the 16 positions xi,
 * V[xi] packed. Narrow blocks take M[xi]^T (cnt, K) = U[xi]^T V[xi]^T into
 * T (16, tb, K) and transpose it: with so few rows the GEMM reads V[xi]^T
 * in place (deep layers at batch 1). */
/* Position xi of multiply_block: M[xi], through T[xi] when narrow (or only
 * T[xi]'s transpose when fused). */
static void multiply_position(void *ctx, int64_t xi, int slot)
{
    wino_phase *ph = ctx;
    const wino_call *w = ph->w;
    const wino_geom *g = w->g;
    int64_t tb = w->tb, cnt = ph->cnt;
    const float *u = ph->U + xi * matrix_stride(g->C, tb);
    float *m = ph->M + xi * matrix_stride(g->K, tb), *mt = ph->T + xi * tb * g->K;
    int kernel = wide_kernel(g->K), err = FASTCNN_OK;
    (void)slot;
    if (w->fused) {
        sgemm_transpose(m, tb, mt, g->K, cnt, g->K);
        return;
    }
    if (!w->narrow) {
        err = sgemm_packed_bias_clamp(w->V + xi * sgemm_packed_a_floats(kernel, g->K, g->C),
                                      kernel, g->K, cnt, g->C, u, tb, m, tb, NULL, NULL, 1);
    } else {
        err = sgemm(1, 0, cnt, g->K, g->C, 1.0f, u, tb, w->V + xi * g->K * g->C, g->K, 0.0f,
                    mt, g->K, 1);
        sgemm_transpose(m, tb, mt, g->K, cnt, g->K);
    }
    if (err)
        atomic_store(&ph->err, 1);
}

static int multiply_block(const wino_call *w, float *M, float *T, const float *U, int64_t cnt,
                          int nt)
{
    int err = w->fused ? multiply_fused(w, T, U, cnt, nt) : FASTCNN_OK;
    if (err)
        return err;
    wino_phase ph = {w, M, T, NULL, U, 0, cnt, 0, 0, 0};
    /* each xi writes its own M[xi] (and T[xi]) */
    fastcnn_parallel_for(positions(w->g->m), multiply_position, &ph, nt);
    return atomic_load(&ph.err) ? FASTCNN_ENOMEM : FASTCNN_OK;
}

/* Output channel k's planes of the block's tiles. */
static void output_channel(void *ctx, int64_t k, int slot)
{
    const wino_phase *ph = ctx;
    const wino_call *w = ph->w;
    const wino_geom *g = w->g;
    int64_t PQ = g->P * g->Q, ms = matrix_stride(g->K, w->tb);
    (void)slot;
    for (int64_t off = 0; off < ph->cnt;) {
        tile_run r = run_at(g, ph->t0 + off, ph->t0 + ph->cnt);
        w->kr->wino_output(w->y + (r.n * g->K + k) * PQ, ph->M + k * w->tb + off, ms, r.i0,
                           r.j0, r.len, w->b ? w->b[k] : 0.0f, g);
        off += r.len;
    }
}

/* y's tiles [t0, t0 + cnt) = the output transforms of M (16, K, tb), + b. */
static void output_block(const wino_call *w, const float *M, int64_t t0, int64_t cnt, int nt)
{
    wino_phase ph = {w, (float *)M, NULL, NULL, NULL, t0, cnt, 0, 0, 0};
    /* each output channel writes its own planes */
    fastcnn_parallel_for(w->g->K, output_channel, &ph, nt);
}

/* Scratch floats of one block: U (16, C, tb), M (16, K, tb) (matrix_stride
 * apart) and, if narrow, T (16, tb, K). */
static int64_t block_floats(const wino_call *w)
{
    const wino_geom *g = w->g;
    return positions(g->m) * (matrix_stride(g->C, w->tb) + matrix_stride(g->K, w->tb)
                              + (w->narrow ? g->K * w->tb : 0));
}

/* Tiles [t0, t0 + cnt) through the three phases, each on nt threads. */
static int run_block(const wino_call *w, float *scratch, int64_t t0, int64_t cnt, int nt)
{
    int64_t npos = positions(w->g->m);
    float *U = scratch, *M = U + npos * matrix_stride(w->g->C, w->tb);
    float *T = M + npos * matrix_stride(w->g->K, w->tb);
    input_block(w, U, t0, cnt, nt);
    int err = multiply_block(w, M, T, U, cnt, nt);
    if (!err)
        output_block(w, M, t0, cnt, nt);
    return err;
}

/* Tiles per block for T tiles on nt threads: at most WINO_BLOCK and
 * WINO_BLOCK_BYTES of U and M, as even as blocks a multiple of nt make them,
 * rounded up to 8 unless that leaves fewer blocks than threads where blocks
 * of 8 tiles or more had one for each (run_tiles then splits each phase
 * instead): ResNet-18's 56x56 layer at batch 1, F(4x4, 3x3) on 16 threads
 * takes 196 tiles in 16 blocks of 13, not 13 blocks of 16. */
static int64_t block_tiles(const wino_geom *g, int64_t T, int nt)
{
    int64_t most = WINO_BLOCK_BYTES / (positions(g->m) * (g->C + g->K) * (int64_t)sizeof(float));
    most = most > WINO_BLOCK ? WINO_BLOCK : most < 16 ? 16 : most / 8 * 8;
    int64_t blocks = (T + most - 1) / most;
    blocks = (blocks + nt - 1) / nt * nt;
    int64_t tb = (T + blocks - 1) / blocks, up = (tb + 7) / 8 * 8;
    return tb >= 8 && (T + up - 1) / up < nt && (T + tb - 1) / tb >= nt ? tb : up;
}

/* The blocks of run_tiles, one thread each, for fastcnn_parallel_for. */
typedef struct {
    const wino_call *w;
    float *scratch;
    int64_t T, per;
    atomic_int err;
} wino_blocks;

/* Block k through the three phases on the slot's thread, in its U and M. */
static void one_block(void *ctx, int64_t k, int slot)
{
    wino_blocks *bl = ctx;
    int64_t t0 = k * bl->w->tb, cnt = bl->T - t0 < bl->w->tb ? bl->T - t0 : bl->w->tb;
    if (run_block(bl->w, bl->scratch + slot * bl->per, t0, cnt, 1))
        atomic_store(&bl->err, 1);
}

/* y (N, K, P, Q) from x (N, C, H, W) by the filters transformed in w: its
 * T tiles on nt threads. */
static int run_tiles(wino_call *w, int64_t T, int nt)
{
    int64_t blocks = (T + w->tb - 1) / w->tb, per = block_floats(w);
    int outer = blocks >= nt ? nt : 1;
    float *scratch = conv2d_scratch_take(outer * per);
    if (!scratch)
        return FASTCNN_ENOMEM;
    int err;
    if (outer > 1) {
        /* each block writes its own outputs, in its thread's U and M */
        wino_blocks bl = {w, scratch, T, per, 0};
        fastcnn_parallel_for(blocks, one_block, &bl, outer);
        err = atomic_load(&bl.err);
    } else {
        /* one block at a time, each phase on every thread */
        err = FASTCNN_OK;
        for (int64_t k = 0; k < blocks && !err; k++) {
            int64_t t0 = k * w->tb, cnt = T - t0 < w->tb ? T - t0 : w->tb;
            err = run_block(w, scratch, t0, cnt, nt);
        }
    }
    conv2d_scratch_give(scratch);
    return err ? FASTCNN_ENOMEM : FASTCNN_OK;
}

/* Geometry of a stride-1 3x3 convolution from C planes (H, W) to K planes
 * (P, Q) with top/left padding ph, pw, in tiles of m x m outputs. */
static wino_geom geometry(int64_t C, int64_t H, int64_t W, int64_t K, int64_t P, int64_t Q,
                          int64_t ph, int64_t pw, int m, const conv2d_shape *s)
{
    wino_geom g = {C, K, H, W, P, Q, ph, pw, m, (P + m - 1) / m, (Q + m - 1) / m, 0, 0.0f, 0.0f};
    if (s) {
        g.clamp = s->clamp, g.lo = s->lo, g.hi = s->hi;
    }
    return g;
}

/* conv2d_prepare_fn of the forward's filters: variant = narrow + 2 m */
static int prepare_filters(float *V, const float *w, const conv2d_shape *s, int64_t variant,
                           int nthreads)
{
    int m = (int)(variant / 2);
    float *tmp = conv2d_scratch_take((9 + positions(m)) * s->K * s->C);
    if (!tmp)
        return FASTCNN_ENOMEM;
    transform_filters(V, tmp, w, s->K, s->C, 0, (int)(variant % 2), m, nthreads);
    conv2d_scratch_give(tmp);
    return FASTCNN_OK;
}

/* y = the convolution of x by w (flipped for backward data), + b, of N
 * images; the forward's filters transformed in prep where it keeps them. */
static int convolve(float *y, const float *x, const float *w, const float *b,
                    const wino_geom *g, int64_t N, int flip, const conv2d_shape *s,
                    conv2d_prepared *prep, int nthreads)
{
    int m = (int)g->m;
    int64_t npos = positions(m);
    int64_t T = N * g->th * g->tw;
    int nt = fastcnn_threads_for(2 * npos * T * g->K * g->C, nthreads);
    wino_call call = {conv2d_kernels_for(fastcnn_isa()), g, x, w, NULL, b, y,
                      block_tiles(g, T, nt), 0, 0, flip};
    call.narrow = call.tb <= WINO_NARROW;
    int kind = (m == 4 ? PREPARED_WINO4_NARROW : PREPARED_WINO_NARROW) + !call.narrow;
    call.V = flip ? NULL : conv2d_prepared_get(prep, kind, w, s, call.narrow + 2 * m,
                                               filter_floats(g->K, g->C, call.narrow, m),
                                               prepare_filters, nthreads);
    if (call.V)
        return run_tiles(&call, T, nt);
    call.fused = call.narrow && call.tb >= T;
    if (call.fused)
        return run_tiles(&call, T, nt);
    int64_t KC = g->K * g->C;
    float *V = conv2d_scratch_take(filter_floats(g->K, g->C, call.narrow, m));
    float *tmp = conv2d_scratch_take((9 + npos) * KC);
    int err = V && tmp ? FASTCNN_OK : FASTCNN_ENOMEM;
    call.V = V;
    if (!err) {
        transform_filters(V, tmp, w, g->K, g->C, flip, call.narrow, m, nthreads);
        conv2d_scratch_give(tmp);
        tmp = NULL;
        err = run_tiles(&call, T, nt);
    }
    if (V)
        conv2d_scratch_give(V);
    if (tmp)
        conv2d_scratch_give(tmp);
    return err;
}

int conv2d_winograd_forward(float *y, const float *x, const float *w, const float *b,
                            const conv2d_shape *s, int m, conv2d_prepared *prep, int nthreads)
{
    wino_geom g = geometry(s->C, s->H, s->W, s->K, s->P, s->Q, s->ph, s->pw, m, s);
    return convolve(y, x, w, b, &g, s->N, 0, s, prep, nthreads);
}

int conv2d_winograd_backward_data(float *dx, const float *dy, const float *w,
                                  const conv2d_shape *s, int nthreads)
{
    wino_geom g = geometry(s->K, s->P, s->Q, s->C, s->H, s->W, 2 - s->ph, 2 - s->pw, 2, NULL);
    return convolve(dx, dy, w, NULL, &g, s->N, 1, s, NULL, nthreads);
}

/* ---- weight gradient ---------------------------------------------------------- */

/* One phase of the weight gradient's block, for fastcnn_parallel_for. */
typedef struct {
    const wino_call *w;
    const float *dy;
    float *E, *U, *MW;
    int64_t t0, cnt, first;     /* first: the first block (MW = rather than +=) */
    atomic_int err;
} wgrad_phase;

/* Output channel k's rows of E: the gradient transforms of the block's tiles. */
static void grad_channel(void *ctx, int64_t k, int slot)
{
    const wgrad_phase *ph = ctx;
    const wino_call *w = ph->w;
    const wino_geom *g = w->g;
    int64_t PQ = g->P * g->Q, es = matrix_stride(g->K, w->tb);
    (void)slot;
    for (int64_t off = 0; off < ph->cnt;) {
        tile_run r = run_at(g, ph->t0 + off, ph->t0 + ph->cnt);
        w->kr->wino_grad(ph->E + k * w->tb + off, es, ph->dy + (r.n * g->K + k) * PQ, r.i0,
                         r.j0, r.len, g);
        off += r.len;
    }
}

/* MW[xi] (K, C) (+)= E[xi] (K, cnt) U[xi]^T (cnt, C). */
static void grad_position(void *ctx, int64_t xi, int slot)
{
    wgrad_phase *ph = ctx;
    const wino_geom *g = ph->w->g;
    int64_t tb = ph->w->tb;
    (void)slot;
    if (sgemm(0, 1, g->K, g->C, ph->cnt, 1.0f, ph->E + xi * matrix_stride(g->K, tb), tb,
              ph->U + xi * matrix_stride(g->C, tb), tb, ph->first ? 0.0f : 1.0f,
              ph->MW + xi * g->K * g->C, g->C, 1))
        atomic_store(&ph->err, 1);
}

typedef struct {
    float *dw;
    const float *MW;
    int64_t K, C;
} filter_grads;

/* Output channel k's filters dw (C, 3, 3) += A'^T MW A'. */
static void filter_grad_channel(void *ctx, int64_t k, int slot)
{
    const filter_grads *fg = ctx;
    int64_t K = fg->K, C = fg->C;
    (void)slot;
    for (int64_t c = 0; c < C; c++) {
        const float *m = fg->MW + k * C + c;
        float s[3][4];      /* A'^T m: rows */
        for (int b = 0; b < 4; b++) {
            float m0 = m[b * K * C], m1 = m[(4 + b) * K * C];
            float m2 = m[(8 + b) * K * C], m3 = m[(12 + b) * K * C];
            s[0][b] = m0 + m1 + m2;
            s[1][b] = m1 - m2;
            s[2][b] = m1 + m2 + m3;
        }
        float *f = fg->dw + (k * C + c) * 9;
        for (int r = 0; r < 3; r++) {
            f[3 * r + 0] += s[r][0] + s[r][1] + s[r][2];
            f[3 * r + 1] += s[r][1] - s[r][2];
            f[3 * r + 2] += s[r][1] + s[r][2] + s[r][3];
        }
    }
}

/* dw (K, C, 3, 3) += A'^T MW A' of each filter's 16 sums MW[xi] (K, C). */
static void add_filter_grads(float *dw, const float *MW, int64_t K, int64_t C, int nthreads)
{
    filter_grads fg = {dw, MW, K, C};
    /* each k writes its own filters */
    fastcnn_parallel_for(K, filter_grad_channel, &fg, fastcnn_threads_for(64 * K * C, nthreads));
}

int conv2d_winograd_backward_weight(float *dw, const float *dy, const float *x,
                                    const conv2d_shape *s, int nthreads)
{
    wino_geom g = geometry(s->C, s->H, s->W, s->K, s->P, s->Q, s->ph, s->pw, 2, NULL);
    int64_t T = s->N * g.th * g.tw, KC = s->K * s->C;
    int nt = fastcnn_threads_for(32 * T * KC, nthreads);
    wino_call w = {conv2d_kernels_for(fastcnn_isa()), &g, x, NULL, NULL, NULL, NULL,
                   block_tiles(&g, T, 1), 0, 0, 0};
    int64_t blocks = (T + w.tb - 1) / w.tb;
    int64_t us = matrix_stride(s->C, w.tb), es = matrix_stride(s->K, w.tb);
    float *scratch = conv2d_scratch_take(16 * (KC + us + es));
    if (!scratch)
        return FASTCNN_ENOMEM;
    float *MW = scratch, *U = MW + 16 * KC, *E = U + 16 * us;
    int err = FASTCNN_OK;
    /* blocks one after another, each phase on every thread; each xi's sums
     * in block order, so the result does not depend on the thread count */
    for (int64_t k = 0; k < blocks && !err; k++) {
        int64_t t0 = k * w.tb, cnt = T - t0 < w.tb ? T - t0 : w.tb;
        wgrad_phase ph = {&w, dy, E, U, MW, t0, cnt, k == 0, 0};
        input_block(&w, U, t0, cnt, nt);
        /* each output channel writes its own rows of E */
        fastcnn_parallel_for(s->K, grad_channel, &ph, nt);
        /* each xi writes its own MW[xi] */
        fastcnn_parallel_for(16, grad_position, &ph, nt);
        err = atomic_load(&ph.err);
    }
    if (!err)
        add_filter_grads(dw, MW, s->K, s->C, nthreads);
    conv2d_scratch_give(scratch);
    return err ? FASTCNN_ENOMEM : FASTCNN_OK;
}
