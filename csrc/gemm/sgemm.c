/* sgemm.c - row-major single-precision GEMM (see gemm.h): the portable
 * driver of the BLIS / GotoBLAS algorithm.
 *
 * Five loops around a register-blocked micro-kernel (kernel.h):
 *   jc over N in nc columns    B panel (kc x nc) packed, kept in L3
 *    pc over K in kc steps
 *     ic over M in mc rows     A block (mc x kc) packed, kept in L2
 *      jr over nc in NR        B micro-panel (kc x NR), L1 / L2
 *       ir over mc in MR       micro-kernel: MR x NR tile of C in registers
 * The micro-kernel (and its MR, NR, kc, mc, nc and transposing copy) comes
 * from the table of fastcnn_isa() (gemm_kernels_for). Packed buffers come
 * from one fastcnn_alloc per call, before any thread starts (so ENOMEM
 * leaves C untouched).
 *
 * Threads: C is cut along M (each thread packs A for the row blocks it
 * takes; all share one B panel, packed together, or each packs its own when
 * it is small) or, when N has more MR x NR tiles to share out evenly, along
 * N (each thread packs B for its column blocks; all share one A block), or,
 * on 4 threads or more where A is packed in the call and the cut along M
 * would leave each thread a thin block that streams the whole B panel, along
 * both (a grid of blocks of C over the shared B panel: split_2d).
 * Blocks, a multiple of the thread count, are handed out by
 * fastcnn_parallel_for (pool.c): one loop per packing of a shared panel, one
 * per step over the blocks of C, each joined by the workers that are awake,
 * none waiting for one that is not. Small M or small K: B is not packed;
 * its full NR-wide panels are read in place (packing B costs one copy per
 * 2M flops, too much when M is small; a panel of few rows stays in L1 over
 * the row tiles as well packed as not).
 */
#include <stddef.h>

#include "dispatch.h"
#include "fastcnn.h"
#include "gemm.h"
#include "kernel.h"

/* Up to the kernel's direct_rows rows of C (kernel.h), or this depth of
 * the product, B is used in place rather than packed: the copy costs the
 * more, the fewer rows of C share it, and a panel of few rows stays in L1
 * over the row tiles packed or not. AVX-512's 256 rows, on Zen 4,
 * interleaved with the build that packed B above 64 rows, GFLOP/s on 1
 * thread: 96 x 576 x 196 (MobileNetV2's 576 -> 96 at 14x14) 98 -> 107, 128
 * x 1152 x 784 94 -> 108, 128 x 128 x 12544 83 -> 95, 192 x 576 x 784 102 ->
 * 107, 256 x 256 x 3136 99.5 -> 105; 2 threads: 3-17% faster; rows 320-384
 * 0-2% faster, 512 and more 1-2% slower. Depth: 144 x 24 x 3136 78 -> 84. */
#define DIRECT_B_MAX_DEPTH 64
/* Split along M, each thread packs a B panel of its own when the panel is
 * at most this many floats and each thread has at least this many MR-row
 * panels of A to use it on: no barrier after the packing, and no reads of
 * B lines another core wrote. Measured at 2 threads (Xeon VM), shared /
 * private time: M160 N49 K960 1.35, M144 N3136 K24 1.38, M96 N196 K576
 * 1.16, M960 N49 K160 1.05; larger panels (N1024 K256) are shared. */
#define PRIVATE_B_MAX_FLOATS (128 * 1024)
#define PRIVATE_B_MIN_PANELS 4
/* The micro-kernels prefetch a far stream of B's lines into L2 (bfar,
 * kernel.h): for a panel of B in place, the panel BPF_PANELS on, whose rows
 * (as many streams as K, too many for the hardware prefetchers) would
 * otherwise come from L3 or memory on demand; for others, the rows BPF_FAR
 * down the panel: at batch 1 the weights are often the turned product's B
 * and come from memory. Zen 5, 1 thread, B in place, from L3, in us: 16 x
 * 32 x 12544 (MobileNetV2's 32 -> 16 1x1 at 112x112) 177-258 without, 95-103
 * the next panel, 75-85 two on (three or four alike); 24 x 144 x 3136
 * 116-118 -> 102-104, 64 x 576 x 3136 1305-1354 -> 1119-1138 (one run
 * 1336) from one panel to two on. Rows ahead: frozen ResNet-18 at batch 1
 * 12.8-14.0 -> 11.7-11.9 ms (FASTCNN_ISA=avx2 21.9-22.4 -> 19.5-19.7); 96
 * rows within 1% of 48. */
