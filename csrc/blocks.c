/* blocks.c - memory for the large arrays fastcnn returns, and a cache of the
 * freed ones.
 *
 * A block fresh from the system is zeroed by the kernel, page by page, when it
 * is first touched: 3-6 ms for the 51 MB gradient of a pooling on 64x64x56x56
 * (bench/BLOCKS.md), as long as the backward itself. glibc's malloc keeps and
 * reuses freed blocks below its mmap threshold (at most 32 MiB), so above it
 * every array a layer returns pays that again on each call. Here a freed
 * block of BLOCK_MIN bytes or more is kept and handed out again for a request
 * of the same size class (sizes rounded up to 1/8 of their power of two:
 * batches of other sizes share classes, at most 12.5% more bytes). The
 * cache holds at most `cap` bytes (FASTCNN_CACHE_MB, default 256; with 0
 * the bindings leave every array to numpy) and at most BLOCK_SLOTS blocks,
 * dropping the oldest first; fastcnn_blocks_release frees them all.
 *
 * Every block starts with a header (its usable size) of BLOCK_ALIGN bytes,
 * so that a pointer alone says how to free or grow it, and the data starts
 * on a page. The page matters: numpy's large arrays start 16 bytes into a
 * page (glibc's mmap chunks), and an output whose address is a little past
 * its input's modulo 4096 makes each load wait on the store of an earlier
 * element with the same low 12 address bits (4K aliasing): batch norm's
 * backward on 32x64x56x56 with its inputs at offset 0x10 took 5.9 ms writing
 * at offset 0x40, 4.8 at 0x80, 4.4 at 0 (bench/BLOCKS.md).
 *
 * Thread-safe: one mutex, held only to take or add a cache entry; a fork
 * waits for it, so the child's cache is whole. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <pthread.h>
#include <sys/mman.h>
#endif

#include "fastcnn.h"

#define BLOCK_ALIGN 4096
#define BLOCK_MIN ((size_t)1 << 20)
#define BLOCK_HUGE ((size_t)4 << 20) /* from here, ask for transparent huge pages */
#define BLOCK_SLOTS 32
#define BLOCK_CAP_DEFAULT_MB 256

typedef struct {
    size_t bytes;       /* usable bytes after the header */
} block_header;

static struct {
    char *p[BLOCK_SLOTS];       /* cached blocks (headers), oldest first */
    int count;
    size_t bytes, cap;          /* cached bytes (usable), and their limit */
    int cap_read;
    int64_t hits, misses;
} cache;

#ifndef _WIN32
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static void lock(void) { pthread_mutex_lock(&cache_lock); }
static void unlock(void) { pthread_mutex_unlock(&cache_lock); }

/* Registered once, when the extension loads: a fork waits for the lock. */
__attribute__((constructor)) static void register_blocks_fork_handler(void)
{
    pthread_atfork(lock, unlock, unlock);
}
#else
static void lock(void) {}
static void unlock(void) {}
#endif

/* The usable size a request of n bytes gets: n below BLOCK_MIN (rounded to
 * BLOCK_ALIGN), else n rounded up to a multiple of 1/8 of its power of two. */
static size_t size_class(size_t n)
{
    size_t step = BLOCK_ALIGN;
    if (n >= BLOCK_MIN) {
        size_t top = BLOCK_MIN;
        while (top <= n / 2)
            top *= 2;
        step = top / 8;
    }
    return (n + step - 1) / step * step;
}

/* The cache's limit in bytes, read from FASTCNN_CACHE_MB once (lock held). */
static size_t cache_cap(void)
{
    if (!cache.cap_read) {
        const char *e = getenv("FASTCNN_CACHE_MB");
        long mb = e && *e ? strtol(e, NULL, 10) : BLOCK_CAP_DEFAULT_MB;
        cache.cap = mb > 0 ? (size_t)mb << 20 : 0;
        cache.cap_read = 1;
    }
    return cache.cap;
}

