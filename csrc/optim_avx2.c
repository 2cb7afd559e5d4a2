/* optim_avx2.c - csrc/optim_kernel.h's loops compiled for AVX2 (with FMA). */
#include "optim_kernel.h"

void sgd_plain_loop_avx2(float *param, const float *grad, int64_t n, const sgd_coefs *c)
{
    sgd_plain_loop(param, grad, n, c);
}

void sgd_momentum_loop_avx2(float *param, float *buf, const float *grad, int64_t n,
                            const sgd_coefs *c)
{
    sgd_momentum_loop(param, buf, grad, n, c);
}

void adam_loop_avx2(float *param, float *m, float *v, float *vmax, const float *grad,
                    int64_t n, const adam_coefs *c)
{
    adam_loop(param, m, v, vmax, grad, n, c);
}