#define BPF_FAR 48
#define BPF_PANELS 2
/* The cost of a thread's block of C, rows x cols per step of k, in
 * multiply-adds: rows cols of them, and its A rows and B columns read from
 * the shared caches, each weighted as SPLIT_READ_WEIGHT multiply-adds (a
 * core does ~90 multiply-adds per ns at AVX-512 and reads ~5 floats per ns
 * from L3). Chooses the 2-D split over a split along M that costs 8/7 of it
 * (16-core Xeon, bench/gemm_split.py, best of 9 interleaved rounds, GFLOP/s
 * 1-D -> grid: 256 x 256 x 4096 517 -> 634, 256 x 1024 x 1024 725 -> 904,
 * 256 x 512 x 512 466 -> 594); a split along N stays (64 x 1024 x 1024: the
 * grid ran at 476 against N's 555: each thread packs its own B there, and
 * the grid shares one B panel packed behind a barrier), and so does A packed
 * ahead (a frozen model's weights times one image's columns: MobileNetV2 at
 * batch 1 on 16 threads took 3.46-3.61 ms with grids, 2.94-3.04 without). */
#define SPLIT_READ_WEIGHT 16

static inline float at(const float *X, int trans, int64_t ld, int64_t r, int64_t c)
{
    return trans ? X[c * ld + r] : X[r * ld + c];
}

void sgemm_ref(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
               float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0.0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)at(A, transa, lda, i, k) * at(B, transb, ldb, k, j);
            float old = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
            C[i * ldc + j] = (float)(alpha * acc) + old;
        }
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

/* Multiply-adds a kernel's tiles compute for an M x N product, padding
 * included. */
static int64_t padded_work(const gemm_kernel *kr, int64_t M, int64_t N)
{
    return round_up(M, kr->mr) * round_up(N, kr->nr);
}

/* The micro-kernels of one instruction set: the tile shapes it offers, the
 * first the default (AVX-512 has two). */
#define GEMM_MAX_TILES 2
typedef struct {
    const gemm_kernel *tiles[GEMM_MAX_TILES];   /* unused slots NULL */
} gemm_kernels;

static const gemm_kernels gemm_kernels_generic = {{&gemm_kernel_generic, NULL}};
#ifdef FASTCNN_X86_KERNELS
static const gemm_kernels gemm_kernels_avx2 = {{&gemm_kernel_avx2, NULL}};
static const gemm_kernels gemm_kernels_avx512 = {{&gemm_kernel_avx512, &gemm_kernel_avx512_8x48}};
#endif

static const gemm_kernels *gemm_kernels_for(int isa)
{
    return FASTCNN_KERNELS_FOR(isa, gemm_kernels);
}

/* The instruction set's kernel: of its tile shapes, the one that computes the
 * fewest padding rows and columns for this M x N (the first on a tie). */
static const gemm_kernel *select_kernel(int64_t M, int64_t N)
{
    const gemm_kernels *ks = gemm_kernels_for(fastcnn_isa());
    const gemm_kernel *best = ks->tiles[0];
    for (int i = 1; i < GEMM_MAX_TILES && ks->tiles[i]; i++)
        if (padded_work(ks->tiles[i], M, N) < padded_work(best, M, N))
            best = ks->tiles[i];
    return best;
}

/* The chunk (a multiple of unit, at most max(block, unit)) that splits n into
 * the fewest, most even pieces. */
static int64_t even_chunk(int64_t n, int64_t block, int64_t unit)
{
    int64_t pieces = ceil_div(n, block);
    return round_up(ceil_div(n, pieces), unit);
}

/* One call's operands, kernel and block sizes. */
typedef struct {
    const gemm_kernel *kr;
    int transa, transb, direct_b;
    int64_t M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
    const float *bias;      /* per row of C, added after the last k block; or NULL */
    const float *clamp;     /* {lo, hi}: C clamped after the last k block; or NULL */
    int64_t kc, mc, nc;     /* block sizes for this call */
    const float *packed_a;  /* op(A) packed whole by sgemm_pack_a, or NULL: pack per block */
    const float *packed_b;  /* op(B) packed whole by sgemm_pack_b, or NULL: pack per block */
} gemm_plan;

/* dst[k mr + i] = src[k lda + i] for k < kc, i < m, zeros for i in [m, mr);
 * mr a constant where inlined, so that a whole row (m == mr) is copied in a
 * few vector moves rather than a loop of single floats. */
static inline __attribute__((always_inline)) void
copy_a_rows(float *restrict dst, const float *restrict src, int64_t lda, int64_t m,
            int64_t kc, const int mr)
{
    if (m == mr) {
        for (int64_t k = 0; k < kc; k++)
            for (int i = 0; i < mr; i++) dst[k * mr + i] = src[k * lda + i];
        return;
    }
    for (int64_t k = 0; k < kc; k++) {
        for (int64_t i = 0; i < m; i++) dst[k * mr + i] = src[k * lda + i];
        for (int64_t i = m; i < mr; i++) dst[k * mr + i] = 0.0f;
    }
}

/* One MR-row micro-panel of op(A): rows i0..i0+m, depth p0..p0+kc, as
 * dst[k*MR + i]; rows m..MR-1 zero. */
