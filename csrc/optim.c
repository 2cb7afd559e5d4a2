/* optim.c - fused torch.optim SGD and Adam/AdamW steps, in place.
 * Every buffer is (n). The float32 coefficients are derived here once per
 * step, in double, as torch derives them from Python floats; the element
 * loops live in optim_kernel.h (compiled per ISA), run on spans of
 * OPTIM_SPAN elements by the worker threads (pool.c). The _ref twins are plain
 * loops that follow torch's single-tensor code op by op. */
#include <math.h>
#include <string.h>

#include "dispatch.h"
#include "fastcnn.h"
#include "optim_kernel.h"

/* The optim family's loops of one instruction set (optim_kernel.h). */
typedef struct {
    void (*sgd_plain)(float *param, const float *grad, int64_t n, const sgd_coefs *c);
    void (*sgd_momentum)(float *param, float *buf, const float *grad, int64_t n,
                         const sgd_coefs *c);
    void (*adam)(float *param, float *m, float *v, float *vmax, const float *grad, int64_t n,
                 const adam_coefs *c);
} optim_kernels;

static void sgd_plain_loop_generic(float *param, const float *grad, int64_t n,
                                   const sgd_coefs *c)
{
    sgd_plain_loop(param, grad, n, c);
}

static void sgd_momentum_loop_generic(float *param, float *buf, const float *grad, int64_t n,
                                      const sgd_coefs *c)
{
    sgd_momentum_loop(param, buf, grad, n, c);
}

static void adam_loop_generic(float *param, float *m, float *v, float *vmax, const float *grad,
                              int64_t n, const adam_coefs *c)
{
    adam_loop(param, m, v, vmax, grad, n, c);
}

static const optim_kernels optim_kernels_generic = {
    sgd_plain_loop_generic, sgd_momentum_loop_generic, adam_loop_generic};
#ifdef FASTCNN_X86_KERNELS
static const optim_kernels optim_kernels_avx2 = {
    sgd_plain_loop_avx2, sgd_momentum_loop_avx2, adam_loop_avx2};
static const optim_kernels optim_kernels_avx512 = {
    sgd_plain_loop_avx512, sgd_momentum_loop_avx512, adam_loop_avx512};
#endif

static const optim_kernels *optim_kernels_for(int isa)
{
    return FASTCNN_KERNELS_FOR(isa, optim_kernels);
}

static sgd_coefs make_sgd_coefs(double lr, double momentum, double dampening,
                                double weight_decay, int nesterov, int maximize, int first_step)
{
    sgd_coefs k;
    k.neg_lr = (float)(-lr);
    k.wd = (float)weight_decay;
    k.momentum = (float)momentum;
    k.one_minus_dampening = (float)(1.0 - dampening);
    k.has_wd = weight_decay != 0.0;
    k.nesterov = nesterov != 0;
    k.first_step = first_step != 0;
    k.maximize = maximize != 0;
    return k;
}

/* torch: bias_correction = 1 - beta**step, step_size = lr / bias_correction1,
 * bias_correction2_sqrt = bias_correction2**0.5, all in double. */
static adam_coefs make_adam_coefs(double lr, double beta1, double beta2, double eps,
                                  double weight_decay, int decoupled, int maximize, int64_t step)
{
    adam_coefs k;
    double bc1 = 1.0 - pow(beta1, (double)step);
    double bc2 = 1.0 - pow(beta2, (double)step);
    k.wd = (float)weight_decay;
    k.decay = weight_decay != 0.0 && decoupled ? (float)(1.0 - lr * weight_decay) : 1.0f;
    k.l2 = weight_decay != 0.0 && !decoupled;
    k.w1 = (float)(1.0 - beta1);
    k.one_minus_w1 = 1.0f - k.w1;
    k.small_w1 = fabsf(k.w1) < 0.5f;
    k.beta2 = (float)beta2;
    k.one_minus_beta2 = (float)(1.0 - beta2);
    k.bc2_sqrt = (float)pow(bc2, 0.5);
    k.eps = (float)eps;
    k.neg_step_size = (float)(-(lr / bc1));
    k.sign = maximize ? -1.0f : 1.0f;
    return k;
}

#define OPTIM_SPAN 16384    /* elements of one work item (a multiple of ADAM_BLOCK) */

/* One step's update, for fastcnn_parallel_spans. */
typedef struct {
    const optim_kernels *kr;
    float *param, *buf, *m, *v, *vmax;  /* buf: SGD's momentum (NULL: none); m, v, vmax: Adam's */
    const float *grad;
    const sgd_coefs *sgd;               /* NULL: Adam */
    const adam_coefs *adam;
} optim_call;

/* Elements [lo, hi) of the update. */
static void optim_span(void *ctx, int64_t lo, int64_t hi)
{
    const optim_call *o = ctx;
    int64_t n = hi - lo;
    if (o->adam)
        o->kr->adam(o->param + lo, o->m + lo, o->v + lo, o->vmax ? o->vmax + lo : NULL,
                    o->grad + lo, n, o->adam);
    else if (o->buf)
        o->kr->sgd_momentum(o->param + lo, o->buf + lo, o->grad + lo, n, o->sgd);
    else
        o->kr->sgd_plain(o->param + lo, o->grad + lo, n, o->sgd);
}

