/* batchnorm2d_kernel.h - batch norm's loops over one block of a channel
 * (private to the batchnorm2d family), compiled once per instruction set.
 * Without BN_VBYTES defined it only declares them; batchnorm2d.c (16-byte
 * vectors) and batchnorm2d_avx2.c / _avx512.c (32 and 64 bytes) define it
 * first and so compile the same loops with their own vectors (GCC vector
 * extensions).
 *
 * A block: `rows` runs of n floats of one channel, run r at offset r * ld
 * (the same channel's plane in consecutive images, or a piece of one plane),
 * at most BN_BLOCK floats in all. Sums run in BN_ACC independent vector
 * accumulators of floats (one chain of dependent additions would be several
 * times slower than memory): exact enough over one block, each lane adding at
 * most BN_BLOCK / lanes values. The caller adds the blocks' sums in double. */
#ifndef FASTCNN_BATCHNORM2D_KERNEL_H
#define FASTCNN_BATCHNORM2D_KERNEL_H

#include <stdint.h>

#define BN_BLOCK 8192           /* most floats of one block (32 KiB: L1 or L2) */

/* The loops of one instruction set over a block (rows >= 1, n >= 1). */
typedef struct {
    /* with d = x - shift: *sum = sum d, *m2 = sum (d - *sum / count)^2
     * (the block is read twice: from L1) */
    void (*moments)(float *sum, float *m2, const float *x, int64_t rows, int64_t n,
                    int64_t ld, float shift);
    /* *sdy = sum dy, *sdyx = sum dy (x - m) */
    void (*grad_sums)(float *sdy, float *sdyx, const float *dy, const float *x, int64_t rows,
                      int64_t n, int64_t ld, float m);
    /* y = x scale + shift; stream: non-temporal stores (y bypasses the cache),
     * ordered before other threads read y only by a later fence(), and
     * then, with next != 0, the values next floats on from the inputs
     * (the next channel's) prefetched into L2 as it goes */
    void (*affine)(float *y, const float *x, int64_t rows, int64_t n, int64_t ld, float scale,
                   float shift, int stream, int64_t next);
    /* dx = k (dy - a - b (x - m)); stream and next as for affine */
    void (*grad_input)(float *dx, const float *dy, const float *x, int64_t rows, int64_t n,
                       int64_t ld, float m, float k, float a, float b, int stream,
                       int64_t next);
    /* orders the non-temporal stores before this call ahead of later stores */
    void (*fence)(void);
} batchnorm2d_kernels;

extern const batchnorm2d_kernels batchnorm2d_kernels_generic;
extern const batchnorm2d_kernels batchnorm2d_kernels_avx2;
extern const batchnorm2d_kernels batchnorm2d_kernels_avx512;

#endif /* FASTCNN_BATCHNORM2D_KERNEL_H */

#if defined(BN_VBYTES) && !defined(FASTCNN_BATCHNORM2D_LOOPS)
#define FASTCNN_BATCHNORM2D_LOOPS

#define BN_VL (BN_VBYTES / 4)   /* floats per vector */
#define BN_ACC 4                /* accumulators per sum (bn_total adds four) */
#define BN_STEP (BN_ACC * BN_VL)
/* Floats ahead that the gradient sums prefetch a pair of runs: a channel is
 * runs of a few KiB (its plane in each image) far apart, which the hardware
 * prefetchers pick up late. Zen 5, the backward on 32x64x56x56, 1 thread,
 * alternating processes: 2.43-2.51 ms without, 2.22-2.42 with (the sums
 * alone 1.61-2.17 / 1.31-1.45); at 2 threads within the noise. */
#define BN_PF 512
typedef float bnvec __attribute__((vector_size(BN_VBYTES), aligned(4), may_alias));

static inline bnvec bn_load(const float *p)
{
    return *(const bnvec *)p;
}

static inline void bn_store(float *p, bnvec v)
{
    *(bnvec *)p = v;
}

static inline bnvec bn_splat(float v)
{
    return (bnvec){0} + v;
}

/* Non-temporal store of a vector to a vector-aligned address (x86-64; a plain
 * store elsewhere), and the fence that orders such stores before the caller
 * returns. */