static void pack_a_panel(float *dst, const gemm_plan *p, int64_t i0, int64_t m,
                         int64_t p0, int64_t kc)
{
    const int mr = p->kr->mr;
    if (p->transa) {                    /* A is (K,M): rows of op(A) are contiguous in k */
        const float *src = p->A + p0 * p->lda + i0;
        switch (mr) {                   /* the tiles' heights: generic 4, AVX2 6, AVX-512 8, 14 */
        case 4: copy_a_rows(dst, src, p->lda, m, kc, 4); break;
        case 6: copy_a_rows(dst, src, p->lda, m, kc, 6); break;
        case 8: copy_a_rows(dst, src, p->lda, m, kc, 8); break;
        case 14: copy_a_rows(dst, src, p->lda, m, kc, 14); break;
        default: copy_a_rows(dst, src, p->lda, m, kc, mr); break;
        }
    } else {
        p->kr->transpose(dst, mr, p->A + i0 * p->lda + p0, p->lda, m, kc);
        for (int64_t i = m; i < mr; i++)
            for (int64_t k = 0; k < kc; k++) dst[k * mr + i] = 0.0f;
    }
}

/* Rows k0..k1 of the NR-column micro-panels of op(B) for the columns
 * j0..j0+n at depth p0..p0+kc, panel after panel as dst[jp*kc + k*NR + j];
 * columns past n zero. B not transposed: each row of B is read once, in
 * order, and dealt out to the panels (reading a panel's column strip row by
 * row instead crossed a cache line or two per 64 bytes: 30% of a 128 x 784 x
 * 1152 product on Zen 3). */
static void pack_b_rows(float *dst, const gemm_plan *p, int64_t p0, int64_t kc, int64_t j0,
                        int64_t n, int64_t k0, int64_t k1)
{
    const int nr = p->kr->nr;
    for (int64_t k = k0; k < k1; k++) {
        const float *src = p->B + (p0 + k) * p->ldb + j0;
        for (int64_t jp = 0; jp < n; jp += nr) {
            float *d = dst + jp * kc + k * nr;
            int64_t w = min64(nr, n - jp);
            for (int64_t j = 0; j < w; j++) d[j] = src[jp + j];
            for (int64_t j = w; j < nr; j++) d[j] = 0.0f;
        }
    }
}

/* One NR-column micro-panel of op(B): depth p0..p0+kc, columns j0..j0+n, as
 * dst[k*NR + j]; columns n..NR-1 zero. */
static void pack_b_panel(float *dst, const gemm_plan *p, int64_t p0, int64_t kc,
                         int64_t j0, int64_t n)
{
    const int nr = p->kr->nr;
    if (!p->transb) {
        pack_b_rows(dst, p, p0, kc, j0, n, 0, kc);
        return;
    }
    p->kr->transpose(dst, nr, p->B + j0 * p->ldb + p0, p->ldb, n, kc);  /* B is (N,K) */
    for (int64_t k = 0; k < kc && n < nr; k++)
        for (int64_t j = n; j < nr; j++) dst[k * nr + j] = 0.0f;
}

/* Pack the A rows i0..i0+m (MR panels number first..last-1 of the block). */
static void pack_a_block(float *dst, const gemm_plan *p, int64_t i0, int64_t m,
                         int64_t p0, int64_t kc)
{
    const int mr = p->kr->mr;
    for (int64_t ip = 0; ip < m; ip += mr)
        pack_a_panel(dst + ip * kc, p, i0 + ip, min64(mr, m - ip), p0, kc);
}

/* Pack the op(B) columns j0..j0+n, depth p0..p0+kc. */
static void pack_b_block(float *dst, const gemm_plan *p, int64_t p0, int64_t kc,
                         int64_t j0, int64_t n)
{
    const int nr = p->kr->nr;
    if (!p->transb) {
        pack_b_rows(dst, p, p0, kc, j0, n, 0, kc);
        return;
    }
    for (int64_t jp = 0; jp < n; jp += nr)
        pack_b_panel(dst + jp * kc, p, p0, kc, j0 + jp, min64(nr, n - jp));
}

/* The packed rows i0.. (a multiple of MR) at depth p0 of a whole packed A:
 * each kc block holds round_up(M, MR) rows, panel after panel (see
 * sgemm_pack_a). */
static const float *packed_rows(const gemm_plan *p, int64_t i0, int64_t p0, int64_t kc)
{
    return p->packed_a + p0 * round_up(p->M, p->kr->mr) + i0 * kc;
}

/* The packed columns j0.. (a multiple of NR) at depth p0 of a whole packed
 * B: each kc block holds round_up(N, NR) columns, panel after panel (see
 * sgemm_pack_b). */
static const float *packed_cols(const gemm_plan *p, int64_t j0, int64_t p0, int64_t kc)
{
    return p->packed_b + p0 * round_up(p->N, p->kr->nr) + j0 * kc;
}

