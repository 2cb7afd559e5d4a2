/* conv2d.c - 2-d convolution (cross-correlation, as in PyTorch), forward and
 * backward, NCHW with weights KCRS.
 *
 * Geometry: output (p, q) reads input (p sh - ph + r, q sw - pw + t) for
 * r < R, t < S; ph, pw are the top/left padding and P, Q come from the
 * caller, so bottom/right padding may differ (PyTorch's 'same' with an even
 * kernel). Any input position outside [0,H) x [0,W) reads as zero; every
 * read of x is bounds-checked, never padded in memory.
 *
 * Fast path (per image, CRS = C R S, PQ = P Q):
 *   forward          y (K, PQ)   = w (K, CRS) col (CRS, PQ) + b
 *   backward data    col         = w^T dy (K, PQ), then dx = col2im(col)
 *   backward weight  dw (K, CRS) += dy col^T,  db += row sums of dy
 * where col = im2col(x); a 1x1, stride-1, unpadded convolution uses x (C, HW)
 * itself as col. With at least as many images as threads, threads take
 * whole images (own scratch, sgemm on one thread); otherwise images run one
 * after another and sgemm uses every thread.
 */
#include <string.h>

#include "fastcnn.h"
#include "gemm.h"

/* Indices i in [0, n) with 0 <= i * stride + off < size, as [lo, hi). */
typedef struct {
    int64_t lo, hi;
} span;

static span valid_span(int64_t off, int64_t stride, int64_t size, int64_t n)
{
    span v;
    v.lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
    v.hi = size - off <= 0 ? 0 : (size - off - 1) / stride + 1;
    if (v.hi > n) v.hi = n;
    if (v.lo > v.hi) v.lo = v.hi;
    return v;
}

/* 1x1, stride 1, no padding, output as large as the input: col is x itself. */
static int pointwise(const conv2d_shape *s)
{
    return s->R == 1 && s->S == 1 && s->sh == 1 && s->sw == 1 && s->ph == 0 && s->pw == 0
        && s->P == s->H && s->Q == s->W;
}

/* ---- reference kernels: naive loops, double accumulators ---------------- */

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

/* ---- im2col / col2im ------------------------------------------------------ */

/* out (P, Q) = the input plane xc (H, W) seen through kernel tap (r, t). */
static void im2col_row(float *out, const float *xc, int64_t r, int64_t t,
                       const conv2d_shape *s)
{
    span ps = valid_span(r - s->ph, s->sh, s->H, s->P);
    span qs = valid_span(t - s->pw, s->sw, s->W, s->Q);
    if (qs.lo == qs.hi)
        ps.hi = ps.lo;  /* no tap column inside the input: the whole plane is zero */
    memset(out, 0, (size_t)(ps.lo * s->Q) * sizeof(float));
    for (int64_t p = ps.lo; p < ps.hi; p++) {
        float *o = out + p * s->Q;
        const float *xr = xc + (p * s->sh - s->ph + r) * s->W;
        int64_t v0 = qs.lo * s->sw - s->pw + t;
        for (int64_t q = 0; q < qs.lo; q++) o[q] = 0.0f;
        if (s->sw == 1)
            memcpy(o + qs.lo, xr + v0, (size_t)(qs.hi - qs.lo) * sizeof(float));
        else
            for (int64_t q = qs.lo; q < qs.hi; q++) o[q] = xr[v0 + (q - qs.lo) * s->sw];
        for (int64_t q = qs.hi; q < s->Q; q++) o[q] = 0.0f;
    }
    memset(out + ps.hi * s->Q, 0, (size_t)((s->P - ps.hi) * s->Q) * sizeof(float));
}

/* col (CRS, PQ) = im2col of one image x (C, H, W). */
static void im2col(float *col, const float *x, const conv2d_shape *s, int nthreads)
{
    int64_t rows = s->C * s->R * s->S, PQ = s->P * s->Q;
    int nt = fastcnn_threads_for(rows * PQ, nthreads);
    /* each row (c, r, t) of col is written by one iteration */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        int64_t c = row / (s->R * s->S), r = row / s->S % s->R, t = row % s->S;
        im2col_row(col + row * PQ, x + c * s->H * s->W, r, t, s);
    }
}

