/* kernel_avx512.c - AVX-512 sgemm micro-kernel: a 14 x 32 tile of C.
 *
 * Why 14 x 32: each row of the tile is two zmm accumulators, so the tile
 * holds 28 of the 32 zmm registers; the other 4 hold the two 16-float
 * vectors of B's row k and the broadcast A(i,k). Each k step issues 28
 * independent FMAs against 2 vector loads and 14 broadcasts: Zen 5 retires
 * 2 512-bit FMAs per cycle at 4 cycles latency, so >= 8 independent
 * accumulator chains keep both pipes busy (28 >> 8), and 16 loads per 14
 * cycles stay under its 2 loads per cycle. Rows beyond mr are never
 * computed (the tile is specialised for each mr, and for edges of at most
 * 16 columns, e.g. N = 784 = 24 x 32 + 16); columns beyond nr are masked
 * off when C is read and written, and an edge's last few columns go down
 * the rows (columns(): N = 49 or 196).
 *
 * Blocking (48 KiB L1d, 1 MiB L2 per core, 32 MiB shared L3), measured
 * against kc in {256, 384, 512, 768, 1024} x mc in {84, 168, 336, 504}:
 *   kc = 512: a deep k loop halves the passes over C compared with 256 (C
 *             traffic was the loss at 2048); the 14 x kc A micro-panel
 *             (28 KiB) fits L1, the kc x 32 B micro-panel (64 KiB) streams
 *             from L2 with software prefetch 8 rows ahead (and the
 *             driver's far stream, bfar, into L2);
 *   mc = 168: the packed mc x kc block of A is 336 KiB, a third of L2,
 *             leaving room for B micro-panels and C lines;
 *   nc = 4096: the packed kc x nc panel of B is 8 MiB of the 32 MiB L3,
 *             shared by the threads.
 * Other tiles measured (L1-resident kernel, then in place): 12x32, 8x48,
 * 6x64 all reach ~97% of peak in L1 and within noise of 14x32 in place;
 * 14x32 wastes least on the odd N of convolutions (N = PQ = 196, 784).
 *
 * Compiled with AVX-512 flags; calls nothing outside this file.
 */
#include <immintrin.h>

#include "transpose_regs.h"

#include "kernel.h"

/* k steps of packed A ahead that the k loop also prefetches into L2: at
 * batch 1 a network's weights are A (the out-channel rows) and come from
 * memory, which 16 steps ahead into L1 do not cover. Frozen MobileNetV2,
 * batch 1, interleaved with onnxruntime (Zen 5, 1 thread; means of two
 * profiled runs each, sgemm.c's next-panel prefetch included): its three
 * 160 -> 960 1x1 convolutions at 7x7 0.117-0.118 -> 0.100-0.101 ms. */
#define APF_FAR 64
#define MR 14           /* the 14 x 32 tile */
#define NR 32
#define MR8 8           /* the 8 x 48 tile */
#define NR8 48
#define ACC_ROWS 14     /* accumulator array bounds covering both tiles */
#define ACC_VECS 3

/* r + bias[i], then clamped (max(lo, r) and min(hi, r) keep a NaN r, as
 * the scalar clamp does). */
static inline __m512 finish(__m512 r, const gemm_epilogue *epi, int i)
{
    if (epi->bias)
        r = _mm512_add_ps(r, _mm512_set1_ps(epi->bias[i]));
    if (epi->clamp) {
        r = _mm512_max_ps(_mm512_set1_ps(epi->clamp[0]), r);
        r = _mm512_min_ps(_mm512_set1_ps(epi->clamp[1]), r);
    }
    return r;
}

/* The tile's first m rows and first nv vectors (nv * 16 >= nr columns) of a
 * tile with mr_pack rows per packed k step of a. */