/* c (m, n) with row stride ldc clamped to [lo, hi] as hardtanh does (NaN passes). */
static void clamp_rows(float *c, int64_t ldc, float lo, float hi, int64_t m, int64_t n)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float v = c[i * ldc + j] < lo ? lo : c[i * ldc + j];
            c[i * ldc + j] = v > hi ? hi : v;
        }
}

/* C[i0:i0+m, j0:j0+n] (+)= packed A block (m x kc) times the B block
 * (kc x n): packed in bp, or used in place when p->direct_b (then its
 * partial last panel is packed into edge, kc x NR). */
static void macro_kernel(const gemm_plan *p, const float *ap, const float *bp, float *edge,
                         int64_t i0, int64_t m, int64_t j0, int64_t n, int64_t p0,
                         int64_t kc, float beta)
{
    const int mr = p->kr->mr, nr = p->kr->nr;
    for (int64_t jr = 0; jr < n; jr += nr) {
        int nb = (int)min64(nr, n - jr);
        const float *b = bp + jr * kc;
        int64_t ldb = nr;
        if (p->direct_b && nb == nr) {
            b = p->B + p0 * p->ldb + j0 + jr;
            ldb = p->ldb;
        } else if (p->direct_b) {
            pack_b_panel(edge, p, p0, kc, j0 + jr, nb);
            b = edge;
        }
        const float *bfar = p->direct_b && nb == nr && jr + (BPF_PANELS + 1) * nr <= n
                            ? b + BPF_PANELS * nr       /* a later panel, in place */
                            : b + BPF_FAR * ldb;        /* rows further down */
        for (int64_t ir = 0; ir < m; ir += mr) {
            float *c = p->C + (i0 + ir) * p->ldc + j0 + jr;
            int mb = (int)min64(mr, m - ir);
            /* the bias and clamp go in the tile's last k block, before its store */
            gemm_epilogue epi = {p->bias ? p->bias + i0 + ir : NULL, p->clamp};
            int final = p0 + kc == p->K && (p->bias || p->clamp);
            p->kr->ukernel(kc, ap + ir * kc, b, ldb, bfar, c, p->ldc, p->alpha, beta, mb, nb,
                           final ? &epi : NULL);
        }
    }
}

/* Block b of nb: its share [lo, hi) of `total`, split in whole units. */
static void share(int64_t total, int64_t unit, int64_t b, int64_t nb, int64_t *lo, int64_t *hi)
{
    int64_t units = ceil_div(total, unit);
    *lo = min64(total, units * b / nb * unit);
    *hi = min64(total, units * (b + 1) / nb * unit);
}

/* The most rows (or columns) share() gives one of nb blocks. */
static int64_t share_max(int64_t total, int64_t unit, int64_t nb)
{
    return ceil_div(ceil_div(total, unit), nb) * unit;
}

/* Blocks to cut a dimension of `units` tiles into: at least ceil(total /
 * block), a multiple of nt (so they share out evenly), at most `units`. */
static int64_t block_count(int64_t total, int64_t block, int64_t units, int nt)
{
    return min64(units, round_up(ceil_div(total, block), nt));
}

/* One call's loops on fastcnn_parallel_for: each step of the outer loops
 * is one parallel loop over the panels to pack into a shared buffer, then
 * one over the blocks of C; a thread's scratch is at its slot. */
typedef struct {
    const gemm_plan *p;
    int64_t nb;                     /* blocks of C per step: row (or column) blocks ... */
    int64_t nbn;                    /* ... times these column blocks of the panel (split_2d) */
    float *shared, *priv, *edge;    /* shared block; per-slot blocks and edge panels */
    int64_t priv_stride, edge_stride;
    int64_t bstride;                /* > 0: each slot packs its own B at shared + slot bstride */
    int64_t step;                   /* steps started (the private B of which step a slot holds) */
    int64_t *b_step;                /* per slot */
    int64_t i0, m, j0, n, p0, kc;   /* the current step's rows, columns and depth */
    float beta;
} gemm_run;

/* Rows of B per chunk of a shared packing (B not transposed). */
#define PACK_B_CHUNK_ROWS 16

/* Split M: the chunks of the shared B panel's packing: runs of
 * PACK_B_CHUNK_ROWS rows of B, or (B transposed) one micro-panel each. */
static int64_t pack_b_chunks(const gemm_run *r)
{
    return r->p->transb ? ceil_div(r->n, r->p->kr->nr) : ceil_div(r->kc, PACK_B_CHUNK_ROWS);
}