/* dxc (H, W) += the plane in (P, Q) scattered back through kernel tap (r, t). */
static void col2im_row(float *dxc, const float *in, int64_t r, int64_t t,
                       const conv2d_shape *s)
{
    span ps = valid_span(r - s->ph, s->sh, s->H, s->P);
    span qs = valid_span(t - s->pw, s->sw, s->W, s->Q);
    if (qs.lo == qs.hi)
        return;
    for (int64_t p = ps.lo; p < ps.hi; p++) {
        const float *i = in + p * s->Q;
        float *dr = dxc + (p * s->sh - s->ph + r) * s->W;
        int64_t v0 = qs.lo * s->sw - s->pw + t;
        for (int64_t q = qs.lo; q < qs.hi; q++) dr[v0 + (q - qs.lo) * s->sw] += i[q];
    }
}

/* dx (C, H, W) = col2im of col (CRS, PQ), one image (overwrites dx). */
static void col2im(float *dx, const float *col, const conv2d_shape *s, int nthreads)
{
    int64_t HW = s->H * s->W, PQ = s->P * s->Q, RS = s->R * s->S;
    int nt = fastcnn_threads_for(s->C * RS * PQ, nthreads);
    /* channel c owns its plane of dx and reads only its own rows of col */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t c = 0; c < s->C; c++) {
        float *dxc = dx + c * HW;
        memset(dxc, 0, (size_t)HW * sizeof(float));
        for (int64_t rt = 0; rt < RS; rt++)
            col2im_row(dxc, col + (c * RS + rt) * PQ, rt / s->S, rt % s->S, s);
    }
}

/* ---- one image ------------------------------------------------------------ */

/* y (K, PQ) = w (K, CRS) im2col(x (C, H, W)) + b; col: scratch (CRS, PQ). */
static int forward_image(float *y, const float *x, const float *w, const float *b,
                         float *col, const conv2d_shape *s, int nthreads)
{
    int64_t CRS = s->C * s->R * s->S, PQ = s->P * s->Q;
    const float *B = x;
    float beta = 0.0f;
    if (!pointwise(s)) {
        im2col(col, x, s, nthreads);
        B = col;
    }
    if (b) {
        for (int64_t k = 0; k < s->K; k++)
            for (int64_t i = 0; i < PQ; i++) y[k * PQ + i] = b[k];
        beta = 1.0f;
    }
    return sgemm(0, 0, s->K, PQ, CRS, 1.0f, w, CRS, B, PQ, beta, y, PQ, nthreads);
}

/* dx (C, H, W) = col2im(w^T (CRS, K) dy (K, PQ)); col: scratch (CRS, PQ). */
static int backward_data_image(float *dx, const float *dy, const float *w, float *col,
                               const conv2d_shape *s, int nthreads)
{
    int64_t CRS = s->C * s->R * s->S, PQ = s->P * s->Q;
    if (pointwise(s))
        return sgemm(1, 0, s->C, PQ, s->K, 1.0f, w, CRS, dy, PQ, 0.0f, dx, PQ, nthreads);
    int err = sgemm(1, 0, CRS, PQ, s->K, 1.0f, w, CRS, dy, PQ, 0.0f, col, PQ, nthreads);
    if (err)
        return err;
    col2im(dx, col, s, nthreads);
    return FASTCNN_OK;
}

/* dw (K, CRS) += dy (K, PQ) im2col(x)^T (PQ, CRS); col: scratch (CRS, PQ). */
static int backward_weight_image(float *dw, const float *dy, const float *x, float *col,
                                 const conv2d_shape *s, int nthreads)
{
    int64_t CRS = s->C * s->R * s->S, PQ = s->P * s->Q;
    const float *B = x;
    if (!pointwise(s)) {
        im2col(col, x, s, nthreads);
        B = col;
    }
    return sgemm(0, 1, s->K, CRS, PQ, 1.0f, dy, PQ, B, PQ, 1.0f, dw, CRS, nthreads);
}

/* ---- fast kernels ------------------------------------------------------------ */

/* Threads that take whole images: nthreads when every one gets an image and
 * the work is worth it, else 1 (the GEMM inside then uses the threads). */
static int image_threads(const conv2d_shape *s, int nthreads)
{
    int64_t work = 2 * s->N * s->K * s->C * s->R * s->S * s->P * s->Q;
    int nt = fastcnn_threads_for(work, nthreads);
    return nt > 1 && s->N >= nt ? nt : 1;
}

/* im2col scratch per thread, in floats (none for a pointwise convolution). */
static int64_t col_floats(const conv2d_shape *s)
{
    return pointwise(s) ? 0 : s->C * s->R * s->S * s->P * s->Q;
}

/* First image of thread t's contiguous share when nt threads split N images. */
static int64_t first_image(int64_t N, int t, int nt)
{
    return N * t / nt;
}

