/* optim_kernel.h - the fused element-wise loops of csrc/optim.c (private to
 * the optim family). Included by optim.c (portable build) and by
 * optim_avx2.c / optim_avx512.c, so each compiles the same loops with its own
 * instruction set; only inline code here (the per-ISA files call nothing else).
 *
 * Rounding follows torch.optim's default CPU path (the single-tensor loop,
 * float32): every torch op rounds once, and the ops torch fuses (add with
 * alpha, lerp, addcmul) are fmaf here. With FMA hardware the loops vectorize. */
#ifndef FASTCNN_OPTIM_KERNEL_H
#define FASTCNN_OPTIM_KERNEL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* One SGD step's float32 coefficients, rounded from the double
 * hyper-parameters where torch rounds them. */
typedef struct {
    float neg_lr, wd, momentum, one_minus_dampening;
    int has_wd, nesterov, first_step, maximize;
} sgd_coefs;

/* One Adam/AdamW step's float32 coefficients (bias corrections in double). */
typedef struct {
    float wd, decay;               /* L2 coefficient; AdamW factor 1 - lr*wd (else 1) */
    float w1, one_minus_w1;        /* lerp weight 1 - beta1, and 1 - w1 */
    float beta2, one_minus_beta2;
    float bc2_sqrt, eps, neg_step_size;
    float sign;                    /* -1 to maximize, else 1 (both exact) */
    int l2, small_w1;
} adam_coefs;

/* param, grad: (n). SGD without momentum. */
static inline void sgd_plain_loop(float *restrict param, const float *restrict grad,
                                  int64_t n, const sgd_coefs *c)
{
    const sgd_coefs k = *c;
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float g = k.maximize ? -grad[i] : grad[i];
        float d = k.has_wd ? fmaf(param[i], k.wd, g) : g;
        param[i] = fmaf(d, k.neg_lr, param[i]);
    }
}

/* param, buf, grad: (n). SGD with momentum (plain or Nesterov). */
static inline void sgd_momentum_loop(float *restrict param, float *restrict buf,
                                     const float *restrict grad, int64_t n,
                                     const sgd_coefs *c)
{
    const sgd_coefs k = *c;
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float g = k.maximize ? -grad[i] : grad[i];
        float d = k.has_wd ? fmaf(param[i], k.wd, g) : g;
        float b = k.first_step ? d : fmaf(d, k.one_minus_dampening, buf[i] * k.momentum);
        buf[i] = b;
        d = k.nesterov ? fmaf(b, k.momentum, d) : b;
        param[i] = fmaf(d, k.neg_lr, param[i]);
    }
}

/* Elements [i0, i1) of param, m, v, vmax, grad; vmax (AMSGrad's running
 * max of v) is used only when amsgrad != 0. Inlined with a constant amsgrad,
 * so each copy is a branch-free, vectorizable loop. */
static inline __attribute__((always_inline)) void adam_range(
    float *restrict param, float *restrict m, float *restrict v, float *restrict vmax,
    const float *restrict grad, int64_t i0, int64_t i1, const adam_coefs *c, const int amsgrad)
{
    const adam_coefs k = *c;
    #pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
        float g = grad[i] * k.sign;
        float p = param[i] * k.decay;
        float gl2 = fmaf(p, k.wd, g);             /* computed unconditionally, then */
        g = k.l2 ? gl2 : g;                       /* selected: keeps the loop branch-free */
        float mi = m[i], diff = g - mi;
        /* torch's lerp: two formulas, picked by the weight's size */
        float m_small = fmaf(k.w1, diff, mi), m_large = fmaf(-k.one_minus_w1, diff, g);
        mi = k.small_w1 ? m_small : m_large;
        float vi = fmaf(k.one_minus_beta2 * g, g, v[i] * k.beta2);
        m[i] = mi;
        v[i] = vi;
        if (amsgrad) {
            float x = vmax[i];
            vi = ((x >= vi) | (x != x)) ? x : vi;  /* torch.maximum: NaN wins */
            vmax[i] = vi;
        }
        float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;
        param[i] = p + (k.neg_step_size * mi) / denom;
    }
}

#define ADAM_BLOCK 4096

/* param, m, v, vmax, grad: (n); vmax may be NULL (no AMSGrad). */
static inline void adam_loop(float *param, float *m, float *v, float *vmax, const float *grad,
                             int64_t n, const adam_coefs *c)
{
    int64_t blocks = (n + ADAM_BLOCK - 1) / ADAM_BLOCK;
    for (int64_t b = 0; b < blocks; b++) {
        int64_t i0 = b * ADAM_BLOCK, i1 = i0 + ADAM_BLOCK < n ? i0 + ADAM_BLOCK : n;
        if (vmax != NULL)
            adam_range(param, m, v, vmax, grad, i0, i1, c, 1);
        else
            adam_range(param, m, v, NULL, grad, i0, i1, c, 0);
    }
}

/* The same loops compiled per ISA (optim_avx2.c, optim_avx512.c). */
void sgd_plain_loop_avx2(float *param, const float *grad, int64_t n, const sgd_coefs *c);
void sgd_momentum_loop_avx2(float *param, float *buf, const float *grad, int64_t n,
                            const sgd_coefs *c);
void adam_loop_avx2(float *param, float *m, float *v, float *vmax, const float *grad,
                    int64_t n, const adam_coefs *c);
void sgd_plain_loop_avx512(float *param, const float *grad, int64_t n, const sgd_coefs *c);
void sgd_momentum_loop_avx512(float *param, float *buf, const float *grad, int64_t n,
                              const sgd_coefs *c);
void adam_loop_avx512(float *param, float *m, float *v, float *vmax, const float *grad,
                      int64_t n, const adam_coefs *c);

#endif /* FASTCNN_OPTIM_KERNEL_H */
