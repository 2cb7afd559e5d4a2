/* conv2d_ref.c - the conv2d family's reference kernels: naive loops with
 * double accumulators, the fallback and the test oracle of the fast paths
 * (conv2d.c). Shapes: x (N, C, H, W), w (K, C/G, R, S), b (K), y (N, K, P, Q);
 * output (p, q) of channel k reads input (p sh - ph + r dh, q sw - pw + t dw)
 * of channels g C/G .. (g+1) C/G - 1, g = k / (K/G); zero outside. */
#include "fastcnn.h"

/* Input row (or column) of output position p through tap r, or -1 when it
 * falls in the padding (size: H or W). */
static int64_t tap_input(int64_t p, int64_t r, int64_t stride, int64_t pad, int64_t dil,
                         int64_t size)
{
    int64_t h = p * stride - pad + r * dil;
    return h < 0 || h >= size ? -1 : h;
}

void conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                        const conv2d_shape *s)
{
    int64_t Cg = s->C / s->G, Kg = s->K / s->G;
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t k = 0; k < s->K; k++)
            for (int64_t p = 0; p < s->P; p++)
                for (int64_t q = 0; q < s->Q; q++) {
                    double acc = b ? b[k] : 0.0;
                    for (int64_t c = 0; c < Cg; c++) {
                        int64_t xc = k / Kg * Cg + c;
                        for (int64_t r = 0; r < s->R; r++)
                            for (int64_t t = 0; t < s->S; t++) {
                                int64_t h = tap_input(p, r, s->sh, s->ph, s->dh, s->H);
                                int64_t v = tap_input(q, t, s->sw, s->pw, s->dw, s->W);
                                if (h < 0 || v < 0)
                                    continue;
                                acc += (double)w[((k * Cg + c) * s->R + r) * s->S + t]
                                     * x[((n * s->C + xc) * s->H + h) * s->W + v];
                            }
                    }
                    y[((n * s->K + k) * s->P + p) * s->Q + q] = (float)acc;
                }
}

/* Output position of input h through tap r, or -1 when none (size: P or Q). */
static int64_t tap_output(int64_t h, int64_t r, int64_t stride, int64_t pad, int64_t dil,
                          int64_t size)
{
    int64_t ps = h + pad - r * dil;
    if (ps < 0 || ps % stride)
        return -1;
    return ps / stride < size ? ps / stride : -1;
}

/* Gather form: dx (n, c, h, v) sums dy (n, k, p, q) w (k, c mod C/G, r, t)
 * over k in c's group and every (p, q, r, t) with p sh - ph + r dh == h and
 * q sw - pw + t dw == v. */
void conv2d_backward_data_ref(float *dx, const float *dy, const float *w,
                              const conv2d_shape *s)
{
    int64_t Cg = s->C / s->G, Kg = s->K / s->G;
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t c = 0; c < s->C; c++)
            for (int64_t h = 0; h < s->H; h++)
                for (int64_t v = 0; v < s->W; v++) {
                    double acc = 0.0;
                    for (int64_t r = 0; r < s->R; r++)
                        for (int64_t t = 0; t < s->S; t++) {
                            int64_t p = tap_output(h, r, s->sh, s->ph, s->dh, s->P);
                            int64_t q = tap_output(v, t, s->sw, s->pw, s->dw, s->Q);
                            if (p < 0 || q < 0)
                                continue;
                            for (int64_t k = c / Cg * Kg; k < (c / Cg + 1) * Kg; k++)
                                acc += (double)dy[((n * s->K + k) * s->P + p) * s->Q + q]
                                     * w[((k * Cg + c % Cg) * s->R + r) * s->S + t];
                        }
                    dx[((n * s->C + c) * s->H + h) * s->W + v] = (float)acc;
                }
}

void conv2d_backward_weight_ref(float *dw, float *db, const float *dy, const float *x,
                                const conv2d_shape *s)
{
    int64_t Cg = s->C / s->G, Kg = s->K / s->G;
    for (int64_t k = 0; k < s->K; k++)
        for (int64_t c = 0; c < Cg; c++)
            for (int64_t r = 0; r < s->R; r++)
                for (int64_t t = 0; t < s->S; t++) {
                    int64_t xc = k / Kg * Cg + c;
                    double acc = 0.0;
                    for (int64_t n = 0; n < s->N; n++)
                        for (int64_t p = 0; p < s->P; p++)
                            for (int64_t q = 0; q < s->Q; q++) {
                                int64_t h = tap_input(p, r, s->sh, s->ph, s->dh, s->H);
                                int64_t v = tap_input(q, t, s->sw, s->pw, s->dw, s->W);
                                if (h < 0 || v < 0)
                                    continue;
                                acc += (double)dy[((n * s->K + k) * s->P + p) * s->Q + q]
                                     * x[((n * s->C + xc) * s->H + h) * s->W + v];
                            }
                    dw[((k * Cg + c) * s->R + r) * s->S + t] += (float)acc;
                }
    if (!db)
        return;
    for (int64_t k = 0; k < s->K; k++) {
        double acc = 0.0;
        for (int64_t n = 0; n < s->N; n++)
            for (int64_t i = 0; i < s->P * s->Q; i++)
                acc += dy[(n * s->K + k) * s->P * s->Q + i];
        db[k] += (float)acc;
    }
}