static inline __attribute__((always_inline)) void
tile(const int mr_pack, const int m, const int nv, int64_t kc, const float *a, const float *b,
     int64_t ldb, const float *bfar, float *c, int64_t ldc, float alpha, float beta, int nr,
     const gemm_epilogue *epi)
{
    __m512 acc[ACC_ROWS][ACC_VECS];
#pragma GCC unroll 16
    for (int i = 0; i < m; i++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            acc[i][v] = _mm512_setzero_ps();
    /* C is touched only after the k loop: fetch its lines meanwhile
     * (prefetches never fault, so the full NR width is safe) */
#pragma GCC unroll 16
    for (int i = 0; i < m; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 16 * nv - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 1    /* measured: unrolling by 2 or 4 is 2-5% slower in place */
    for (int64_t k = 0; k < kc; k++) {
        __m512 bv[ACC_VECS];
        /* B rows stream from L2 (a 512 x 32 panel is 64 KiB), A from L2 */
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            _mm_prefetch((const char *)(b + 8 * ldb + 16 * v), _MM_HINT_T0);
            _mm_prefetch((const char *)(bfar + 16 * v), _MM_HINT_T1);
        }
        _mm_prefetch((const char *)(a + 16 * mr_pack), _MM_HINT_T0);
        _mm_prefetch((const char *)(a + APF_FAR * mr_pack), _MM_HINT_T1);
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 16
        for (int i = 0; i < m; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
        a += mr_pack;
        b += ldb;
        bfar += ldb;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __mmask16 mask[ACC_VECS];
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) {
        int rem = nr - 16 * v;
        mask[v] = rem >= 16 ? (__mmask16)0xFFFF : rem <= 0 ? 0 : (__mmask16)((1u << rem) - 1);
    }
#pragma GCC unroll 16
    for (int i = 0; i < m; i++) {
        float *ci = c + i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            __m512 r = _mm512_mul_ps(acc[i][v], va);
            if (beta != 0.0f)
                r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[v], ci + 16 * v), r);
            if (epi)
                r = finish(r, epi, i);
            _mm512_mask_storeu_ps(ci + 16 * v, mask[v], r);
        }
    }
}

/* The last few columns of a tile (1 <= ncol <= EDGE_COLS), computed down
 * the rows: per k step the vector of a's first m rows times B(k, j)
 * broadcast, one accumulator per column, so ncol FMAs per k step where a
 * tile's last, mostly masked vector spends m. The maps of a network's last
 * stages leave such edges: N = 49 (7x7) is 32 + 16 + 1 or 48 + 1 columns,
 * 196 (14x14) is 6 x 32 + 4. Each element is the same k-ordered chain of
 * FMAs, alpha, beta and epilogue as in tile(), so the results are bitwise
 * the tile's. */
#define EDGE_COLS 8
static inline __attribute__((always_inline)) void
columns(const int mr_pack, const int ncol, int m, int64_t kc, const float *a, const float *b,
        int64_t ldb, float *c, int64_t ldc, float alpha, float beta, const gemm_epilogue *epi)
{
    const __mmask16 rows = (__mmask16)((1u << m) - 1);
    __m512 acc[EDGE_COLS];
#pragma GCC unroll 8
    for (int j = 0; j < ncol; j++)
        acc[j] = _mm512_setzero_ps();
#pragma GCC unroll 1
    for (int64_t k = 0; k < kc; k++) {
        _mm_prefetch((const char *)(a + 16 * mr_pack), _MM_HINT_T0);
        _mm_prefetch((const char *)(a + APF_FAR * mr_pack), _MM_HINT_T1);
        __m512 av = _mm512_maskz_loadu_ps(rows, a);
#pragma GCC unroll 8
        for (int j = 0; j < ncol; j++)
            acc[j] = _mm512_fmadd_ps(av, _mm512_set1_ps(b[j]), acc[j]);
        a += mr_pack;
        b += ldb;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    float col[16];
#pragma GCC unroll 8
    for (int j = 0; j < ncol; j++) {
        __m512 r = _mm512_mul_ps(acc[j], va);
        if (beta != 0.0f) {
            for (int i = 0; i < m; i++)
                col[i] = c[i * ldc + j];
            r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(rows, col), r);
        }
        if (epi && epi->bias)
            r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(rows, epi->bias));
        if (epi && epi->clamp) {
            r = _mm512_max_ps(_mm512_set1_ps(epi->clamp[0]), r);
            r = _mm512_min_ps(_mm512_set1_ps(epi->clamp[1]), r);
        }
        _mm512_storeu_ps(col, r);
        for (int i = 0; i < m; i++)
            c[i * ldc + j] = col[i];
    }
}

