/* threads.c - thread-count policy, fork safety and aligned scratch memory. */
#include <stdlib.h>
#ifndef _WIN32
#include <pthread.h>
#endif

#include "fastcnn.h"

/* Below this many units of work a parallel region costs more than it saves. */
#define FASTCNN_PARALLEL_THRESHOLD 32768

/* Set in the child of every fork() after this library loaded. GNU libgomp
 * keeps the parent's thread pool in its state, but a child has only the
 * forking thread: its first parallel region with more than one thread waits
 * forever for workers that do not exist. libgomp cannot say cheaply whether
 * any library sharing it started that pool, so every forked child runs its
 * kernels serially. Written only by the child handler (one thread then). */
static volatile int forked_child = 0;

#ifndef _WIN32
static void mark_forked_child(void)
{
    forked_child = 1;
}

/* Registered once, when the extension loads. */
__attribute__((constructor)) static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, mark_forked_child);
}
#endif

int fastcnn_forked_child(void)
{
    return forked_child;
}

int fastcnn_thread_limit(int nthreads)
{
    if (nthreads < 1 || forked_child)
        return 1;
    return nthreads;
}

int fastcnn_threads_for(int64_t work, int nthreads)
{
    if (work < FASTCNN_PARALLEL_THRESHOLD)
        return 1;
    return fastcnn_thread_limit(nthreads);
}

int fastcnn_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

void *fastcnn_alloc(int64_t bytes)
{
    void *p = NULL;
    if (bytes <= 0)
        bytes = 64;
    if (posix_memalign(&p, 64, (size_t)((bytes + 63) / 64 * 64)) != 0)
        return NULL;
    return p;
}

void fastcnn_free(void *p)
{
    free(p);
}