void sgd_step(float *param, float *buf, const float *grad, int64_t n, double lr,
              double momentum, double dampening, double weight_decay, int nesterov,
              int maximize, int first_step, int nthreads)
{
    sgd_coefs k = make_sgd_coefs(lr, momentum, dampening, weight_decay, nesterov, maximize,
                                 first_step);
    optim_call o = {optim_kernels_for(fastcnn_isa()), param, momentum == 0.0 ? NULL : buf,
                    NULL, NULL, NULL, grad, &k, NULL};
    /* each span writes its own elements */
    fastcnn_parallel_spans(n, OPTIM_SPAN, optim_span, &o, fastcnn_threads_for(n, nthreads));
}

void adam_step(float *param, float *exp_avg, float *exp_avg_sq, float *max_exp_avg_sq,
               const float *grad, int64_t n, double lr, double beta1, double beta2,
               double eps, double weight_decay, int decoupled, int maximize, int64_t step,
               int nthreads)
{
    adam_coefs k = make_adam_coefs(lr, beta1, beta2, eps, weight_decay, decoupled, maximize,
                                   step);
    optim_call o = {optim_kernels_for(fastcnn_isa()), param, NULL, exp_avg, exp_avg_sq,
                    max_exp_avg_sq, grad, NULL, &k};
    /* each span writes its own elements */
    fastcnn_parallel_spans(n, OPTIM_SPAN, optim_span, &o, fastcnn_threads_for(n, nthreads));
}

/* grad[lo, hi) = 0, for fastcnn_parallel_spans. */
static void zero_span(void *ctx, int64_t lo, int64_t hi)
{
    memset((float *)ctx + lo, 0, (size_t)(hi - lo) * sizeof(float));
}

void zero_grad(float *grad, int64_t n, int nthreads)
{
    /* each span writes its own elements */
    fastcnn_parallel_spans(n, OPTIM_SPAN, zero_span, grad, fastcnn_threads_for(n, nthreads));
}

void sgd_step_ref(float *param, float *buf, const float *grad, int64_t n, double lr,
                  double momentum, double dampening, double weight_decay, int nesterov,
                  int maximize, int first_step)
{
    sgd_coefs k = make_sgd_coefs(lr, momentum, dampening, weight_decay, nesterov, maximize,
                                 first_step);
    for (int64_t i = 0; i < n; i++) {
        float d = maximize ? -grad[i] : grad[i];
        if (weight_decay != 0.0)
            d = fmaf(param[i], k.wd, d);                  /* grad.add(param, alpha=wd) */
        if (momentum != 0.0) {
            if (first_step) {
                buf[i] = d;                               /* buf = grad.clone() */
            } else {
                float b = buf[i] * k.momentum;            /* buf.mul_(momentum) */
                buf[i] = fmaf(d, k.one_minus_dampening, b);  /* .add_(grad, alpha=1-damp) */
            }
            d = nesterov ? fmaf(buf[i], k.momentum, d) : buf[i];
        }
        param[i] = fmaf(d, k.neg_lr, param[i]);           /* param.add_(grad, alpha=-lr) */
    }
}

void adam_step_ref(float *param, float *exp_avg, float *exp_avg_sq, float *max_exp_avg_sq,
                   const float *grad, int64_t n, double lr, double beta1, double beta2,
                   double eps, double weight_decay, int decoupled, int maximize,
                   int64_t step)
{
    adam_coefs k = make_adam_coefs(lr, beta1, beta2, eps, weight_decay, decoupled, maximize,
                                   step);
    for (int64_t i = 0; i < n; i++) {
        float g = maximize ? -grad[i] : grad[i];
        if (weight_decay != 0.0) {
            if (decoupled)
                param[i] *= k.decay;                      /* param.mul_(1 - lr*wd) */
            else
                g = fmaf(param[i], k.wd, g);              /* grad.add(param, alpha=wd) */
        }
        float diff = g - exp_avg[i];                      /* exp_avg.lerp_(grad, 1-beta1) */
        if (k.small_w1)
            exp_avg[i] = fmaf(k.w1, diff, exp_avg[i]);
        else
            exp_avg[i] = fmaf(-k.one_minus_w1, diff, g);
        float v = exp_avg_sq[i] * k.beta2;                /* exp_avg_sq.mul_(beta2) */
        v = fmaf(k.one_minus_beta2 * g, g, v);            /* .addcmul_(g, g, value=1-beta2) */
        exp_avg_sq[i] = v;
        if (max_exp_avg_sq != NULL) {                     /* torch.maximum(max, v, out=max) */
            float x = max_exp_avg_sq[i];
            if (!(x >= v || isnan(x)))
                max_exp_avg_sq[i] = v;
            v = max_exp_avg_sq[i];
        }
        float denom = sqrtf(v) / k.bc2_sqrt + k.eps;      /* (v.sqrt() / bc2_sqrt).add_(eps) */
        param[i] = param[i] + (k.neg_step_size * exp_avg[i]) / denom;  /* addcdiv_ */
    }
}
