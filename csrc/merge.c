/* merge.c - merges of branches: the element-wise y = a + b and y = a * b
 * (same shapes, and numpy broadcasting with the reduction of the gradient to
 * each input's shape), the concatenation of tensors along a dim, and the
 * gradient accumulation y += x of a tensor read by several ops. Every loop
 * runs on fastcnn's pool (pool.c), as the convolutions between them do. */
#include <stdlib.h>
#include <string.h>

#include "fastcnn.h"

void add_forward_ref(float *y, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

void add_accumulate_ref(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

void mul_forward_ref(float *y, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] * b[i];
}

#define ELEMENT_SPAN 16384   /* elements of one work item of add / mul */

typedef struct {
    float *y;
    const float *a, *b;
} element_call;

/* y[i] = a[i] + b[i] for i in [lo, hi); y may be a or b. */
static void add_span(void *ctx, int64_t lo, int64_t hi)
{
    const element_call *e = ctx;
    float *y = e->y;
    const float *a = e->a, *b = e->b;
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++)
        y[i] = a[i] + b[i];
}

static void mul_span(void *ctx, int64_t lo, int64_t hi)
{
    const element_call *e = ctx;
    float *y = e->y;
    const float *a = e->a, *b = e->b;
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++)
        y[i] = a[i] * b[i];
}

/* y may be a or b (in place) */
void add_forward(float *y, const float *a, const float *b, int64_t n, int nthreads)
{
    element_call e = {y, a, b};
    /* each span writes its own elements */
    fastcnn_parallel_spans(n, ELEMENT_SPAN, add_span, &e, fastcnn_threads_for(n, nthreads));
}

void add_accumulate(float *y, const float *x, int64_t n, int nthreads)
{
    add_forward(y, y, x, n, nthreads);
}

/* y[lo, hi) = x[lo, hi), for fastcnn_parallel_spans. */
static void copy_span(void *ctx, int64_t lo, int64_t hi)
{
    const element_call *e = ctx;
    memcpy(e->y + lo, e->a + lo, (size_t)(hi - lo) * sizeof(float));
}

void copy_floats(float *y, const float *x, int64_t n, int nthreads)
{
    element_call e = {y, x, NULL};
    /* each span writes its own elements */
    fastcnn_parallel_spans(n, ELEMENT_SPAN, copy_span, &e, fastcnn_threads_for(n, nthreads));
}

/* y may be a or b (in place) */
void mul_forward(float *y, const float *a, const float *b, int64_t n, int nthreads)
{
    element_call e = {y, a, b};
    /* each span writes its own elements */
    fastcnn_parallel_spans(n, ELEMENT_SPAN, mul_span, &e, fastcnn_threads_for(n, nthreads));
}

/* ---- broadcasting merges ----------------------------------------------------
 * y (s->n[0], ..., s->n[ndim-1]) is C-contiguous; a and b are read at the
 * element strides s->sa, s->sb (0 along the dims they broadcast over). The
 * binding collapses dims first, so the last dim's strides are 0 or 1. */

#define MERGE_CHUNK 16384   /* elements of one row handled as one work item */

/* Offsets in a and b of the start of row r (dims 0..ndim-2). */
static void row_offsets(const merge_shape *s, int64_t r, int64_t *oa, int64_t *ob)
{
    int64_t a = 0, b = 0;
    for (int d = s->ndim - 2; d >= 0; d--) {
        int64_t i = r % s->n[d];
        r /= s->n[d];
        a += i * s->sa[d];
        b += i * s->sb[d];
    }
    *oa = a;
    *ob = b;
}

