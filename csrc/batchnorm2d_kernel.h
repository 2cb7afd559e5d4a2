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

#define BN_BLOCK 4096           /* most floats of one block (16 KiB: it stays in L1) */

/* The loops of one instruction set over a block (rows >= 1, n >= 1). */
typedef struct {
    /* with d = x - shift: *sum = sum d, *m2 = sum (d - *sum / count)^2
     * (the block is read twice: from L1) */
    void (*moments)(float *sum, float *m2, const float *x, int64_t rows, int64_t n,
                    int64_t ld, float shift);
    /* *sdy = sum dy, *sdyx = sum dy (x - m) */
    void (*grad_sums)(float *sdy, float *sdyx, const float *dy, const float *x, int64_t rows,
                      int64_t n, int64_t ld, float m);
    /* y = x scale + shift */
    void (*affine)(float *y, const float *x, int64_t rows, int64_t n, int64_t ld, float scale,
                   float shift);
    /* dx = k (dy - a - b (x - m)) */
    void (*grad_input)(float *dx, const float *dy, const float *x, int64_t rows, int64_t n,
                       int64_t ld, float m, float k, float a, float b);
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

/* the lanes of acc[0] + ... + acc[3] plus the scalar tail t */
static inline float bn_total(const bnvec *acc, float t)
{
    bnvec v = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (int j = 0; j < BN_VL; j++)
        t += v[j];
    return t;
}

/* acc += the sums of x - k over a block: BN_STEP floats at a time, then
 * single vectors, then the scalar tail into *t */
static inline void bn_sum_block(bnvec *acc, float *t, const float *x, int64_t rows, int64_t n,
                                int64_t ld, float k)
{
    bnvec kv = bn_splat(k);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * ld;
        int64_t i = 0;
        for (; i + BN_STEP <= n; i += BN_STEP)
            for (int a = 0; a < BN_ACC; a++)
                acc[a] += bn_load(xr + i + a * BN_VL) - kv;
        for (; i + BN_VL <= n; i += BN_VL)
            acc[0] += bn_load(xr + i) - kv;
        for (; i < n; i++)
            *t += xr[i] - k;
    }
}

/* acc += the sums of ((x - k) - m)^2 over a block, as bn_sum_block */
static inline void bn_sum_sq_block(bnvec *acc, float *t, const float *x, int64_t rows,
                                   int64_t n, int64_t ld, float k, float m)
{
    bnvec kv = bn_splat(k), mv = bn_splat(m);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * ld;
        int64_t i = 0;
        for (; i + BN_STEP <= n; i += BN_STEP)
            for (int a = 0; a < BN_ACC; a++) {
                bnvec d = (bn_load(xr + i + a * BN_VL) - kv) - mv;
                acc[a] += d * d;
            }
        for (; i + BN_VL <= n; i += BN_VL) {
            bnvec d = (bn_load(xr + i) - kv) - mv;
            acc[0] += d * d;
        }
        for (; i < n; i++)
            *t += ((xr[i] - k) - m) * ((xr[i] - k) - m);
    }
}

static void bn_moments(float *sum, float *m2, const float *x, int64_t rows, int64_t n,
                       int64_t ld, float shift)
{
    bnvec acc[BN_ACC] = {{0}, {0}, {0}, {0}};
    float t = 0.0f;
    bn_sum_block(acc, &t, x, rows, n, ld, shift);
    float s = bn_total(acc, t);
    for (int a = 0; a < BN_ACC; a++)
        acc[a] = bn_splat(0.0f);
    t = 0.0f;
    bn_sum_sq_block(acc, &t, x, rows, n, ld, shift, s / (float)(rows * n));
    *sum = s;
    *m2 = bn_total(acc, t);
}

static void bn_grad_sums(float *sdy, float *sdyx, const float *dy, const float *x, int64_t rows,
                         int64_t n, int64_t ld, float m)
{
    bnvec ady[BN_ACC] = {{0}, {0}, {0}, {0}}, adyx[BN_ACC] = {{0}, {0}, {0}, {0}};
    bnvec mv = bn_splat(m);
    float tdy = 0.0f, tdyx = 0.0f;
    for (int64_t r = 0; r < rows; r++) {
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

static void bn_affine(float *y, const float *x, int64_t rows, int64_t n, int64_t ld,
                      float scale, float shift)
{
    bnvec s = bn_splat(scale), b = bn_splat(shift);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * ld;
        float *yr = y + r * ld;
        int64_t i = 0;
        for (; i + BN_VL <= n; i += BN_VL)
            bn_store(yr + i, bn_load(xr + i) * s + b);
        for (; i < n; i++)
            yr[i] = xr[i] * scale + shift;
    }
}

static void bn_grad_input(float *dx, const float *dy, const float *x, int64_t rows, int64_t n,
                          int64_t ld, float m, float k, float a, float b)
{
    bnvec mv = bn_splat(m), kv = bn_splat(k), av = bn_splat(a), bv = bn_splat(b);
    for (int64_t r = 0; r < rows; r++) {
        const float *g = dy + r * ld, *xr = x + r * ld;
        float *d = dx + r * ld;
        int64_t i = 0;
        for (; i + BN_VL <= n; i += BN_VL)
            bn_store(d + i, kv * ((bn_load(g + i) - av) - bv * (bn_load(xr + i) - mv)));
        for (; i < n; i++)
            d[i] = k * ((g[i] - a) - b * (xr[i] - m));
    }
}

#define BATCHNORM2D_DEFINE(isa)                                                            \
    const batchnorm2d_kernels batchnorm2d_kernels_##isa = {bn_moments, bn_grad_sums,        \
                                                           bn_affine, bn_grad_input};

#endif /* BN_VBYTES */
