/* threads.c - thread-count policy and aligned scratch memory. */
#include <stdlib.h>

#include "fastcnn.h"

/* Below this many units of work a parallel region costs more than it saves. */
#define FASTCNN_PARALLEL_THRESHOLD 32768

int fastcnn_threads_for(int64_t work, int nthreads)
{
    if (nthreads < 1 || work < FASTCNN_PARALLEL_THRESHOLD)
        return 1;
    return nthreads;
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