/* columns() for ncol = edge, 1..EDGE_COLS (b and c at the first of them) */
static void edge_columns(const int mr_pack, int edge, int m, int64_t kc, const float *a,
                         const float *b, int64_t ldb, float *c, int64_t ldc, float alpha,
                         float beta, const gemm_epilogue *epi)
{
#define EDGE_CASE(n)                                                               \
    case n:                                                                        \
        columns(mr_pack, n, m, kc, a, b, ldb, c, ldc, alpha, beta, epi);           \
        break;
    switch (edge) {
    EDGE_CASE(1) EDGE_CASE(2) EDGE_CASE(3) EDGE_CASE(4)
    EDGE_CASE(5) EDGE_CASE(6) EDGE_CASE(7) EDGE_CASE(8)
    default: break;
    }
#undef EDGE_CASE
}

/* The columns past a tile's whole vectors go down the rows when that costs
 * fewer FMAs (fewer columns than rows). Each column is one chain of FMAs,
 * so a k step takes at least the FMA latency (4 cycles): as long as m
 * rows of FMAs take on two pipes (Zen 5, Sapphire Rapids) from m = 8, half
 * as long as them on Zen 4's one 512-bit pipe. Measured (Zen 4, 1 thread,
 * interleaved with the tile-only build): 960 x 160 x 49 76 -> 90 GFLOP/s,
 * 512 x 4608 x 49 76 -> 89, 576 x 96 x 196 99.5 -> 103.5, other N within
 * 1%. (AVX2's 6-row tile would lose: 6 FMAs on two pipes take 3 cycles.) */
static inline int down_the_rows(int m, int nr)
{
    int edge = nr % 16;
    return edge && edge <= EDGE_COLS && edge < m;
}

/* A tile of nr <= 16 * nv columns: whole vectors across the columns, and
 * its last few columns down the rows where down_the_rows() says so. */
#define TILE_COLUMNS(mr_pack, m, nv)                                                   \
    if (down_the_rows(m, nr)) {                                                        \
        int whole = nr / 16;                                                           \
        if (whole == 2)                                                                \
            tile(mr_pack, m, 2, kc, a, b, ldb, bfar, c, ldc, alpha, beta, 32, epi);    \
        else if (whole == 1)                                                           \
            tile(mr_pack, m, 1, kc, a, b, ldb, bfar, c, ldc, alpha, beta, 16, epi);    \
        edge_columns(mr_pack, nr % 16, m, kc, a, b + 16 * whole, ldb, c + 16 * whole,  \
                     ldc, alpha, beta, epi);                                           \
    } else {                                                                           \
        tile(mr_pack, m, nv, kc, a, b, ldb, bfar, c, ldc, alpha, beta, nr, epi);       \
    }

#define TILE_CASE(m)                                                        \
    case m:                                                                 \
        if (nr > 16) {                                                      \
            TILE_COLUMNS(MR, m, 2)                                          \
        } else {    /* an edge of at most 16 columns: half the FMAs */      \
            TILE_COLUMNS(MR, m, 1)                                          \
        }                                                                   \
        break;