/* y[j] = a[j * ia] op b[j * ib] for j in [0, n); ia, ib are 0 or 1. */
static void merge_row(float *y, const float *a, const float *b, int64_t n, int64_t ia,
                      int64_t ib, int mul)
{
    if (ia && ib) {
        if (mul) { for (int64_t j = 0; j < n; j++) y[j] = a[j] * b[j]; }
        else     { for (int64_t j = 0; j < n; j++) y[j] = a[j] + b[j]; }
    } else if (ib) {
        float v = a[0];
        if (mul) { for (int64_t j = 0; j < n; j++) y[j] = v * b[j]; }
        else     { for (int64_t j = 0; j < n; j++) y[j] = v + b[j]; }
    } else if (ia) {
        float v = b[0];
        if (mul) { for (int64_t j = 0; j < n; j++) y[j] = a[j] * v; }
        else     { for (int64_t j = 0; j < n; j++) y[j] = a[j] + v; }
    } else {
        float v = mul ? a[0] * b[0] : a[0] + b[0];
        for (int64_t j = 0; j < n; j++) y[j] = v;
    }
}

/* One broadcasting merge, for fastcnn_parallel_for: rows of inner
 * elements, each cut into chunks of MERGE_CHUNK. */
typedef struct {
    float *y;
    const float *a, *b;
    const merge_shape *s;
    int64_t inner, chunks;
    int mul;
} broadcast_call;

/* Work item `item`: its chunk of one row of y. */
static void broadcast_item(void *ctx, int64_t item, int slot)
{
    const broadcast_call *c = ctx;
    const merge_shape *s = c->s;
    int last = s->ndim - 1;
    int64_t r = item / c->chunks, j0 = (item % c->chunks) * MERGE_CHUNK;
    int64_t n = c->inner - j0 < MERGE_CHUNK ? c->inner - j0 : MERGE_CHUNK;
    int64_t oa, ob;
    (void)slot;
    row_offsets(s, r, &oa, &ob);
    merge_row(c->y + r * c->inner + j0, c->a + oa + j0 * s->sa[last],
              c->b + ob + j0 * s->sb[last], n, s->sa[last], s->sb[last], c->mul);
}

static void merge_broadcast(float *y, const float *a, const float *b, const merge_shape *s,
                            int mul, int nthreads)
{
    int last = s->ndim - 1;
    int64_t inner = s->n[last], rows = 1;
    for (int d = 0; d < last; d++)
        rows *= s->n[d];
    broadcast_call c = {y, a, b, s, inner, (inner + MERGE_CHUNK - 1) / MERGE_CHUNK, mul};
    /* each work item writes its own part of one row of y */
    fastcnn_parallel_for(rows * c.chunks, broadcast_item, &c,
                         fastcnn_threads_for(rows * inner, nthreads));
}

void add_broadcast(float *y, const float *a, const float *b, const merge_shape *s, int nthreads)
{
    merge_broadcast(y, a, b, s, 0, nthreads);
}

void mul_broadcast(float *y, const float *a, const float *b, const merge_shape *s, int nthreads)
{
    merge_broadcast(y, a, b, s, 1, nthreads);
}

/* Offset of element i (C order) of a y-shaped array read at strides st. */
static int64_t strided_offset(const merge_shape *s, const int64_t *st, int64_t i)
{
    int64_t o = 0;
    for (int d = s->ndim - 1; d >= 0; d--) {
        o += (i % s->n[d]) * st[d];
        i /= s->n[d];
    }
    return o;
}

void add_broadcast_ref(float *y, const float *a, const float *b, const merge_shape *s)
{
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++)
        n *= s->n[d];
    for (int64_t i = 0; i < n; i++)
        y[i] = a[strided_offset(s, s->sa, i)] + b[strided_offset(s, s->sb, i)];
}

void mul_broadcast_ref(float *y, const float *a, const float *b, const merge_shape *s)
{
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++)
        n *= s->n[d];
    for (int64_t i = 0; i < n; i++)
        y[i] = a[strided_offset(s, s->sa, i)] * b[strided_offset(s, s->sb, i)];
}

/* ---- the broadcast backward: reduce a y-shaped gradient to an input --------
 * dx (the input read at strides sx over y's dims: 0 along the broadcast
 * dims, its contiguous strides along the others) = the sum over the
 * broadcast dims of dy * other (other read at strides so; NULL: 1). */