#if defined(__x86_64__)
#include <immintrin.h>
static inline void bn_stream(float *p, bnvec v)
{
#if BN_VBYTES == 64
    _mm512_stream_ps(p, (__m512)v);
#elif BN_VBYTES == 32
    _mm256_stream_ps(p, (__m256)v);
#else
    _mm_stream_ps(p, (__m128)v);
#endif
}

static inline void bn_fence(void)
{
    _mm_sfence();
}
#else
static inline void bn_stream(float *p, bnvec v)
{
    bn_store(p, v);
}

static inline void bn_fence(void)
{
}
#endif

/* floats before p + i is vector-aligned, at most n */
static inline int64_t bn_head(const float *p, int64_t n)
{
    int64_t h = (int64_t)((BN_VBYTES - (uintptr_t)p % BN_VBYTES) % BN_VBYTES) / 4;
    return h < n ? h : n;
}

/* the lanes of acc[0] + ... + acc[3] plus the scalar tail t */
static inline float bn_total(const bnvec *acc, float t)
{
    bnvec v = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (int j = 0; j < BN_VL; j++)
        t += v[j];
    return t;
}

/* Each loop takes the block's runs two at a time (four streams from memory
 * instead of two: a strided plane per image otherwise leaves the hardware
 * prefetchers too little to do), then the odd run alone. A sum gives each
 * run of a pair BN_ACC / 2 accumulators, a lone run all BN_ACC; then single
 * vectors and a scalar tail. */

/* Prefetches the cache lines of the runs p0, p1 (ld apart, pairs 2 ld
 * apart, n floats each) that are BN_PF floats past column i: past a run's
 * end, the next pair's. (Prefetches never fault.) */
static inline void bn_prefetch_pair(const float *p0, int64_t ld, int64_t n, int64_t i)
{
    int64_t j = i + BN_PF, o = j < n ? j : 2 * ld + j - n;
    for (int a = 0; a < BN_ACC / 2 * BN_VL; a += 64 / (int)sizeof(float)) {
        __builtin_prefetch(p0 + o + a);
        __builtin_prefetch(p0 + ld + o + a);
    }
}

/* v - k - m, or its square (sq) */
static inline bnvec bn_dev(bnvec v, bnvec k, bnvec m, int sq)
{
    bnvec d = (v - k) - m;
    if (sq)
        d *= d;
    return d;
}

static inline float bn_dev1(float v, float k, float m, int sq)
{
    float d = (v - k) - m;
    return sq ? d * d : d;
}

/* acc, *t += the sums of (x - k) - m over a block or, with sq (a constant),
 * of their squares */
static inline void bn_dev_sums(bnvec *acc, float *t, const float *x, int64_t rows, int64_t n,
                               int64_t ld, float k, float m, int sq)
{
    const int H = BN_ACC / 2;
    bnvec kv = bn_splat(k), mv = bn_splat(m);
    int64_t r = 0;
    for (; r + 1 < rows; r += 2) {
        const float *x0 = x + r * ld, *x1 = x0 + ld;
        int64_t i = 0;
        for (; i + H * BN_VL <= n; i += H * BN_VL)
            for (int a = 0; a < H; a++) {
                acc[a] += bn_dev(bn_load(x0 + i + a * BN_VL), kv, mv, sq);
                acc[H + a] += bn_dev(bn_load(x1 + i + a * BN_VL), kv, mv, sq);
            }
        for (; i < n; i++)
            *t += bn_dev1(x0[i], k, m, sq) + bn_dev1(x1[i], k, m, sq);
    }
    for (; r < rows; r++) {
        const float *xr = x + r * ld;
        int64_t i = 0;
        for (; i + BN_STEP <= n; i += BN_STEP)
            for (int a = 0; a < BN_ACC; a++)
                acc[a] += bn_dev(bn_load(xr + i + a * BN_VL), kv, mv, sq);
        for (; i + BN_VL <= n; i += BN_VL)
            acc[0] += bn_dev(bn_load(xr + i), kv, mv, sq);
        for (; i < n; i++)
            *t += bn_dev1(xr[i], k, m, sq);
    }
}

