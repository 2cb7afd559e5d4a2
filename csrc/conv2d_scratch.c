/* conv2d_scratch.c - the conv2d family's scratch memory: one cached buffer
 * shared by every path (im2col matrices, gathered gradients, padded images,
 * transposed weights). */
#include "conv2d_internal.h"

/* Scratch (im2col, gathered gradients) would be page-faulted afresh by every
 * call; instead the last buffer given back is kept for the next call (at
 * most one, at most SCRATCH_CACHE_MAX bytes; freed at exit). Concurrent
 * callers each take their own: the slot is swapped atomically. */
#define SCRATCH_CACHE_MAX ((int64_t)64 << 20)
#define SCRATCH_HEADER 64

static char *cached_scratch;

static int64_t *scratch_size(char *block)
{
    return (int64_t *)block;
}

/* A buffer of at least `floats` floats (64-byte aligned), or NULL. */
float *conv2d_scratch_take(int64_t floats)
{
    int64_t bytes = (floats > 0 ? floats : 1) * (int64_t)sizeof(float);
    char *block = __atomic_exchange_n(&cached_scratch, NULL, __ATOMIC_ACQ_REL);
    if (block && *scratch_size(block) < bytes) {
        fastcnn_free(block);
        block = NULL;
    }
    if (!block) {
        block = fastcnn_alloc(bytes + SCRATCH_HEADER);
        if (!block)
            return NULL;
        *scratch_size(block) = bytes;
    }
    return (float *)(block + SCRATCH_HEADER);
}

/* Return a buffer from conv2d_scratch_take: it becomes the cached one. */
void conv2d_scratch_give(float *p)
{
    char *block = (char *)p - SCRATCH_HEADER;
    if (*scratch_size(block) > SCRATCH_CACHE_MAX) {
        fastcnn_free(block);
        return;
    }
    fastcnn_free(__atomic_exchange_n(&cached_scratch, block, __ATOMIC_ACQ_REL));
}

__attribute__((destructor)) static void scratch_release(void)
{
    fastcnn_free(__atomic_exchange_n(&cached_scratch, NULL, __ATOMIC_ACQ_REL));
}
