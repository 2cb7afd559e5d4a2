/* conv2d_scratch.c - the conv2d family's scratch memory: a few cached buffers
 * shared by every path (im2col matrices, gathered gradients, padded images,
 * transposed weights). */
#include "conv2d_internal.h"

/* Scratch (im2col, gathered gradients) would be page-faulted afresh by every
 * call; instead buffers given back are kept for the next calls: up to
 * SCRATCH_SLOTS of them (so that as many threads running convolutions at once
 * each find one), each at most SCRATCH_CACHE_MAX bytes; freed at exit. A slot
 * is taken and filled atomically, so concurrent callers never share a buffer. */
#define SCRATCH_CACHE_MAX ((int64_t)64 << 20)
#define SCRATCH_HEADER 64
#define SCRATCH_SLOTS 8

static char *cached_scratch[SCRATCH_SLOTS];

static int64_t *scratch_size(char *block)
{
    return (int64_t *)block;
}

/* Keep block in an empty slot, or free it if there is none or it is larger
 * than the cache keeps. */
static void keep(char *block)
{
    if (*scratch_size(block) <= SCRATCH_CACHE_MAX) {
        for (int i = 0; i < SCRATCH_SLOTS; i++) {
            char *empty = NULL;
            if (__atomic_compare_exchange_n(&cached_scratch[i], &empty, block, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                return;
        }
    }
    fastcnn_free(block);
}

/* A buffer of at least `floats` floats (64-byte aligned), or NULL: a kept
 * one large enough if there is one, else a new one (one call may take
 * buffers of several sizes; a kept buffer too small for this one is freed
 * in its place, so the cache does not grow). */
float *conv2d_scratch_take(int64_t floats)
{
    int64_t bytes = (floats > 0 ? floats : 1) * (int64_t)sizeof(float);
    char *block = NULL, *small = NULL;
    for (int i = 0; i < SCRATCH_SLOTS && !block; i++) {
        char *b = __atomic_exchange_n(&cached_scratch[i], NULL, __ATOMIC_ACQ_REL);
        if (!b)
            continue;
        if (*scratch_size(b) >= bytes)
            block = b;
        else if (!small)
            small = b;
        else
            keep(b);
    }
    if (small) {
        if (block)
            keep(small);
        else
            fastcnn_free(small);
    }
    if (!block) {
        block = fastcnn_alloc(bytes + SCRATCH_HEADER);
        if (!block)
            return NULL;
        *scratch_size(block) = bytes;
    }
    return (float *)(block + SCRATCH_HEADER);
}

/* Return a buffer from conv2d_scratch_take: it goes to an empty slot (freed
 * if there is none, or if it is larger than the cache keeps). */
void conv2d_scratch_give(float *p)
{
    keep((char *)p - SCRATCH_HEADER);
}

__attribute__((destructor)) static void scratch_release(void)
{
    for (int i = 0; i < SCRATCH_SLOTS; i++)
        fastcnn_free(__atomic_exchange_n(&cached_scratch[i], NULL, __ATOMIC_ACQ_REL));
}
