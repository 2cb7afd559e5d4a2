/* conv2d_ref.c - the conv2d family's reference kernels: naive loops with
 * double accumulators, the fallback and the test oracle of the fast paths
 * (conv2d.c). Shapes: x (N, C, H, W), w (K, C, R, S), b (K), y (N, K, P, Q);
 * output (p, q) reads input (p sh - ph + r, q sw - pw + t), zero outside. */
#include "fastcnn.h"

void conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                        const conv2d_shape *s)
{
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t k = 0; k < s->K; k++)
            for (int64_t p = 0; p < s->P; p++)
                for (int64_t q = 0; q < s->Q; q++) {
                    double acc = b ? b[k] : 0.0;
                    for (int64_t c = 0; c < s->C; c++)
                        for (int64_t r = 0; r < s->R; r++)
                            for (int64_t t = 0; t < s->S; t++) {
                                int64_t h = p * s->sh - s->ph + r, v = q * s->sw - s->pw + t;
                                if (h < 0 || h >= s->H || v < 0 || v >= s->W)
                                    continue;
                                acc += (double)w[((k * s->C + c) * s->R + r) * s->S + t]
                                     * x[((n * s->C + c) * s->H + h) * s->W + v];
                            }
                    y[((n * s->K + k) * s->P + p) * s->Q + q] = (float)acc;
                }
}

/* Gather form: dx (n, c, h, v) sums dy (n, k, p, q) w (k, c, r, t) over every
 * (p, q, r, t) with p sh - ph + r == h and q sw - pw + t == v. */
void conv2d_backward_data_ref(float *dx, const float *dy, const float *w,
                              const conv2d_shape *s)
{
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t c = 0; c < s->C; c++)
            for (int64_t h = 0; h < s->H; h++)
                for (int64_t v = 0; v < s->W; v++) {
                    double acc = 0.0;
                    for (int64_t r = 0; r < s->R; r++)
                        for (int64_t t = 0; t < s->S; t++) {
                            int64_t ps = h + s->ph - r, qs = v + s->pw - t;
                            if (ps < 0 || qs < 0 || ps % s->sh || qs % s->sw)
                                continue;
                            int64_t p = ps / s->sh, q = qs / s->sw;
                            if (p >= s->P || q >= s->Q)
                                continue;
                            for (int64_t k = 0; k < s->K; k++)
                                acc += (double)dy[((n * s->K + k) * s->P + p) * s->Q + q]
                                     * w[((k * s->C + c) * s->R + r) * s->S + t];
                        }
                    dx[((n * s->C + c) * s->H + h) * s->W + v] = (float)acc;
                }
}

void conv2d_backward_weight_ref(float *dw, float *db, const float *dy, const float *x,
                                const conv2d_shape *s)
{
    for (int64_t k = 0; k < s->K; k++)
        for (int64_t c = 0; c < s->C; c++)
            for (int64_t r = 0; r < s->R; r++)
                for (int64_t t = 0; t < s->S; t++) {
                    double acc = 0.0;
                    for (int64_t n = 0; n < s->N; n++)
                        for (int64_t p = 0; p < s->P; p++)
                            for (int64_t q = 0; q < s->Q; q++) {
                                int64_t h = p * s->sh - s->ph + r, v = q * s->sw - s->pw + t;
                                if (h < 0 || h >= s->H || v < 0 || v >= s->W)
                                    continue;
                                acc += (double)dy[((n * s->K + k) * s->P + p) * s->Q + q]
                                     * x[((n * s->C + c) * s->H + h) * s->W + v];
                            }
                    dw[((k * s->C + c) * s->R + r) * s->S + t] += (float)acc;
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