static void pack_b_chunk(void *ctx, int64_t chunk, int slot)
{
    const gemm_run *r = ctx;
    const int nr = r->p->kr->nr;
    (void)slot;
    if (!r->p->transb) {
        int64_t k0 = chunk * PACK_B_CHUNK_ROWS;
        pack_b_rows(r->shared, r->p, r->p0, r->kc, r->j0, r->n, k0,
                    min64(r->kc, k0 + PACK_B_CHUNK_ROWS));
        return;
    }
    pack_b_panel(r->shared + chunk * nr * r->kc, r->p, r->p0, r->kc, r->j0 + chunk * nr,
                 min64(nr, r->n - chunk * nr));
}

/* Split M: chunk b computes row block b / nbn of C, columns b % nbn of the
 * panel (each chunk writes its own part of C), packing the slot's own B
 * first when the run keeps one per slot (then nbn is 1). */
static void m_block_chunk(void *ctx, int64_t b, int slot)
{
    gemm_run *r = ctx;
    const gemm_plan *p = r->p;
    int64_t i0, i1, c0, c1;
    share(p->M, p->kr->mr, b / r->nbn, r->nb, &i0, &i1);
    share(r->n, p->kr->nr, b % r->nbn, r->nbn, &c0, &c1);
    const float *bp = p->packed_b ? packed_cols(p, r->j0 + c0, r->p0, r->kc)
                                  : r->shared + slot * r->bstride + c0 * r->kc;
    if (r->bstride && r->b_step[slot] != r->step) {
        pack_b_block((float *)bp, p, r->p0, r->kc, r->j0, r->n);
        r->b_step[slot] = r->step;
    }
    const float *a = r->priv + slot * r->priv_stride;
    if (p->packed_a)
        a = packed_rows(p, i0, r->p0, r->kc);
    else
        pack_a_block((float *)a, p, i0, i1 - i0, r->p0, r->kc);
    macro_kernel(p, a, bp, r->edge + slot * r->edge_stride, i0, i1 - i0, r->j0 + c0, c1 - c0,
                 r->p0, r->kc, r->beta);
}

/* Split M: row blocks of C handed out to the threads; each packs A for its
 * blocks, all share the B panel (packed together first), or with bstride > 0
 * each slot packs its own (PRIVATE_B_*). */
static void run_split_m(gemm_run *r, int nt)
{
    const gemm_plan *p = r->p;
    for (r->j0 = 0; r->j0 < p->N; r->j0 += p->nc) {
        r->n = min64(p->nc, p->N - r->j0);
        for (r->p0 = 0; r->p0 < p->K; r->p0 += p->kc) {
            r->kc = min64(p->kc, p->K - r->p0);
            r->beta = r->p0 == 0 ? p->beta : 1.0f;
            r->step++;
            if (!p->direct_b && !p->packed_b && !r->bstride)
                fastcnn_parallel_for(pack_b_chunks(r), pack_b_chunk, r, nt);
            fastcnn_parallel_for(r->nb * r->nbn, m_block_chunk, r, nt);
        }
    }
}

/* Split N: chunk ip packs MR-row panel ip of the shared A block. */
static void pack_a_chunk(void *ctx, int64_t ip, int slot)
{
    const gemm_run *r = ctx;
    const int mr = r->p->kr->mr;
    (void)slot;
    pack_a_panel(r->shared + ip * mr * r->kc, r->p, r->i0 + ip * mr,
                 min64(mr, r->m - ip * mr), r->p0, r->kc);
}

/* Split N: chunk b computes column block b of C (each block writes its own
 * columns), packing B for it into the slot's buffer. */
static void n_block_chunk(void *ctx, int64_t b, int slot)
{
    const gemm_run *r = ctx;
    const gemm_plan *p = r->p;
    float *bp = r->priv + slot * r->priv_stride;
    const float *a = p->packed_a ? packed_rows(p, r->i0, r->p0, r->kc) : r->shared;
    int64_t j0, j1;
    share(p->N, p->kr->nr, b, r->nb, &j0, &j1);
    if (p->packed_b)
        bp = (float *)packed_cols(p, j0, r->p0, r->kc);
    else if (!p->direct_b)
        pack_b_block(bp, p, r->p0, r->kc, j0, j1 - j0);
    macro_kernel(p, a, bp, r->edge + slot * r->edge_stride, r->i0, r->m, j0, j1 - j0, r->p0,
                 r->kc, r->beta);
}

/* Split N: column blocks of C handed out to the threads; each packs B for its
 * blocks, all share the A block (packed together first, unless A came packed). */
static void run_split_n(gemm_run *r, int nt)
{
    const gemm_plan *p = r->p;
    for (r->p0 = 0; r->p0 < p->K; r->p0 += p->kc) {
        r->kc = min64(p->kc, p->K - r->p0);
        r->beta = r->p0 == 0 ? p->beta : 1.0f;
        for (r->i0 = 0; r->i0 < p->M; r->i0 += p->mc) {
            r->m = min64(p->mc, p->M - r->i0);
            if (!p->packed_a)
                fastcnn_parallel_for(ceil_div(r->m, p->kr->mr), pack_a_chunk, r, nt);
            fastcnn_parallel_for(r->nb, n_block_chunk, r, nt);
        }
    }
}