static void bn_moments(float *sum, float *m2, const float *x, int64_t rows, int64_t n,
                       int64_t ld, float shift)
{
    bnvec acc[BN_ACC] = {{0}, {0}, {0}, {0}};
    float t = 0.0f;
    bn_dev_sums(acc, &t, x, rows, n, ld, shift, 0.0f, 0);
    float s = bn_total(acc, t);
    for (int a = 0; a < BN_ACC; a++)
        acc[a] = bn_splat(0.0f);
    t = 0.0f;
    bn_dev_sums(acc, &t, x, rows, n, ld, shift, s / (float)(rows * n), 1);
    *sum = s;
    *m2 = bn_total(acc, t);
}

static void bn_grad_sums(float *sdy, float *sdyx, const float *dy, const float *x, int64_t rows,
                         int64_t n, int64_t ld, float m)
{
    const int H = BN_ACC / 2;
    bnvec ady[BN_ACC] = {{0}, {0}, {0}, {0}}, adyx[BN_ACC] = {{0}, {0}, {0}, {0}};
    bnvec mv = bn_splat(m);
    float tdy = 0.0f, tdyx = 0.0f;
    int64_t r = 0;
    for (; r + 1 < rows; r += 2) {
        const float *g0 = dy + r * ld, *x0 = x + r * ld, *g1 = g0 + ld, *x1 = x0 + ld;
        int64_t i = 0;
        for (; i + H * BN_VL <= n; i += H * BN_VL) {
            bn_prefetch_pair(g0, ld, n, i);
            bn_prefetch_pair(x0, ld, n, i);
            for (int a = 0; a < H; a++) {
                bnvec d0 = bn_load(g0 + i + a * BN_VL), d1 = bn_load(g1 + i + a * BN_VL);
                ady[a] += d0;
                adyx[a] += d0 * (bn_load(x0 + i + a * BN_VL) - mv);
                ady[H + a] += d1;
                adyx[H + a] += d1 * (bn_load(x1 + i + a * BN_VL) - mv);
            }
        }
        for (; i < n; i++) {
            tdy += g0[i] + g1[i];
            tdyx += g0[i] * (x0[i] - m) + g1[i] * (x1[i] - m);
        }
    }
    for (; r < rows; r++) {
        const float *g = dy + r * ld, *xr = x + r * ld;
        int64_t i = 0;
        for (; i + BN_STEP <= n; i += BN_STEP)
            for (int a = 0; a < BN_ACC; a++) {
                bnvec d = bn_load(g + i + a * BN_VL);
                ady[a] += d;
                adyx[a] += d * (bn_load(xr + i + a * BN_VL) - mv);
            }
        for (; i + BN_VL <= n; i += BN_VL) {
            bnvec d = bn_load(g + i);
            ady[0] += d;
            adyx[0] += d * (bn_load(xr + i) - mv);
        }
        for (; i < n; i++) {
            tdy += g[i];
            tdyx += g[i] * (xr[i] - m);
        }
    }
    *sdy = bn_total(ady, tdy);
    *sdyx = bn_total(adyx, tdyx);
}

/* one run of bn_affine: y = x scale + shift */
static inline void bn_affine_run(float *y, const float *x, int64_t n, bnvec s, bnvec b)
{
    int64_t i = 0;
    for (; i + BN_VL <= n; i += BN_VL)
        bn_store(y + i, bn_load(x + i) * s + b);
    for (; i < n; i++)
        y[i] = x[i] * s[0] + b[0];
}

/* prefetched into L2: p's line, where next (floats on) is not 0 */
static inline void bn_prefetch_next(const float *p, int64_t next)
{
    if (next)
        __builtin_prefetch(p + next, 0, 2);
}

/* bn_affine_run with non-temporal stores from y's first aligned vector on,
 * prefetching the values next floats on from x */
static void bn_affine_stream(float *y, const float *x, int64_t n, bnvec s, bnvec b, int64_t next)
{
    int64_t i = bn_head(y, n);
    bn_affine_run(y, x, i, s, b);
    for (; i + BN_VL <= n; i += BN_VL) {
        bn_prefetch_next(x + i, next);
        bn_stream(y + i, bn_load(x + i) * s + b);
    }
    bn_affine_run(y + i, x + i, n - i, s, b);
}

