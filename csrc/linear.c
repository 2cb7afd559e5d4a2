/* linear.c - fully connected layer, forward and backward.
 *
 * x (N,F), w (O,F) as in PyTorch, b (O), y (N,O). The matrix products go to
 * sgemm (row-major); only the bias add and the bias gradient live here. */
#include <stddef.h>

#include "dispatch.h"
#include "fastcnn.h"
#include "gemm.h"
#include "linear_kernel.h"

/* Columns of dy summed together by one thread in linear_backward: a block
 * of accumulators that stays in registers / L1 while the rows stream by. */
#define DB_BLOCK 64

void linear_forward_ref(float *y, const float *x, const float *w, const float *b,
                        int64_t N, int64_t F, int64_t O)
{
    for (int64_t i = 0; i < N; i++)
        for (int64_t o = 0; o < O; o++) {
            double acc = b ? (double)b[o] : 0.0;
            for (int64_t f = 0; f < F; f++)
                acc += (double)x[i * F + f] * w[o * F + f];
            y[i * O + o] = (float)acc;
        }
}

void linear_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                         const float *w, int64_t N, int64_t F, int64_t O)
{
    if (dx)
        for (int64_t i = 0; i < N; i++)
            for (int64_t f = 0; f < F; f++) {
                double acc = 0.0;
                for (int64_t o = 0; o < O; o++)
                    acc += (double)dy[i * O + o] * w[o * F + f];
                dx[i * F + f] = (float)acc;
            }
    for (int64_t o = 0; o < O; o++)
        for (int64_t f = 0; f < F; f++) {
            double acc = 0.0;
            for (int64_t i = 0; i < N; i++)
                acc += (double)dy[i * O + o] * x[i * F + f];
            dw[o * F + f] += (float)acc;
        }
    if (db)
        for (int64_t o = 0; o < O; o++) {
            double acc = 0.0;
            for (int64_t i = 0; i < N; i++)
                acc += dy[i * O + o];
            db[o] += (float)acc;
        }
}

/* yi (O) += b (O) */
static inline void add_row(float *yi, const float *b, int64_t O)
{
    #pragma omp simd
    for (int64_t o = 0; o < O; o++)
        yi[o] += b[o];
}

typedef struct {
    float *y, *db;
    const float *b, *dy;
    int64_t N, O;
} linear_rows_call;

static void add_bias_row(void *ctx, int64_t i, int slot)
{
    const linear_rows_call *c = ctx;
    (void)slot;
    add_row(c->y + i * c->O, c->b, c->O);
}

/* y (N,O) += b (O) on every row. */
static void add_bias(float *y, const float *b, int64_t N, int64_t O, int nthreads)
{
    linear_rows_call c = {y, NULL, b, NULL, N, O};
    /* each row of y is written by one work item */
    fastcnn_parallel_for(N, add_bias_row, &c, fastcnn_threads_for(N * O, nthreads));
}

/* Columns [blk DB_BLOCK, +DB_BLOCK) of sum_columns. */
static void sum_block(void *ctx, int64_t blk, int slot)
{
    const linear_rows_call *c = ctx;
    int64_t N = c->N, O = c->O, o0 = blk * DB_BLOCK;
    int64_t m = O - o0 < DB_BLOCK ? O - o0 : DB_BLOCK;
    double acc[DB_BLOCK] = {0.0};
    (void)slot;
    for (int64_t i = 0; i < N; i++) {
        const float *row = c->dy + i * O + o0;
        #pragma omp simd
        for (int64_t j = 0; j < m; j++)
            acc[j] += row[j];
    }
    for (int64_t j = 0; j < m; j++)
        c->db[o0 + j] += (float)acc[j];
}

/* db (O) += sum over rows of dy (N,O), with double accumulators. */
static void sum_columns(float *db, const float *dy, int64_t N, int64_t O, int nthreads)
{
    linear_rows_call c = {NULL, db, NULL, dy, N, O};
    /* each block of columns (and its slice of db) belongs to one work item */
    fastcnn_parallel_for((O + DB_BLOCK - 1) / DB_BLOCK, sum_block, &c,
                         fastcnn_threads_for(N * O, nthreads));
}

