/* loss.c - softmax cross-entropy over integer labels, mean over the batch.
 *
 * logits, probs, dlogits (N,L); labels (N). Row i's loss is
 *   log(sum_j exp(z_j - m)) - (z_y - m),   m = max_j z_j, y = labels[i],
 * so exp never sees a positive argument (no overflow) and a huge gap between
 * logits costs no precision. A NaN logit makes its row's probabilities, its
 * row's gradient and the mean loss NaN (as in PyTorch); other rows are exact.
 *
 * Callers validate labels; a label outside [0, L) still never indexes out of
 * bounds here: its row's loss is NaN and its gradient has no one-hot term. */
#include <math.h>

#include "dispatch.h"
#include "expf_vec.h"
#include "fastcnn.h"

/* The fast forward sums row losses in at most MAX_CHUNKS chunks of
 * consecutive rows whose boundaries depend only on N, then adds the chunk
 * sums in order: the result is the same bits for any thread count. */
#define MAX_CHUNKS 64
#define MIN_CHUNK_ROWS 64

static inline int valid_label(int64_t y, int64_t L)
{
    return y >= 0 && y < L;
}

double cross_entropy_forward_ref(float *probs, const float *logits, const int64_t *labels,
                                 int64_t N, int64_t L)
{
    double total = 0.0;
    for (int64_t i = 0; i < N; i++) {
        const float *z = logits + i * L;
        double m = z[0], s = 0.0;
        for (int64_t j = 1; j < L; j++)
            m = z[j] > m ? z[j] : m;
        for (int64_t j = 0; j < L; j++)
            s += exp(z[j] - m);
        for (int64_t j = 0; j < L; j++)
            probs[i * L + j] = (float)(exp(z[j] - m) / s);
        total += valid_label(labels[i], L) ? log(s) - (z[labels[i]] - m) : NAN;
    }
    return total / (double)N;
}

void cross_entropy_backward_ref(float *dlogits, const float *probs, const int64_t *labels,
                                int64_t N, int64_t L, float grad_loss)
{
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < L; j++) {
            double onehot = j == labels[i] ? 1.0 : 0.0;
            dlogits[i * L + j] = (float)((double)grad_loss * (probs[i * L + j] - onehot) / N);
        }
}

/* max_j z[j] (L >= 1). A NaN anywhere makes the row NaN in softmax_row,
 * whatever m is, so the order of the comparisons does not matter. */
static float row_max(const float *z, int64_t L)
{
    float m = z[0];
    if (L < 64) {  /* the vector reduction's setup costs more than it saves */
        for (int64_t j = 1; j < L; j++)
            m = z[j] > m ? z[j] : m;
        return m;
    }
    #pragma omp simd reduction(max:m)
    for (int64_t j = 1; j < L; j++)
        m = z[j] > m ? z[j] : m;
    return m;
}

/* The loss family's loops of one instruction set (expf_vec.h), for rows of
 * L >= 64; shorter rows take the inline portable loop (SSE2), where a call and
 * wider vectors' remainders cost more than they save. */
typedef struct {
    float (*softmax_exps)(float *p, const float *z, float m, int64_t L);
} loss_kernels;

static float softmax_exps_generic(float *p, const float *z, float m, int64_t L)
{
    return softmax_exps(p, z, m, L);
}

static const loss_kernels loss_kernels_generic = {softmax_exps_generic};
#ifdef FASTCNN_X86_KERNELS
static const loss_kernels loss_kernels_avx2 = {softmax_exps_avx2};
static const loss_kernels loss_kernels_avx512 = {softmax_exps_avx512};
#endif

static const loss_kernels *loss_kernels_for(int isa)
{
    return FASTCNN_KERNELS_FOR(isa, loss_kernels);
}

/* One row: p (L) = softmax(z (L)); returns -log p[y] in double. */
static double softmax_row(float *p, const float *z, int64_t y, int64_t L)
{
    float m = row_max(z, L);
    float s = L >= 64 ? loss_kernels_for(fastcnn_isa())->softmax_exps(p, z, m, L)
                      : softmax_exps(p, z, m, L);
    float inv = 1.0f / s;
    #pragma omp simd
    for (int64_t j = 0; j < L; j++)
        p[j] *= inv;
    return valid_label(y, L) ? log((double)s) - ((double)z[y] - m) : NAN;
}

/* softmax_row over rows [lo, hi): the sum of their losses, in row order. */
static double softmax_rows(float *probs, const float *logits, const int64_t *labels, int64_t L,
                           int64_t lo, int64_t hi)
{
    double acc = 0.0;
    for (int64_t i = lo; i < hi; i++)
        acc += softmax_row(probs + i * L, logits + i * L, labels[i], L);
    return acc;
}

/* One cross-entropy forward, for fastcnn_parallel_for: chunks of `rows` rows. */
typedef struct {
    float *probs;
    const float *logits;
    const int64_t *labels;
    int64_t N, L, rows;
    double *partial;
} forward_call;

/* Chunk c: its rows of probs and its partial[c]. */
static void forward_chunk(void *ctx, int64_t c, int slot)
{
    const forward_call *f = ctx;
    (void)slot;
    f->partial[c] = softmax_rows(f->probs, f->logits, f->labels, f->L, c * f->rows,
                                 (c + 1) * f->rows < f->N ? (c + 1) * f->rows : f->N);
}

/* (Both passes run on fastcnn's pool, pool.c.) */
double cross_entropy_forward(float *probs, const float *logits, const int64_t *labels,
                             int64_t N, int64_t L, int nthreads)
{
    int64_t rows = (N + MAX_CHUNKS - 1) / MAX_CHUNKS;
    rows = rows < MIN_CHUNK_ROWS ? MIN_CHUNK_ROWS : rows;
    int64_t nchunks = (N + rows - 1) / rows;
    double partial[MAX_CHUNKS];
    forward_call f = {probs, logits, labels, N, L, rows, partial};
    /* each chunk writes its own rows of probs and its own partial[c] (the
     * same chunks and sums on any number of threads) */
    fastcnn_parallel_for(nchunks, forward_chunk, &f, fastcnn_threads_for(N * L * 8, nthreads));
    double total = 0.0;
    for (int64_t c = 0; c < nchunks; c++)
        total += partial[c];
    return total / (double)N;
}

/* One cross-entropy backward, for fastcnn_parallel_for. */
typedef struct {
    float *dlogits;
    const float *probs;
    const int64_t *labels;
    int64_t L;
    float scale;
} backward_call;

/* Row i of dlogits; reading probs at the same index first makes
 * dlogits == probs (in place) safe. */
static void backward_row(void *ctx, int64_t i, int slot)
{
    const backward_call *b = ctx;
    const float *p = b->probs + i * b->L;
    float *d = b->dlogits + i * b->L;
    int64_t y = b->labels[i];
    (void)slot;
    #pragma omp simd
    for (int64_t j = 0; j < b->L; j++)
        d[j] = (p[j] - (j == y ? 1.0f : 0.0f)) * b->scale;
}

void cross_entropy_backward(float *dlogits, const float *probs, const int64_t *labels,
                            int64_t N, int64_t L, float grad_loss, int nthreads)
{
    backward_call b = {dlogits, probs, labels, L, (float)((double)grad_loss / (double)N)};
    /* each row of dlogits is written by one work item */
    fastcnn_parallel_for(N, backward_row, &b, fastcnn_threads_for(N * L, nthreads));
}