/* dy's and other's offsets of element i of the sub-space of the dims with
 * keep[d] set (C order over those dims). */
static void sub_offsets(const merge_shape *s, const int64_t *so, const int *keep, int want,
                        int64_t i, int64_t *oy, int64_t *oo)
{
    int64_t y = 0, o = 0, stride = 1;
    for (int d = s->ndim - 1; d >= 0; d--) {
        if (keep[d] == want) {
            int64_t k = i % s->n[d];
            i /= s->n[d];
            y += k * stride;
            o += k * so[d];
        }
        stride *= s->n[d];
    }
    *oy = y;
    *oo = o;
}

/* sum of g[q] * v[q * inc] (v NULL: 1) for q in [0, n); inc is 0 or 1. Float
 * partial sums over one row (vectorised); the caller adds rows in double. */
static double row_dot(const float *g, const float *v, int64_t n, int64_t inc)
{
    float part = 0.0f;
    if (v && inc) {
        #pragma omp simd reduction(+:part)
        for (int64_t q = 0; q < n; q++)
            part += g[q] * v[q];
        return part;
    }
    #pragma omp simd reduction(+:part)
    for (int64_t q = 0; q < n; q++)
        part += g[q];
    return v ? (double)part * v[0] : part;
}

/* out[q] (+)= g[q] * v[q * inc] (v NULL: 1) for q in [0, n); add: accumulate, else assign. */
static void row_add(float *out, const float *g, const float *v, int64_t n, int64_t inc, int add)
{
    float c = v && !inc ? v[0] : 1.0f;
    if (v && inc) {
        if (add) { for (int64_t q = 0; q < n; q++) out[q] += g[q] * v[q]; }
        else     { for (int64_t q = 0; q < n; q++) out[q] = g[q] * v[q]; }
    } else {
        if (add) { for (int64_t q = 0; q < n; q++) out[q] += g[q] * c; }
        else     { for (int64_t q = 0; q < n; q++) out[q] = g[q] * c; }
    }
}

/* One reduction of a merge's gradient, for fastcnn_parallel_for: dx has
 * m elements, each a sum over `reduced` elements of dy (times other's). */
typedef struct {
    float *dx;
    const float *dy, *other;
    const merge_shape *s;
    const int64_t *so;
    const int *keep;
    int64_t inner, oinc, reduced;
} reduce_call;

/* The last dim reduced: dx element j, a sum of row dots over the reduced dims. */
static void reduce_element(void *ctx, int64_t j, int slot)
{
    const reduce_call *c = ctx;
    int64_t ky, ko;
    double sum = 0.0;
    (void)slot;
    sub_offsets(c->s, c->so, c->keep, 1, j, &ky, &ko);
    for (int64_t r = 0; r < c->reduced / c->inner; r++) {
        int64_t ry, ro;
        sub_offsets(c->s, c->so, c->keep, 0, r * c->inner, &ry, &ro);
        sum += row_dot(c->dy + ky + ry, c->other ? c->other + ko + ro : NULL, c->inner, c->oinc);
    }
    c->dx[j] = (float)sum;
}

/* The last dim kept: dx row k, a sum of dy rows over the reduced dims. */
static void reduce_row(void *ctx, int64_t k, int slot)
{
    const reduce_call *c = ctx;
    float *out = c->dx + k * c->inner;
    int64_t ky, ko;
    (void)slot;
    sub_offsets(c->s, c->so, c->keep, 1, k * c->inner, &ky, &ko);
    for (int64_t r = 0; r < c->reduced; r++) {
        int64_t ry, ro;
        sub_offsets(c->s, c->so, c->keep, 0, r, &ry, &ro);
        row_add(out, c->dy + ky + ry, c->other ? c->other + ko + ro : NULL, c->inner, c->oinc,
                r > 0);
    }
}

