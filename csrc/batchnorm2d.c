/* batchnorm2d.c - batch normalization over NCHW images, per channel.
 * x, y, dx, dy: (N, C, HW); mean, var, invstd, gamma, beta, dgamma, dbeta: (C).
 * Training normalizes with the batch's statistics (biased variance, summed in
 * double); inference with given ones. gamma and beta may be NULL (1 and 0);
 * y may be NULL in training (the statistics only). */
#include <math.h>

#include "fastcnn.h"

/* threads for a per-channel loop: by the work, at most one per channel */
static int channel_threads(int64_t N, int64_t C, int64_t HW, int nthreads)
{
    int nt = fastcnn_threads_for(N * C * HW, nthreads);
    return nt > C ? (int)C : nt;
}

/* LANES independent double partial sums: a single running sum is a chain of
 * dependent additions (4 cycles each), several times slower than memory */
#define LANES 8

/* sum of x[0..n) */
static double sum_f64(const float *x, int64_t n)
{
    double acc[LANES] = {0.0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++)
            acc[j] += x[i + j];
    for (; i < n; i++)
        acc[0] += x[i];
    double s = 0.0;
    for (int j = 0; j < LANES; j++)
        s += acc[j];
    return s;
}

/* sum of (x[i] - m)^2 over x[0..n) */
static double sum_sq_dev_f64(const float *x, int64_t n, double m)
{
    double acc[LANES] = {0.0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            double d = x[i + j] - m;
            acc[j] += d * d;
        }
    for (; i < n; i++) {
        double d = x[i] - m;
        acc[0] += d * d;
    }
    double s = 0.0;
    for (int j = 0; j < LANES; j++)
        s += acc[j];
    return s;
}

/* *sdy += sum dy[i], *sdyx += sum dy[i] * (x[i] - m) * is over [0..n), in double
 * (sum dy cancels: float partial sums would lose digits), vector lanes */
static void grad_sums_f64(double *sdy, double *sdyx, const float *dy, const float *x, int64_t n,
                          float m, float is)
{
    double a = 0.0, b = 0.0;
    #pragma omp simd reduction(+:a, b)
    for (int64_t i = 0; i < n; i++) {
        a += dy[i];
        b += (double)dy[i] * ((x[i] - m) * is);
    }
    *sdy += a;
    *sdyx += b;
}

static void channel_stats(double *mean, double *var, const float *x, int64_t N, int64_t C,
                          int64_t HW, int64_t c)
{
    double s = 0.0, ss = 0.0, m;
    for (int64_t n = 0; n < N; n++)
        s += sum_f64(x + (n * C + c) * HW, HW);
    m = s / (double)(N * HW);
    for (int64_t n = 0; n < N; n++)
        ss += sum_sq_dev_f64(x + (n * C + c) * HW, HW, m);
    *mean = m;
    *var = ss / (double)(N * HW);
}

static void normalize_channel(float *y, const float *x, int64_t N, int64_t C, int64_t HW,
                              int64_t c, float mean, float invstd, float g, float b)
{
    float scale = invstd * g, shift = b - mean * scale;
    for (int64_t n = 0; n < N; n++) {
        const float *xc = x + (n * C + c) * HW;
        float *yc = y + (n * C + c) * HW;
        #pragma omp simd
        for (int64_t i = 0; i < HW; i++)
            yc[i] = xc[i] * scale + shift;
    }
}

void batchnorm2d_forward_train(float *y, float *mean, float *var, float *invstd, const float *x,
                               const float *gamma, const float *beta, int64_t N, int64_t C,
                               int64_t HW, double eps, int nthreads)
{
    int nt = channel_threads(N, C, HW, nthreads);
    /* each channel's statistics and outputs written by one thread */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t c = 0; c < C; c++) {
        double m, v;
        channel_stats(&m, &v, x, N, C, HW, c);
        mean[c] = (float)m;
        var[c] = (float)v;
        invstd[c] = (float)(1.0 / sqrt(v + eps));
        if (y)
            normalize_channel(y, x, N, C, HW, c, mean[c], invstd[c], gamma ? gamma[c] : 1.0f,
                              beta ? beta[c] : 0.0f);
    }
}

void batchnorm2d_forward_eval(float *y, const float *x, const float *mean, const float *var,
                              const float *gamma, const float *beta, int64_t N, int64_t C,
                              int64_t HW, double eps, int nthreads)
{
    int nt = channel_threads(N, C, HW, nthreads);
    /* each channel written by one thread */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t c = 0; c < C; c++)
        normalize_channel(y, x, N, C, HW, c, mean[c], (float)(1.0 / sqrt((double)var[c] + eps)),
                          gamma ? gamma[c] : 1.0f, beta ? beta[c] : 0.0f);
}

void batchnorm2d_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                          const float *x, const float *mean, const float *invstd,
                          const float *gamma, int64_t N, int64_t C, int64_t HW, int nthreads)
{
    int nt = channel_threads(N, C, HW, nthreads);
    double cnt = (double)(N * HW);
    /* each channel's sums and gradients written by one thread */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t c = 0; c < C; c++) {
        double sdy = 0.0, sdyx = 0.0;
        float m = mean[c], is = invstd[c];
        for (int64_t n = 0; n < N; n++)
            grad_sums_f64(&sdy, &sdyx, dy + (n * C + c) * HW, x + (n * C + c) * HW, HW, m, is);
        if (dgamma)
            dgamma[c] += (float)sdyx;
        if (dbeta)
            dbeta[c] += (float)sdy;
        if (!dx)
            continue;
        float k = (gamma ? gamma[c] : 1.0f) * is;
        float a = (float)(sdy / cnt), b = (float)(sdyx / cnt);
        for (int64_t n = 0; n < N; n++) {
            const float *xc = x + (n * C + c) * HW, *dyc = dy + (n * C + c) * HW;
            float *dxc = dx + (n * C + c) * HW;
            #pragma omp simd
            for (int64_t i = 0; i < HW; i++)
                dxc[i] = k * (dyc[i] - a - (xc[i] - m) * is * b);
        }
    }
}

void batchnorm2d_update_running(float *running_mean, float *running_var, const float *mean,
                                const float *var, int64_t C, int64_t count, double momentum)
{
    double unbias = count > 1 ? (double)count / (double)(count - 1) : 1.0;
    for (int64_t c = 0; c < C; c++) {
        running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mean[c]);
        running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * var[c] * unbias);
    }
}

/* Batch norm (eval) folded into the convolution before it: with
 * s = gamma / sqrt(var + eps), wf (K, CRS) = w * s[k] and
 * bf (K) = (b - mean) * s + beta. b, gamma, beta may be NULL (0, 1, 0). */
void batchnorm2d_fold(float *wf, float *bf, const float *w, const float *b, const float *gamma,
                      const float *beta, const float *mean, const float *var, int64_t K,
                      int64_t CRS, double eps, int nthreads)
{
    int nt = fastcnn_threads_for(K * CRS, nthreads);
    /* each output channel's weights written by one thread */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t k = 0; k < K; k++) {
        double s = (gamma ? gamma[k] : 1.0) / sqrt((double)var[k] + eps);
        float sf = (float)s;
        for (int64_t j = 0; j < CRS; j++)
            wf[k * CRS + j] = w[k * CRS + j] * sf;
        bf[k] = (float)(((b ? b[k] : 0.0) - mean[k]) * s + (beta ? beta[k] : 0.0));
    }
}
