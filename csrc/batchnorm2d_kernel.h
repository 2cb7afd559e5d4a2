/* batchnorm2d_kernel.h - batch norm's loops over one contiguous span of a
 * channel (private to the batchnorm2d family), compiled once per
 * instruction set. Without BN_VBYTES defined it only declares them;
 * batchnorm2d.c (16-byte vectors) and batchnorm2d_avx2.c / _avx512.c (32 and
 * 64 bytes) define it first and so compile the same loops with their own
 * vectors (GCC vector extensions).
 *
 * Sums run in BN_ACC independent vector accumulators of floats (one chain of
 * dependent additions would be several times slower than memory): exact
 * enough over a span of at most BN_SPAN floats, each lane adding at most
 * BN_SPAN / (BN_ACC * lanes) values. The caller adds the spans' sums in
 * double. */
#ifndef FASTCNN_BATCHNORM2D_KERNEL_H
#define FASTCNN_BATCHNORM2D_KERNEL_H

#include <stdint.h>

#define BN_SPAN 4096            /* most floats one span's float sums cover (16 KiB: L1) */

/* The loops of one instruction set; every buffer (n), n >= 1. */
typedef struct {
    /* with d = x - shift: *sum = sum d, *m2 = sum (d - *sum / n)^2 (the span
     * is read twice: from L1) */
    void (*moments)(float *sum, float *m2, const float *x, int64_t n, float shift);
    /* *sdy = sum dy, *sdyx = sum dy (x - m) */
    void (*grad_sums)(float *sdy, float *sdyx, const float *dy, const float *x, int64_t n,
                      float m);
    /* y = x scale + shift */
    void (*affine)(float *y, const float *x, int64_t n, float scale, float shift);
    /* dx = k (dy - a - b (x - m)) */
    void (*grad_input)(float *dx, const float *dy, const float *x, int64_t n, float m,
                       float k, float a, float b);
} batchnorm2d_kernels;

extern const batchnorm2d_kernels batchnorm2d_kernels_generic;
extern const batchnorm2d_kernels batchnorm2d_kernels_avx2;
extern const batchnorm2d_kernels batchnorm2d_kernels_avx512;

#endif /* FASTCNN_BATCHNORM2D_KERNEL_H */

#if defined(BN_VBYTES) && !defined(FASTCNN_BATCHNORM2D_LOOPS)
#define FASTCNN_BATCHNORM2D_LOOPS

#define BN_VL (BN_VBYTES / 4)   /* floats per vector */
#define BN_ACC 4                /* accumulators per sum */
#define BN_STEP (BN_ACC * BN_VL)
typedef float bnvec __attribute__((vector_size(BN_VBYTES), aligned(4), may_alias));

static inline bnvec bn_load(const float *p)
{
    return *(const bnvec *)p;
}

static inline bnvec bn_splat(float v)
{
    return (bnvec){0} + v;
}

/* the lanes of acc[0] + ... + acc[BN_ACC - 1] plus the scalar tail t */
static inline float bn_total(const bnvec *acc, float t)
{
    bnvec v = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (int j = 0; j < BN_VL; j++)
        t += v[j];
    return t;
}

static void bn_moments(float *sum, float *m2, const float *x, int64_t n, float shift)
{
    bnvec acc[BN_ACC] = {{0}, {0}, {0}, {0}}, k = bn_splat(shift);
    float t = 0.0f;
    int64_t i = 0;
    for (; i + BN_STEP <= n; i += BN_STEP)
        for (int a = 0; a < BN_ACC; a++)
            acc[a] += bn_load(x + i + a * BN_VL) - k;
    for (; i < n; i++)
        t += x[i] - shift;
    float s = bn_total(acc, t), m = s / (float)n;
    bnvec mv = bn_splat(m);
    for (int a = 0; a < BN_ACC; a++)
        acc[a] = bn_splat(0.0f);
    t = 0.0f;
    for (i = 0; i + BN_STEP <= n; i += BN_STEP)
        for (int a = 0; a < BN_ACC; a++) {
            bnvec d = (bn_load(x + i + a * BN_VL) - k) - mv;
            acc[a] += d * d;
        }
    for (; i < n; i++)
        t += ((x[i] - shift) - m) * ((x[i] - shift) - m);
    *sum = s;
    *m2 = bn_total(acc, t);
}

static void bn_grad_sums(float *sdy, float *sdyx, const float *dy, const float *x, int64_t n,
                         float m)
{
    bnvec ady[BN_ACC] = {{0}, {0}, {0}, {0}}, adyx[BN_ACC] = {{0}, {0}, {0}, {0}};
    bnvec mv = bn_splat(m);
    float tdy = 0.0f, tdyx = 0.0f;
    int64_t i = 0;
    for (; i + BN_STEP <= n; i += BN_STEP)
        for (int a = 0; a < BN_ACC; a++) {
            bnvec g = bn_load(dy + i + a * BN_VL);
            ady[a] += g;
            adyx[a] += g * (bn_load(x + i + a * BN_VL) - mv);
        }
    for (; i < n; i++) {
        tdy += dy[i];
        tdyx += dy[i] * (x[i] - m);
    }
    *sdy = bn_total(ady, tdy);
    *sdyx = bn_total(adyx, tdyx);
}

static void bn_affine(float *y, const float *x, int64_t n, float scale, float shift)
{
    bnvec s = bn_splat(scale), b = bn_splat(shift);
    int64_t i = 0;
    for (; i + BN_VL <= n; i += BN_VL)
        *(bnvec *)(y + i) = bn_load(x + i) * s + b;
    for (; i < n; i++)
        y[i] = x[i] * scale + shift;
}

static void bn_grad_input(float *dx, const float *dy, const float *x, int64_t n, float m,
                          float k, float a, float b)
{
    bnvec mv = bn_splat(m), kv = bn_splat(k), bv = bn_splat(b), av = bn_splat(a);
    int64_t i = 0;
    for (; i + BN_VL <= n; i += BN_VL)
        *(bnvec *)(dx + i) = kv * ((bn_load(dy + i) - av) - bv * (bn_load(x + i) - mv));
    for (; i < n; i++)
        dx[i] = k * ((dy[i] - a) - b * (x[i] - m));
}

#define BATCHNORM2D_DEFINE(isa)                                                            \
    const batchnorm2d_kernels batchnorm2d_kernels_##isa = {bn_moments, bn_grad_sums,        \
                                                           bn_affine, bn_grad_input};

#endif /* BN_VBYTES */