void merge_reduce(float *dx, const float *dy, const float *other, const merge_shape *s,
                  const int64_t *sx, const int64_t *so, int nthreads)
{
    int keep[MERGE_MAX_DIMS], last = s->ndim - 1;
    int64_t m = 1, total = 1;
    for (int d = 0; d < s->ndim; d++) {
        keep[d] = sx[d] != 0;
        m *= keep[d] ? s->n[d] : 1;
        total *= s->n[d];
    }
    reduce_call c = {dx, dy, other, s, so, keep, s->n[last], other ? so[last] : 0, total / m};
    int nt = fastcnn_threads_for(total, nthreads);
    /* each element (last dim reduced) or row (kept) of dx written by one work item */
    if (!keep[last])
        fastcnn_parallel_for(m, reduce_element, &c, nt);
    else
        fastcnn_parallel_for(m / c.inner, reduce_row, &c, nt);
}

void merge_reduce_ref(float *dx, const float *dy, const float *other, const merge_shape *s,
                      const int64_t *sx, const int64_t *so)
{
    int64_t total = 1, m = 1;
    for (int d = 0; d < s->ndim; d++) {
        total *= s->n[d];
        m *= sx[d] ? s->n[d] : 1;
    }
    double *acc = calloc((size_t)m, sizeof(double));
    if (!acc)
        return;
    for (int64_t i = 0; i < total; i++)
        acc[strided_offset(s, sx, i)] += (double)dy[i] *
                                         (other ? other[strided_offset(s, so, i)] : 1.0f);
    for (int64_t j = 0; j < m; j++)
        dx[j] = (float)acc[j];
    free(acc);
}

/* ---- concatenation ----------------------------------------------------------
 * y (outer, sum of width[i]) = the rows of xs[i] (outer, width[i]) side by
 * side: a concatenation along one dim, with outer the product of the dims
 * before it and width[i] the input's extent along it times the dims after. */
/* One concatenation or its gradient, for fastcnn_parallel_for: work item
 * (row r, input i). */
typedef struct {
    float *y;                       /* forward: y; backward: NULL */
    const float *const *xs;
    float *const *dxs;              /* backward: dxs; forward: NULL */
    const float *dy;
    const int64_t *width;
    int64_t total;
    int k;
} cat_call;

/* Item r k + i: row r of input i, copied to (forward) or from (backward)
 * its piece of row r of y or dy; a NULL dxs[i] is skipped. */
static void cat_item(void *ctx, int64_t item, int slot)
{
    const cat_call *c = ctx;
    int64_t r = item / c->k, at = 0;
    int i = (int)(item % c->k);
    (void)slot;
    for (int q = 0; q < i; q++)
        at += c->width[q];
    size_t bytes = (size_t)c->width[i] * sizeof(float);
    if (c->y)
        memcpy(c->y + r * c->total + at, c->xs[i] + r * c->width[i], bytes);
    else if (c->dxs[i])
        memcpy(c->dxs[i] + r * c->width[i], c->dy + r * c->total + at, bytes);
}

static int64_t widths_total(const int64_t *width, int k)
{
    int64_t total = 0;
    for (int i = 0; i < k; i++)
        total += width[i];
    return total;
}

void cat_forward(float *y, const float *const *xs, const int64_t *width, int k, int64_t outer,
                 int nthreads)
{
    cat_call c = {y, xs, NULL, NULL, width, widths_total(width, k), k};
    /* each (row, input) pair writes its own piece of y */
    fastcnn_parallel_for(outer * k, cat_item, &c, fastcnn_threads_for(outer * c.total, nthreads));
}

/* dxs[i] (outer, width[i]) = its piece of dy (outer, sum of width); a NULL dxs[i] is skipped. */
void cat_backward(float *const *dxs, const float *dy, const int64_t *width, int k, int64_t outer,
                  int nthreads)
{
    cat_call c = {NULL, NULL, dxs, dy, width, widths_total(width, k), k};
    /* each (row, input) pair writes its own row of one dxs[i] */
    fastcnn_parallel_for(outer * k, cat_item, &c, fastcnn_threads_for(outer * c.total, nthreads));
}