#define TILE8_CASE(m)                                                       \
    case m:                                                                 \
        if (nr > 32) {                                                      \
            TILE_COLUMNS(MR8, m, 3)                                         \
        } else if (nr > 16) {                                               \
            TILE_COLUMNS(MR8, m, 2)                                         \
        } else {                                                            \
            TILE_COLUMNS(MR8, m, 1)                                         \
        }                                                                   \
        break;

static void ukernel(int64_t kc, const float *a, const float *b, int64_t ldb, const float *bfar,
                    float *c, int64_t ldc, float alpha, float beta, int mr, int nr,
                    const gemm_epilogue *epi)
{
    switch (mr) {
    TILE_CASE(14) TILE_CASE(13) TILE_CASE(12) TILE_CASE(11) TILE_CASE(10) TILE_CASE(9)
    TILE_CASE(8) TILE_CASE(7) TILE_CASE(6) TILE_CASE(5) TILE_CASE(4) TILE_CASE(3)
    TILE_CASE(2) TILE_CASE(1)
    default: break;
    }
}

/* The 8 x 48 tile: 24 accumulators, 3 B vectors and a broadcast per k step;
 * used when M is a multiple of 8 but not of 14 (out-channel counts 16, 64,
 * 128), where the 14-row tile would compute padding rows. */
static void ukernel8(int64_t kc, const float *a, const float *b, int64_t ldb, const float *bfar,
                     float *c, int64_t ldc, float alpha, float beta, int mr, int nr,
                     const gemm_epilogue *epi)
{
    switch (mr) {
    TILE8_CASE(8) TILE8_CASE(7) TILE8_CASE(6) TILE8_CASE(5) TILE8_CASE(4) TILE8_CASE(3)
    TILE8_CASE(2) TILE8_CASE(1)
    default: break;
    }
}

/* gemm_transpose (kernel.h) in 16 x 16 register blocks; masked loads and
 * stores keep every access inside rows x cols of src and dst. Each block
 * also prefetches into L2 the same columns of the `rows` rows after src's,
 * which the next call packs (sgemm packs micro-panel after micro-panel):
 * packing a transposed operand from memory (a 1x1 weight gradient's x and
 * dy, 256 x 196 per image) otherwise waits on 16 row streams the hardware
 * does not follow. pw_14's weight gradient (1 thread, Zen 4, GEMM path, in
 * one process against prefetching each row 64 floats ahead in L1): 8.35 ->
 * 7.93 ms; into L1 instead 8.27 -> 8.86. */
static void transpose(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows,
                      int64_t cols)
{
    for (int64_t r0 = 0; r0 < rows; r0 += 16) {
        int rn = rows - r0 < 16 ? (int)(rows - r0) : 16;
        __mmask16 rmask = (__mmask16)((1u << rn) - 1);
        for (int64_t c0 = 0; c0 < cols; c0 += 16) {
            int cn = cols - c0 < 16 ? (int)(cols - c0) : 16;
            __mmask16 cmask = (__mmask16)((1u << cn) - 1);
            __m512 r[16];
            for (int i = 0; i < rn; i++)
                _mm_prefetch((const char *)(src + (rows + r0 + i) * lds + c0), _MM_HINT_T1);
            for (int i = 0; i < 16; i++)
                r[i] = i < rn ? _mm512_maskz_loadu_ps(cmask, src + (r0 + i) * lds + c0)
                              : _mm512_setzero_ps();
            transpose16(r);
            for (int i = 0; i < cn; i++)
                _mm512_mask_storeu_ps(dst + (c0 + i) * ldd + r0, rmask, r[i]);
        }
    }
}

/* B in place up to 256 rows of C (measured in sgemm.c) */
const gemm_kernel gemm_kernel_avx512 = {"avx512", MR, NR, 512, 168, 4096, 256, ukernel,
                                        transpose};
const gemm_kernel gemm_kernel_avx512_8x48 = {"avx512_8x48", MR8, NR8, 512, 168, 4080, 256,
                                             ukernel8, transpose};
