/* expf_vec.h - a float32 exp that gcc vectorizes (private to fastcnn's C).
 *
 * expf from libm is a scalar call, so loops calling it never vectorize
 * (no libmvec without -ffast-math). exp_vec is branch-free float/int
 * arithmetic only, for use inside `#pragma omp simd` loops:
 *   x = n*ln2 + r, n = round(x*log2(e)), |r| <= ln2/2 (Cody-Waite split of ln2),
 *   exp(r) = 1 + r + r^2 * P(r), P degree 5 (Cephes minimax coefficients),
 *   exp(x) = exp(r) * 2^(n/2) * 2^(n - n/2)  (two exact scalings, so results
 *   down to the denormals round once and n = 128 still overflows to inf).
 * Max error about 1 ulp on [-87.3, 88.7]; x > 88.73 gives inf, x < -103.98
 * gives 0, NaN gives NaN (exhaustively checked against double exp, SSE2 build).
 * Tests: tests/test_activation.py, tests/test_loss.py. */
#ifndef FASTCNN_EXPF_VEC_H
#define FASTCNN_EXPF_VEC_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float fastcnn_bits_to_float(uint32_t i)
{
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

static inline uint32_t fastcnn_float_to_bits(float f)
{
    uint32_t i;
    memcpy(&i, &f, sizeof i);
    return i;
}

/* 2^k as a float, for -126 <= k <= 127 (unsigned arithmetic: any k is defined). */
static inline float fastcnn_pow2i(int32_t k)
{
    return fastcnn_bits_to_float(((uint32_t)k + 127u) << 23);
}

static inline float exp_vec(float x)
{
    const float shifter = 12582912.0f;  /* 1.5 * 2^23: adding it rounds to an integer */
    /* Clamp x to [-105, 89] (exp(-105) rounds to 0, exp(89) overflows to inf)
     * by bit masks, not ?: on floats, which gcc turns into branches (it
     * threads the constant) that block vectorization; a NaN stays NaN. */
    uint32_t lo = -(uint32_t)(x < -105.0f), hi = -(uint32_t)(x > 89.0f);
    uint32_t xb = (fastcnn_float_to_bits(x) & ~(lo | hi))
                  | (fastcnn_float_to_bits(-105.0f) & lo) | (fastcnn_float_to_bits(89.0f) & hi);
    x = fastcnn_bits_to_float(xb);
    float t = x * 1.44269504088896341f + shifter;
    int32_t n = (int32_t)(fastcnn_float_to_bits(t) - fastcnn_float_to_bits(shifter));  /* -151..128 */
    float nf = t - shifter;
    float r = x - nf * 0.693359375f;    /* ln2 high part: nf * it is exact */
    r = r - nf * -2.12194440e-4f;       /* ln2 low part */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t h = n >> 1;
    return p * fastcnn_pow2i(h) * fastcnn_pow2i(n - h);
}

/* Stable for large |x|: exp of a non-positive number only. A select of the
 * numerator (not of two products, which gcc turns into a branch), so loops
 * over it vectorize. */
static inline float sigmoid1(float x)
{
    float e = exp_vec(-fabsf(x));
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

/* y (n) = sigmoid(x (n)). */
static inline void sigmoid_span(float *y, const float *x, int64_t n)
{
    #pragma omp simd
    for (int64_t i = 0; i < n; i++)
        y[i] = sigmoid1(x[i]);
}

/* p (L) = exp(z (L) - m); returns their float sum. */
static inline float softmax_exps(float *p, const float *z, float m, int64_t L)
{
    float s = 0.0f;
    #pragma omp simd reduction(+:s)
    for (int64_t j = 0; j < L; j++) {
        p[j] = exp_vec(z[j] - m);
        s += p[j];
    }
    return s;
}

/* The same loops compiled per ISA (activation_avx2.c, activation_avx512.c,
 * loss_avx2.c, loss_avx512.c): gcc's 32/64-byte vectors, FMA contraction. */
void sigmoid_span_avx2(float *y, const float *x, int64_t n);
void sigmoid_span_avx512(float *y, const float *x, int64_t n);
float softmax_exps_avx2(float *p, const float *z, float m, int64_t L);
float softmax_exps_avx512(float *p, const float *z, float m, int64_t L);

#endif
