/* sgemm.c - row-major single-precision GEMM (see gemm.h): the portable
 * driver of the BLIS / GotoBLAS algorithm.
 *
 * Five loops around a register-blocked micro-kernel (kernel.h):
 *   jc over N in nc columns    B panel (kc x nc) packed, kept in L3
 *    pc over K in kc steps
 *     ic over M in mc rows     A block (mc x kc) packed, kept in L2
 *      jr over nc in NR        B micro-panel (kc x NR) in L1
 *       ir over mc in MR       micro-kernel: MR x NR tile of C in registers
 * The micro-kernel (and its MR, NR, kc, mc, nc) is chosen once per process
 * from fastcnn_isa(). Packed buffers come from fastcnn_alloc once per call.
 *
 * Threads: C is split between the threads along M (each thread packs its own
 * A blocks, all share one packed B panel, packed cooperatively) or, when N
 * has more MR x NR tiles to share out evenly, along N (all share one packed
 * A block). Small M: B is not packed; its full NR-wide panels are read in
 * place (packing B costs one copy per 2M flops, too much when M is small).
 */
#include <stddef.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "fastcnn.h"
#include "gemm.h"
#include "kernel.h"

/* Up to this many rows of C, B is used in place rather than packed. */
#define DIRECT_B_MAX_ROWS 64

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

static const gemm_kernel *select_kernel(void)
{
#ifdef FASTCNN_X86_KERNELS
    switch (fastcnn_isa()) {
    case FASTCNN_ISA_AVX512: return &gemm_kernel_avx512;
    case FASTCNN_ISA_AVX2: return &gemm_kernel_avx2;
    default: break;
    }
#endif
    return &gemm_kernel_generic;
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

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
    int64_t kc, mc, nc;     /* block sizes for this call */
} gemm_plan;

/* One MR-row micro-panel of op(A): rows i0..i0+m, depth p0..p0+kc, as
 * dst[k*MR + i]; rows m..MR-1 zero. */
static void pack_a_panel(float *dst, const gemm_plan *p, int64_t i0, int64_t m,
                         int64_t p0, int64_t kc)
{
    const int mr = p->kr->mr;
    if (p->transa) {                    /* A is (K,M): rows of op(A) are contiguous in k */
        for (int64_t k = 0; k < kc; k++) {
            const float *src = p->A + (p0 + k) * p->lda + i0;
            float *d = dst + k * mr;
            for (int64_t i = 0; i < m; i++) d[i] = src[i];
            for (int64_t i = m; i < mr; i++) d[i] = 0.0f;
        }
    } else {
        for (int64_t i = 0; i < m; i++) {
            const float *src = p->A + (i0 + i) * p->lda + p0;
            for (int64_t k = 0; k < kc; k++) dst[k * mr + i] = src[k];
        }
        for (int64_t i = m; i < mr; i++)
            for (int64_t k = 0; k < kc; k++) dst[k * mr + i] = 0.0f;
    }
}

/* One NR-column micro-panel of op(B): depth p0..p0+kc, columns j0..j0+n, as
 * dst[k*NR + j]; columns n..NR-1 zero. */
static void pack_b_panel(float *dst, const gemm_plan *p, int64_t p0, int64_t kc,
                         int64_t j0, int64_t n)
{
    const int nr = p->kr->nr;
    for (int64_t k = 0; k < kc; k++) {
        float *d = dst + k * nr;
        if (p->transb) {                /* B is (N,K) */
            const float *src = p->B + j0 * p->ldb + p0 + k;
            for (int64_t j = 0; j < n; j++) d[j] = src[j * p->ldb];
        } else {
            memcpy(d, p->B + (p0 + k) * p->ldb + j0, (size_t)n * sizeof(float));
        }
        for (int64_t j = n; j < nr; j++) d[j] = 0.0f;
    }
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
    for (int64_t jp = 0; jp < n; jp += nr)
        pack_b_panel(dst + jp * kc, p, p0, kc, j0 + jp, min64(nr, n - jp));
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
        for (int64_t ir = 0; ir < m; ir += mr)
            p->kr->ukernel(kc, ap + ir * kc, b, ldb, p->C + (i0 + ir) * p->ldc + j0 + jr,
                           p->ldc, p->alpha, beta, (int)min64(mr, m - ir), nb);
    }
}

/* Thread t of nt: its share [lo, hi) of `total`, split in whole units. */
static void share(int64_t total, int64_t unit, int t, int nt, int64_t *lo, int64_t *hi)
{
    int64_t units = ceil_div(total, unit);
    *lo = min64(total, units * t / nt * unit);
    *hi = min64(total, units * (t + 1) / nt * unit);
}

static inline int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Split along M: thread t owns rows [m0, m1) of C and its A buffer; the B
 * panel (bshared) is packed by all threads together. Runs inside a parallel
 * region of nt threads (or serially, nt = 1). */