/* C = beta * C (beta == 0: C is not read). */
static void scale_c(float *C, int64_t M, int64_t N, int64_t ldc, float beta)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++)
            C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

/* C (M, N) += bias[i] on row i. */
static void add_row_bias_all(float *C, int64_t ldc, const float *bias, int64_t M, int64_t N)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) C[i * ldc + j] += bias[i];
}

/* Max-per-thread tiles when nt threads split `tiles` whole tiles. */
static int64_t tiles_per_thread(int64_t tiles, int nt)
{
    return ceil_div(tiles, nt);
}

/* Cost of one thread's blocks of C: `blocks` of rows x cols (SPLIT_READ_WEIGHT). */
static int64_t split_cost(int64_t blocks, int64_t rows, int64_t cols)
{
    return blocks * (rows * cols + SPLIT_READ_WEIGHT * (rows + cols));
}

/* Test hook (sgemm_set_split): 0 the cost's choice, 1 along M, 2 along N,
 * 3 along both (the grid of split_2d's shape for nt, if any), 4 the 1-D
 * choice alone (M or N, never a grid). */
static int split_forced;

int sgemm_set_split(int mode)
{
    int old = split_forced;
    split_forced = mode;
    return old;
}

/* The 2-D split for nt threads: *cols_blocks column blocks of each B panel
 * (and a multiple of nt / *cols_blocks row blocks), the factor pair of nt
 * (both at least 2) whose busiest thread costs least; returns that cost, or
 * -1 where no pair fits (nt < 4, or too few tiles). */
static int64_t split_2d(const gemm_plan *p, int nt, int64_t *cols_blocks)
{
    const gemm_kernel *kr = p->kr;
    int64_t tm = ceil_div(p->M, kr->mr), panel = min64(p->N, p->nc);
    int64_t best = -1;
    for (int a = 2; a <= nt / 2; a++) {
        int b = nt / a;
        if (a * b != nt || a > tm || b > ceil_div(panel, kr->nr))
            continue;
        int64_t nbm = block_count(p->M, p->mc, tm, a);
        int64_t cost = split_cost(ceil_div(nbm, a) * ceil_div(p->N, p->nc),
                                  share_max(p->M, kr->mr, nbm), share_max(panel, kr->nr, b));
        if (best < 0 || cost < best) {
            best = cost;
            *cols_blocks = b;
        }
    }
    return best;
}

void sgemm_transpose(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows,
                     int64_t cols)
{
    gemm_kernels_for(fastcnn_isa())->tiles[0]->transpose(dst, ldd, src, lds, rows, cols);
}

int sgemm(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
          const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
          float *C, int64_t ldc, int nthreads)
{
    return sgemm_bias(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL,
                      nthreads);
}

int sgemm_bias(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
               float *C, int64_t ldc, const float *bias, int nthreads)
{
    return sgemm_bias_clamp(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias,
                            NULL, nthreads);
}

/* The plan of a product on kernel kr (block sizes from it and the sizes). */
static gemm_plan plan_of(const gemm_kernel *kr, int transa, int transb, int64_t M, int64_t N,
                         int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                         int64_t ldb, float beta, float *C, int64_t ldc, const float *bias,
                         const float *clamp)
{
    int direct_b = !transb && (M <= kr->direct_rows || K <= DIRECT_B_MAX_DEPTH);
    gemm_plan p = {kr, transa, transb, direct_b, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C,
                   bias, clamp, 0, 0, 0, NULL, NULL};
    p.kc = even_chunk(K, kr->kc, 1);
    p.mc = even_chunk(M, kr->mc, kr->mr);
    p.nc = even_chunk(N, kr->nc, kr->nr);
    return p;
}