static void bn_affine(float *y, const float *x, int64_t rows, int64_t n, int64_t ld,
                      float scale, float shift, int stream, int64_t next)
{
    bnvec s = bn_splat(scale), b = bn_splat(shift);
    if (stream) {
        for (int64_t r = 0; r < rows; r++)
            bn_affine_stream(y + r * ld, x + r * ld, n, s, b, next);
        return;
    }
    int64_t r = 0;
    for (; r + 1 < rows; r += 2) {
        const float *x0 = x + r * ld, *x1 = x0 + ld;
        float *y0 = y + r * ld, *y1 = y0 + ld;
        int64_t i = 0;
        for (; i + BN_VL <= n; i += BN_VL) {
            bn_store(y0 + i, bn_load(x0 + i) * s + b);
            bn_store(y1 + i, bn_load(x1 + i) * s + b);
        }
        bn_affine_run(y0 + i, x0 + i, n - i, s, b);
        bn_affine_run(y1 + i, x1 + i, n - i, s, b);
    }
    if (r < rows)
        bn_affine_run(y + r * ld, x + r * ld, n, s, b);
}

/* one run of bn_grad_input; c: m, k, a, b splatted */
static inline void bn_grad_input_run(float *dx, const float *dy, const float *x, int64_t n,
                                     const bnvec *c)
{
    int64_t i = 0;
    for (; i + BN_VL <= n; i += BN_VL)
        bn_store(dx + i, c[1] * ((bn_load(dy + i) - c[2]) - c[3] * (bn_load(x + i) - c[0])));
    for (; i < n; i++)
        dx[i] = c[1][0] * ((dy[i] - c[2][0]) - c[3][0] * (x[i] - c[0][0]));
}

/* bn_grad_input_run with non-temporal stores from dx's first aligned vector on,
 * prefetching the values next floats on from dy and x */
static void bn_grad_input_stream(float *dx, const float *dy, const float *x, int64_t n,
                                 const bnvec *c, int64_t next)
{
    int64_t i = bn_head(dx, n);
    bn_grad_input_run(dx, dy, x, i, c);
    for (; i + BN_VL <= n; i += BN_VL) {
        bn_prefetch_next(x + i, next);
        bn_prefetch_next(dy + i, next);
        bn_stream(dx + i, c[1] * ((bn_load(dy + i) - c[2]) - c[3] * (bn_load(x + i) - c[0])));
    }
    bn_grad_input_run(dx + i, dy + i, x + i, n - i, c);
}

static void bn_grad_input(float *dx, const float *dy, const float *x, int64_t rows, int64_t n,
                          int64_t ld, float m, float k, float a, float b, int stream,
                          int64_t next)
{
    const bnvec c[4] = {bn_splat(m), bn_splat(k), bn_splat(a), bn_splat(b)};
    if (stream) {
        for (int64_t r = 0; r < rows; r++)
            bn_grad_input_stream(dx + r * ld, dy + r * ld, x + r * ld, n, c, next);
        return;
    }
    int64_t r = 0;
    for (; r + 1 < rows; r += 2) {
        const float *g0 = dy + r * ld, *x0 = x + r * ld, *g1 = g0 + ld, *x1 = x0 + ld;
        float *d0 = dx + r * ld, *d1 = d0 + ld;
        int64_t i = 0;
        for (; i + BN_VL <= n; i += BN_VL) {
            bn_store(d0 + i, c[1] * ((bn_load(g0 + i) - c[2]) - c[3] * (bn_load(x0 + i) - c[0])));
            bn_store(d1 + i, c[1] * ((bn_load(g1 + i) - c[2]) - c[3] * (bn_load(x1 + i) - c[0])));
        }
        bn_grad_input_run(d0 + i, g0 + i, x0 + i, n - i, c);
        bn_grad_input_run(d1 + i, g1 + i, x1 + i, n - i, c);
    }
    if (r < rows)
        bn_grad_input_run(dx + r * ld, dy + r * ld, x + r * ld, n, c);
}

#define BATCHNORM2D_DEFINE(isa)                                                            \
    const batchnorm2d_kernels batchnorm2d_kernels_##isa = {bn_moments, bn_grad_sums,        \
                                                           bn_affine, bn_grad_input, bn_fence};

#endif /* BN_VBYTES */
