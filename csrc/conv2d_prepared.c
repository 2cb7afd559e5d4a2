/* conv2d_prepared.c - what a path derives from the weights alone, kept for
 * a convolution whose weights do not change between calls (a frozen model's:
 * conv2d_forward_prepared in fastcnn.h): the channel-vector path's
 * transposed weight blocks, Winograd's transformed filters. Without it each
 * call derives them anew, a pass over all the weights that at batch 1 costs
 * as much as a fifth of the convolution.
 *
 * One slot per kind. The first call that needs a kind derives it into a
 * fresh buffer and publishes it with one compare-and-swap, so concurrent
 * first calls never wait: a loser frees its copy and takes the winner's. An
 * entry is used only for the weights (address) and sizes it was made from;
 * any other call derives per call as without it. Entries live until
 * conv2d_prepared_free. */
#include <stdatomic.h>
#include <stdlib.h>

#include "conv2d_internal.h"

typedef struct {
    const float *w;                 /* the weights it was derived from */
    int64_t K, C, R, S, variant;    /* their sizes, and the kind's variant */
    float *data;
    int64_t floats;                 /* data's length */
} prepared_entry;

struct conv2d_prepared {
    _Atomic(prepared_entry *) slot[PREPARED_KINDS];
};

conv2d_prepared *conv2d_prepared_new(void)
{
    return calloc(1, sizeof(conv2d_prepared));
}

void conv2d_prepared_free(conv2d_prepared *p)
{
    if (!p)
        return;
    for (int k = 0; k < PREPARED_KINDS; k++) {
        prepared_entry *e = atomic_load_explicit(&p->slot[k], memory_order_acquire);
        if (e) {
            fastcnn_free(e->data);
            free(e);
        }
    }
    free(p);
}

static int made_from(const prepared_entry *e, const float *w, const conv2d_shape *s,
                     int64_t variant)
{
    return e->w == w && e->K == s->K && e->C == s->C && e->R == s->R && e->S == s->S
           && e->variant == variant;
}

const float *conv2d_prepared_get(conv2d_prepared *p, int kind, const float *w,
                                 const conv2d_shape *s, int64_t variant, int64_t floats,
                                 conv2d_prepare_fn prepare, int nthreads)
{
    if (!p)
        return NULL;
    prepared_entry *e = atomic_load_explicit(&p->slot[kind], memory_order_acquire);
    if (e)
        return made_from(e, w, s, variant) ? e->data : NULL;
    e = malloc(sizeof *e);
    float *data = fastcnn_alloc(floats * (int64_t)sizeof(float));
    if (!e || !data || prepare(data, w, s, variant, nthreads) != FASTCNN_OK) {
        free(e);
        fastcnn_free(data);
        return NULL;
    }
    *e = (prepared_entry){w, s->K, s->C, s->R, s->S, variant, data, floats};
    prepared_entry *first = NULL;
    if (atomic_compare_exchange_strong_explicit(&p->slot[kind], &first, e, memory_order_acq_rel,
                                                memory_order_acquire))
        return data;
    fastcnn_free(data);
    free(e);
    return made_from(first, w, s, variant) ? first->data : NULL;
}

void conv2d_prepared_evict(conv2d_prepared *p)
{
    for (int k = 0; p && k < PREPARED_KINDS; k++) {
        prepared_entry *e = atomic_load_explicit(&p->slot[k], memory_order_acquire);
        if (e)
            conv2d_evict(e->data, e->floats);
    }
}