/* Run the plan of a product with M, N, K >= 1 and alpha != 0. */
static int run_plan(const gemm_plan *pp, int nthreads)
{
    gemm_plan p = *pp;
    const gemm_kernel *kr = p.kr;
    int64_t M = p.M, N = p.N, K = p.K;
    int64_t tm = ceil_div(M, kr->mr), tn = ceil_div(N, kr->nr);
    int nt = fastcnn_threads_for(M * N * K / 64, nthreads);
    if (nt > tm * tn)
        nt = (int)(tm * tn);
    /* split the dimension that shares out more evenly. A packed in this
     * call: M unless N is at least 1/8 more even, since the N split waits
     * for the shared A at every mc block of M (N = 49, a 7x7 map, 2
     * threads: M 960, K 160 ran 1.47x faster split along M; ResNet-18's
     * last stage at batch 1, 1.25x). A packed ahead (a frozen model's
     * weights): nothing to wait for, and each thread then packs B for its
     * own columns only (split along M, each packs or reads all of B), so N
     * wherever its rows and columns share out as evenly as M's (a frozen
     * MobileNetV2 at batch 1, 2 threads: 16 -> 96 channels at 112 x 112
     * 1.3x faster, the network 1.05x). */
    int64_t most_n = min64(N, tiles_per_thread(tn, nt) * kr->nr);  /* columns of the */
    int64_t most_m = min64(M, tiles_per_thread(tm, nt) * kr->mr);  /* busiest thread */
    int split_n = nt > 1 && (p.packed_a ? N * most_m >= M * most_n
                             : 9 * tiles_per_thread(tn, nt) * tm < 8 * tiles_per_thread(tm, nt) * tn);
    if (split_forced == 1 || split_forced == 2)
        split_n = split_forced == 2;
    /* a split along both dimensions where it costs 7/8 of the split along M
     * or less (A packed in this call) */
    int64_t nbn = 1, nbm_1d = block_count(M, p.mc, tm, nt), nbn_1d = block_count(N, p.nc, tn, nt);
    int64_t cost_m = split_cost(ceil_div(nbm_1d, nt) * ceil_div(N, p.nc),
                                share_max(M, kr->mr, nbm_1d), min64(N, p.nc));
    int64_t cost_2d = split_forced == 1 || split_forced == 2 || split_forced == 4
                      || ((split_n || p.packed_a) && split_forced != 3)
                      ? -1 : split_2d(&p, nt, &nbn);
    int grid = cost_2d >= 0 && (split_forced == 3 || 8 * cost_2d <= 7 * cost_m);
    if (grid)
        split_n = 0;
    else
        nbn = 1;
    int64_t nb = split_n ? nbn_1d : grid ? block_count(M, p.mc, tm, nt / (int)nbn) : nbm_1d;

    /* shared block, then per-thread blocks, then per-thread edge panels; no
     * A blocks when A comes packed */
    int64_t a_shared = p.packed_a ? 0 : p.mc * p.kc;
    int own_b = !p.direct_b && !p.packed_b;     /* B packed in this call */
    int private_b = !split_n && !grid && own_b && nt > 1
                    && p.kc * round_up(min64(N, p.nc), kr->nr) <= PRIVATE_B_MAX_FLOATS
                    && M >= nt * PRIVATE_B_MIN_PANELS * kr->mr;
    int64_t shared = split_n ? a_shared : (own_b ? p.nc * p.kc : 0);
    int64_t priv = split_n ? (own_b ? share_max(N, kr->nr, nb) * p.kc : 0)
                           : (p.packed_a ? 0 : share_max(M, kr->mr, nb) * p.kc);
    int64_t edge = round_up(p.kc * kr->nr, 16);
    shared = round_up(shared, 16);
    int64_t bstride = private_b ? shared : 0;
    shared *= private_b ? nt : 1;
    priv = round_up(priv, 16);
    float *buf = fastcnn_alloc((shared + nt * (priv + edge)) * (int64_t)sizeof(float)
                               + nt * (int64_t)sizeof(int64_t));
    if (buf == NULL)
        return FASTCNN_ENOMEM;
    gemm_run r = {&p, nb, nbn, buf, buf + shared, buf + shared + nt * priv, priv, edge, bstride,
                  0, (int64_t *)(buf + shared + nt * (priv + edge))};
    for (int t = 0; t < nt; t++)
        r.b_step[t] = -1;
    if (split_n)
        run_split_n(&r, nt);
    else
        run_split_m(&r, nt);
    fastcnn_free(buf);
    return FASTCNN_OK;
}

int sgemm_bias_clamp(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                     float *C, int64_t ldc, const float *bias, const float *clamp,
                     int nthreads)
{
    if (M <= 0 || N <= 0)
        return FASTCNN_OK;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(C, M, N, ldc, beta);
        if (bias)
            add_row_bias_all(C, ldc, bias, M, N);
        if (clamp)
            clamp_rows(C, ldc, clamp[0], clamp[1], M, N);
        return FASTCNN_OK;
    }
    gemm_plan p = plan_of(select_kernel(M, N), transa, transb, M, N, K, alpha, A, lda, B, ldb,
                          beta, C, ldc, bias, clamp);
    return run_plan(&p, nthreads);
}

/* ---- A packed ahead ------------------------------------------------------------ */

/* One packing ahead of a whole operand, for fastcnn_parallel_for: chunk i
 * packs micro-panel i % panels of depth block i / panels. */
typedef struct {
    const gemm_plan *p;
    int64_t panels, blocks;
} ahead_run;

static void pack_a_ahead(void *ctx, int64_t i, int slot)
{
    const ahead_run *r = ctx;
    const gemm_plan *p = r->p;
    int64_t mr = p->kr->mr, ip = i % r->panels, p0 = i / r->panels * p->kc;
    int64_t kc = min64(p->kc, p->K - p0);
    (void)slot;
    pack_a_panel((float *)packed_rows(p, ip * mr, p0, kc), p, ip * mr, min64(mr, p->M - ip * mr),
                 p0, kc);
}