static block_header *header_of(void *p)
{
    return (block_header *)((char *)p - BLOCK_ALIGN);
}

/* A cached block of usable size `bytes` (the most recently freed: its lines
 * may still be in cache), taken out; NULL if none. */
static char *take_cached(size_t bytes)
{
    char *found = NULL;
    lock();
    for (int i = cache.count - 1; i >= 0; i--) {
        if (((block_header *)cache.p[i])->bytes != bytes)
            continue;
        found = cache.p[i];
        memmove(&cache.p[i], &cache.p[i + 1], (size_t)(cache.count - 1 - i) * sizeof(char *));
        cache.count--;
        cache.bytes -= bytes;
        break;
    }
    if (found)
        cache.hits++;
    else
        cache.misses++;
    unlock();
    return found;
}

static char *new_block(size_t bytes)
{
    char *h = aligned_alloc(BLOCK_ALIGN, BLOCK_ALIGN + bytes);     /* whole pages */
    if (!h)
        return NULL;
#if defined(MADV_HUGEPAGE)
    if (bytes >= BLOCK_HUGE)        /* fewer faults, fewer TLB misses (as numpy asks) */
        madvise(h, BLOCK_ALIGN + bytes, MADV_HUGEPAGE);
#endif
    ((block_header *)h)->bytes = bytes;
    return h;
}

void *fastcnn_block_get(size_t n)
{
    if (n > SIZE_MAX / 2)           /* no such memory; and the rounding would wrap */
        return NULL;
    size_t bytes = size_class(n);
    char *h = NULL;
    if (bytes >= BLOCK_MIN)
        h = take_cached(bytes);
    if (!h)
        h = new_block(bytes);
    return h ? h + BLOCK_ALIGN : NULL;
}

void fastcnn_block_put(void *p)
{
    if (!p)
        return;
    char *h = (char *)header_of(p), *dropped[BLOCK_SLOTS + 1];
    size_t bytes = ((block_header *)h)->bytes;
    int ndropped = 0;
    lock();
    if (bytes < BLOCK_MIN || bytes > cache_cap()) {
        dropped[ndropped++] = h;
    } else {
        while (cache.count == BLOCK_SLOTS || cache.bytes + bytes > cache.cap) {
            dropped[ndropped++] = cache.p[0];           /* the oldest goes */
            cache.bytes -= ((block_header *)cache.p[0])->bytes;
            memmove(&cache.p[0], &cache.p[1], (size_t)(--cache.count) * sizeof(char *));
        }
        cache.p[cache.count++] = h;
        cache.bytes += bytes;
    }
    unlock();
    for (int i = 0; i < ndropped; i++)
        free(dropped[i]);
}

void *fastcnn_block_resize(void *p, size_t n)
{
    if (!p)
        return fastcnn_block_get(n);
    size_t old = header_of(p)->bytes;
    if (size_class(n) == old)
        return p;
    void *q = fastcnn_block_get(n);
    if (!q)
        return NULL;        /* p stays valid, as realloc's contract says */
    memcpy(q, p, old < n ? old : n);
    fastcnn_block_put(p);
    return q;
}

int64_t fastcnn_blocks_release(void)
{
    char *all[BLOCK_SLOTS];
    lock();
    int n = cache.count;
    int64_t bytes = (int64_t)cache.bytes;
    memcpy(all, cache.p, (size_t)n * sizeof(char *));
    cache.count = 0;
    cache.bytes = 0;
    unlock();
    for (int i = 0; i < n; i++)
        free(all[i]);
    return bytes;
}

void fastcnn_blocks_stats(int64_t out[5])
{
    lock();
    out[0] = (int64_t)cache.bytes;
    out[1] = cache.count;
    out[2] = cache.hits;
    out[3] = cache.misses;
    out[4] = (int64_t)cache_cap();
    unlock();
}