int conv2d_forward(float *y, const float *x, const float *w, const float *b,
                   const conv2d_shape *s, int nthreads)
{
    int nt = image_threads(s, nthreads), inner = nt > 1 ? 1 : nthreads, err = 0;
    int64_t colsz = col_floats(s), xsz = s->C * s->H * s->W, ysz = s->K * s->P * s->Q;
    float *scratch = fastcnn_alloc(nt * colsz * (int64_t)sizeof(float));
    if (!scratch)
        return FASTCNN_ENOMEM;
    /* thread t owns images [first_image(t), first_image(t+1)) of y and its scratch */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static) reduction(|:err)
    for (int t = 0; t < nt; t++)
        for (int64_t n = first_image(s->N, t, nt); n < first_image(s->N, t + 1, nt); n++)
            err |= forward_image(y + n * ysz, x + n * xsz, w, b, scratch + t * colsz, s, inner);
    fastcnn_free(scratch);
    return err ? FASTCNN_ENOMEM : FASTCNN_OK;
}

int conv2d_backward_data(float *dx, const float *dy, const float *w,
                         const conv2d_shape *s, int nthreads)
{
    int nt = image_threads(s, nthreads), inner = nt > 1 ? 1 : nthreads, err = 0;
    int64_t colsz = col_floats(s), xsz = s->C * s->H * s->W, ysz = s->K * s->P * s->Q;
    float *scratch = fastcnn_alloc(nt * colsz * (int64_t)sizeof(float));
    if (!scratch)
        return FASTCNN_ENOMEM;
    /* thread t owns images [first_image(t), first_image(t+1)) of dx and its scratch */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static) reduction(|:err)
    for (int t = 0; t < nt; t++)
        for (int64_t n = first_image(s->N, t, nt); n < first_image(s->N, t + 1, nt); n++)
            err |= backward_data_image(dx + n * xsz, dy + n * ysz, w, scratch + t * colsz, s,
                                       inner);
    fastcnn_free(scratch);
    return err ? FASTCNN_ENOMEM : FASTCNN_OK;
}

/* db (K) += sum of dy (N, K, PQ) over N and PQ. */
static void bias_grad(float *db, const float *dy, const conv2d_shape *s, int nthreads)
{
    int64_t PQ = s->P * s->Q;
    int nt = fastcnn_threads_for(s->N * s->K * PQ, nthreads);
    /* each k writes only db[k] */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t k = 0; k < s->K; k++) {
        double acc = 0.0;
        for (int64_t n = 0; n < s->N; n++)
            for (int64_t i = 0; i < PQ; i++) acc += dy[(n * s->K + k) * PQ + i];
        db[k] += (float)acc;
    }
}

/* dw (n) += the nparts partial sums stacked in parts (nparts, n). */
static void reduce_partials(float *dw, const float *parts, int nparts, int64_t n,
                            int nthreads)
{
    int nt = fastcnn_threads_for(n * nparts, nthreads);
    /* each i written once */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < nparts; j++) dw[i] += parts[j * n + i];
}

int conv2d_backward_weight(float *dw, float *db, const float *dy, const float *x,
                           const conv2d_shape *s, int nthreads)
{
    int nt = image_threads(s, nthreads), inner = nt > 1 ? 1 : nthreads, err = 0;
    int64_t colsz = col_floats(s), xsz = s->C * s->H * s->W, ysz = s->K * s->P * s->Q;
    int64_t wsz = s->K * s->C * s->R * s->S;
    /* per thread: an im2col buffer; threads t >= 1 also a partial dw */
    float *scratch = fastcnn_alloc((nt * colsz + (nt - 1) * wsz) * (int64_t)sizeof(float));
    if (!scratch)
        return FASTCNN_ENOMEM;
    float *parts = scratch + nt * colsz;
    /* thread t reads its images, writes its scratch and its own dw (0: dw itself) */
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static) reduction(|:err)
    for (int t = 0; t < nt; t++) {
        float *mine = t == 0 ? dw : parts + (t - 1) * wsz;
        if (t > 0)
            memset(mine, 0, (size_t)wsz * sizeof(float));
        for (int64_t n = first_image(s->N, t, nt); n < first_image(s->N, t + 1, nt); n++)
            err |= backward_weight_image(mine, dy + n * ysz, x + n * xsz,
                                         scratch + t * colsz, s, inner);
    }
    if (!err && nt > 1)
        reduce_partials(dw, parts, nt - 1, wsz, nthreads);
    fastcnn_free(scratch);
    if (!err && db)
        bias_grad(db, dy, s, nthreads);
    return err ? FASTCNN_ENOMEM : FASTCNN_OK;
}