static void pack_b_ahead(void *ctx, int64_t i, int slot)
{
    const ahead_run *r = ctx;
    const gemm_plan *p = r->p;
    int64_t nr = p->kr->nr, jp = i % r->panels, p0 = i / r->panels * p->kc;
    int64_t kc = min64(p->kc, p->K - p0);
    (void)slot;
    pack_b_panel((float *)packed_cols(p, jp * nr, p0, kc), p, p0, kc, jp * nr,
                 min64(nr, p->N - jp * nr));
}

/* The instruction set's kernel number i (the default if there is none). */
static const gemm_kernel *kernel_at(int i)
{
    const gemm_kernels *ks = gemm_kernels_for(fastcnn_isa());
    return i > 0 && i < GEMM_MAX_TILES && ks->tiles[i] ? ks->tiles[i] : ks->tiles[0];
}

int sgemm_packed_a_kernel(int64_t M, int64_t N)
{
    const gemm_kernel *kr = select_kernel(M, N);
    for (int i = 1; i < GEMM_MAX_TILES; i++)
        if (kernel_at(i) == kr)
            return i;
    return 0;
}

int64_t sgemm_packed_a_floats(int kernel, int64_t M, int64_t K)
{
    return round_up(M, kernel_at(kernel)->mr) * K;
}

void sgemm_pack_a(float *packed, int kernel, int transa, int64_t M, int64_t K, const float *A,
                  int64_t lda, int nthreads)
{
    gemm_plan p = plan_of(kernel_at(kernel), transa, 0, M, 1, K, 1.0f, A, lda, NULL, 0, 0.0f,
                          NULL, 0, NULL, NULL);
    p.packed_a = packed;
    ahead_run r = {&p, ceil_div(M, p.kr->mr), ceil_div(K, p.kc)};
    /* each (depth block, panel) written by one chunk */
    fastcnn_parallel_for(r.panels * r.blocks, pack_a_ahead, &r,
                         fastcnn_threads_for(M * K, nthreads));
}

int sgemm_packed_bias_clamp(const float *packed, int kernel, int64_t M, int64_t N, int64_t K,
                            const float *B, int64_t ldb, float *C, int64_t ldc,
                            const float *bias, const float *clamp, int nthreads)
{
    if (M <= 0 || N <= 0 || K <= 0)     /* A is not read */
        return sgemm_bias_clamp(0, 0, M, N, K, 1.0f, packed, 1, B, ldb, 0.0f, C, ldc, bias,
                                clamp, nthreads);
    gemm_plan p = plan_of(kernel_at(kernel), 0, 0, M, N, K, 1.0f, NULL, K, B, ldb, 0.0f, C,
                          ldc, bias, clamp);
    p.packed_a = packed;
    return run_plan(&p, nthreads);
}

/* ---- B packed ahead ------------------------------------------------------------ */

int64_t sgemm_packed_b_floats(int kernel, int64_t K, int64_t N)
{
    return round_up(N, kernel_at(kernel)->nr) * K;
}

void sgemm_pack_b(float *packed, int kernel, int transb, int64_t K, int64_t N, const float *B,
                  int64_t ldb, int nthreads)
{
    gemm_plan p = plan_of(kernel_at(kernel), 0, transb, 1, N, K, 1.0f, NULL, 0, B, ldb, 0.0f,
                          NULL, 0, NULL, NULL);
    p.packed_b = packed;
    ahead_run r = {&p, ceil_div(N, p.kr->nr), ceil_div(K, p.kc)};
    /* each (depth block, panel) written by one chunk */
    fastcnn_parallel_for(r.panels * r.blocks, pack_b_ahead, &r,
                         fastcnn_threads_for(N * K, nthreads));
}

int sgemm_packed_b_bias_clamp(const float *packed, int kernel, int transa, int64_t M, int64_t N,
                              int64_t K, const float *A, int64_t lda, float *C, int64_t ldc,
                              const float *bias, const float *clamp, int nthreads)
{
    if (M <= 0 || N <= 0 || K <= 0)     /* B is not read */
        return sgemm_bias_clamp(transa, 0, M, N, K, 1.0f, A, lda, packed, 1, 0.0f, C, ldc, bias,
                                clamp, nthreads);
    gemm_plan p = plan_of(kernel_at(kernel), transa, 0, M, N, K, 1.0f, A, lda, NULL, N, 0.0f, C,
                          ldc, bias, clamp);
    p.packed_b = packed;
    p.direct_b = 0;
    return run_plan(&p, nthreads);
}

void sgemm_tile(int kernel, int *mr, int *nr)
{
    *mr = kernel_at(kernel)->mr;
    *nr = kernel_at(kernel)->nr;
}