static void run_split_m(const gemm_plan *p, float *bshared, float *abuf, float *edge,
                        int64_t astride, int64_t estride, int nt)
{
    const int t = thread_id();
    const int nr = p->kr->nr;
    int64_t m0, m1;
    share(p->M, p->kr->mr, t, nt, &m0, &m1);
    float *ap = abuf + t * astride, *ep = edge + t * estride;
    int64_t mc = m1 > m0 ? even_chunk(m1 - m0, p->mc, p->kr->mr) : 0;
    for (int64_t j0 = 0; j0 < p->N; j0 += p->nc) {
        int64_t n = min64(p->nc, p->N - j0);
        for (int64_t p0 = 0; p0 < p->K; p0 += p->kc) {
            int64_t kc = min64(p->kc, p->K - p0);
            float beta = p0 == 0 ? p->beta : 1.0f;
            if (!p->direct_b) {
                int64_t panels = ceil_div(n, nr);
                /* each thread packs whole, disjoint NR-column panels of B */
                #pragma omp for schedule(static)
                for (int64_t jp = 0; jp < panels; jp++)
                    pack_b_panel(bshared + jp * nr * kc, p, p0, kc, j0 + jp * nr,
                                 min64(nr, n - jp * nr));
            }
            for (int64_t i0 = m0; i0 < m1; i0 += mc) {
                int64_t m = min64(mc, m1 - i0);
                pack_a_block(ap, p, i0, m, p0, kc);
                macro_kernel(p, ap, bshared, ep, i0, m, j0, n, p0, kc, beta);
            }
            if (!p->direct_b) {
                #pragma omp barrier
            }
        }
    }
}

/* Split along N: thread t owns columns [n0, n1) of C and its B buffer; the
 * A block (ashared) is packed by all threads together. */
static void run_split_n(const gemm_plan *p, float *ashared, float *bbuf, float *edge,
                        int64_t bstride, int64_t estride, int nt)
{
    const int t = thread_id();
    const int mr = p->kr->mr;
    int64_t n0, n1;
    share(p->N, p->kr->nr, t, nt, &n0, &n1);
    float *bp = bbuf + t * bstride, *ep = edge + t * estride;
    int64_t nc = n1 > n0 ? even_chunk(n1 - n0, p->nc, p->kr->nr) : 0;
    for (int64_t p0 = 0; p0 < p->K; p0 += p->kc) {
        int64_t kc = min64(p->kc, p->K - p0);
        float beta = p0 == 0 ? p->beta : 1.0f;
        for (int64_t i0 = 0; i0 < p->M; i0 += p->mc) {
            int64_t m = min64(p->mc, p->M - i0);
            int64_t panels = ceil_div(m, mr);
            /* each thread packs whole, disjoint MR-row panels of A */
            #pragma omp for schedule(static)
            for (int64_t ip = 0; ip < panels; ip++)
                pack_a_panel(ashared + ip * mr * kc, p, i0 + ip * mr, min64(mr, m - ip * mr),
                             p0, kc);
            for (int64_t j0 = n0; j0 < n1; j0 += nc) {
                int64_t n = min64(nc, n1 - j0);
                if (!p->direct_b)
                    pack_b_block(bp, p, p0, kc, j0, n);
                macro_kernel(p, ashared, bp, ep, i0, m, j0, n, p0, kc, beta);
            }
            #pragma omp barrier
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

/* Max-per-thread tiles when nt threads split `tiles` whole tiles. */
static int64_t tiles_per_thread(int64_t tiles, int nt)
{
    return ceil_div(tiles, nt);
}

int sgemm(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
          const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
          float *C, int64_t ldc, int nthreads)
{
    if (M <= 0 || N <= 0)
        return FASTCNN_OK;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(C, M, N, ldc, beta);
        return FASTCNN_OK;
    }
    const gemm_kernel *kr = select_kernel();
    gemm_plan p = {kr, transa, transb, !transb && M <= DIRECT_B_MAX_ROWS, M, N, K, lda, ldb,
                   ldc, alpha, beta, A, B, C, 0, 0, 0};
    p.kc = even_chunk(K, kr->kc, 1);
    p.mc = even_chunk(M, kr->mc, kr->mr);
    p.nc = even_chunk(N, kr->nc, kr->nr);

    int64_t tm = ceil_div(M, kr->mr), tn = ceil_div(N, kr->nr);
    int nt = fastcnn_threads_for(M * N * K / 64, nthreads);
    if (nt > tm * tn)
        nt = (int)(tm * tn);
    /* split the dimension that shares out more evenly; ties go to M */
    int split_n = nt > 1 && tiles_per_thread(tn, nt) * tm < tiles_per_thread(tm, nt) * tn;

    /* shared block, then per-thread blocks, then per-thread edge panels */
    int64_t shared = split_n ? p.mc * p.kc : (p.direct_b ? 0 : p.nc * p.kc);
    int64_t priv = split_n ? (p.direct_b ? 0 : min64(p.nc, tiles_per_thread(tn, nt) * kr->nr) * p.kc)
                           : p.mc * p.kc;
    int64_t edge = round_up(p.kc * kr->nr, 16);
    shared = round_up(shared, 16);
    priv = round_up(priv, 16);
    float *buf = fastcnn_alloc((shared + nt * (priv + edge)) * (int64_t)sizeof(float));
    if (buf == NULL)
        return FASTCNN_ENOMEM;
    float *sbuf = buf, *pbuf = buf + shared, *ebuf = pbuf + nt * priv;

    /* threads write disjoint row (split M) or column (split N) ranges of C */
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        if (split_n)
            run_split_n(&p, sbuf, pbuf, ebuf, priv, edge, nt);
        else
            run_split_m(&p, sbuf, pbuf, ebuf, priv, edge, nt);
    }
    fastcnn_free(buf);
    return FASTCNN_OK;
}