/* Outputs per block of linear_few_rows: a block's weight rows stream once.
 * A multiple of 8: an output falls in a group of 8, 4 or 1 rows of
 * linear_rows (csrc/linear_kernel.h) the same on any thread count. */
#define FEW_ROWS_BLOCK 16

/* The linear family's loops of one instruction set (linear_kernel.h). */
typedef struct {
    void (*rows)(float *y, const float *x, const float *w, const float *b, int64_t N,
                 int64_t F, int64_t O, int64_t o0, int64_t o1);   /* outputs [o0, o1) */
} linear_kernels;

static void linear_rows_generic(float *y, const float *x, const float *w, const float *b,
                                int64_t N, int64_t F, int64_t O, int64_t o0, int64_t o1)
{
    linear_rows(y, x, w, b, N, F, O, o0, o1);
}

static const linear_kernels linear_kernels_generic = {linear_rows_generic};
#ifdef FASTCNN_X86_KERNELS
static const linear_kernels linear_kernels_avx2 = {linear_rows_avx2};
static const linear_kernels linear_kernels_avx512 = {linear_rows_avx512};
#endif

static const linear_kernels *linear_kernels_for(int isa)
{
    return FASTCNN_KERNELS_FOR(isa, linear_kernels);
}

/* One linear_few_rows call, for fastcnn_parallel_for. */
typedef struct {
    float *y;
    const float *x, *w, *b;
    int64_t N, F, O;
    const linear_kernels *kr;
} few_rows_call;

/* Block blk: outputs (columns of y) [blk FEW_ROWS_BLOCK, +FEW_ROWS_BLOCK). */
static void few_rows_block(void *ctx, int64_t blk, int slot)
{
    const few_rows_call *c = ctx;
    int64_t o0 = blk * FEW_ROWS_BLOCK, o1 = o0 + FEW_ROWS_BLOCK < c->O ? o0 + FEW_ROWS_BLOCK : c->O;
    (void)slot;
    c->kr->rows(c->y, c->x, c->w, c->b, c->N, c->F, c->O, o0, o1);
}

/* linear_forward for N <= LINEAR_FEW_ROWS: dot products, no packing. */
static void linear_few_rows(float *y, const float *x, const float *w, const float *b,
                            int64_t N, int64_t F, int64_t O, int nthreads)
{
    int64_t nblocks = (O + FEW_ROWS_BLOCK - 1) / FEW_ROWS_BLOCK;
    int nt = fastcnn_threads_for(N * O * F / 4, nthreads);
    few_rows_call c = {y, x, w, b, N, F, O, linear_kernels_for(fastcnn_isa())};
    if (nt == 1) {  /* no work items for small work */
        c.kr->rows(y, x, w, b, N, F, O, 0, O);
        return;
    }
    /* each block of outputs (columns of y) is written by one work item */
    fastcnn_parallel_for(nblocks, few_rows_block, &c, nt);
}

int linear_forward(float *y, const float *x, const float *w, const float *b,
                   int64_t N, int64_t F, int64_t O, int nthreads)
{
    if (N <= LINEAR_FEW_ROWS) {
        linear_few_rows(y, x, w, b, N, F, O, nthreads);
        return FASTCNN_OK;
    }
    /* y = x w^T: A = x (N,F), B = w stored (O,F), transposed */
    int rc = sgemm(0, 1, N, O, F, 1.0f, x, F, w, F, 0.0f, y, O, nthreads);
    if (rc == FASTCNN_OK && b)
        add_bias(y, b, N, O, nthreads);
    return rc;
}

int linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                    const float *w, int64_t N, int64_t F, int64_t O, int nthreads)
{
    int rc = FASTCNN_OK;
    /* dx (N,F) = dy (N,O) w (O,F) */
    if (dx)
        rc = sgemm(0, 0, N, F, O, 1.0f, dy, O, w, F, 0.0f, dx, F, nthreads);
    /* dw (O,F) += dy^T x: A = dy stored (N,O), transposed */
    if (rc == FASTCNN_OK)
        rc = sgemm(1, 0, O, F, N, 1.0f, dy, O, x, F, 1.0f, dw, F, nthreads);
    if (rc == FASTCNN_OK && db)
        sum_columns(db, dy, N, O, nthreads);
    return rc;
}
