/* pool.c - fastcnn's own worker threads for parallel loops whose caller never
 * waits for a sleeping worker.
 *
 * An OpenMP region (libgomp, OMP_WAIT_POLICY=PASSIVE) wakes its sleeping
 * workers and then waits at its end for each of them, even for one that has
 * not started yet: on a virtual machine waking an idle CPU takes 20-150 us,
 * longer than many layers of a batch-1 inference take in all (a 1x1
 * convolution on a 14x14 map: 96 us on one thread, 168 us on two).
 *
 * Here the caller publishes a job of n chunks, cut into one contiguous range
 * per thread slot (slot 0 the caller's, slot i + 1 worker i's, as OpenMP's
 * static schedule cuts them, so that consecutive loops over the same
 * tensors find their parts in the same core's cache), wakes the workers and
 * runs its own range at once. A worker joins the job when it gets there and
 * runs what is left of its range; a thread out of chunks takes the last
 * chunks of other ranges, so a worker that has not woken yet holds no one
 * up: its range is done by the others. The caller, out of chunks, closes
 * the job to new workers and waits only for the ones that joined (they are
 * running and finish their last chunk). A worker that finished a job spins for
 * POOL_SPIN_NS, so that the next job of the same model run (microseconds
 * later) finds it awake, then sleeps on a condition variable; at the end of
 * a model run (fastcnn_pool_rest) it sleeps at once, so that it takes no
 * core from whatever the process runs next.
 *
 * An OpenMP region has a second cost where another library loaded libgomp
 * before fastcnn (import torch), or OMP_WAIT_POLICY is unset: its workers
 * then spin for milliseconds after each region, on the core the pool's
 * worker needs for the next op (a frozen MobileNetV2 at 2 threads ran 1.9x
 * slower while its residual adds were OpenMP regions; a ResNet-18 train
 * step 1.2x while the GEMM's packing ahead, run by Winograd's every call,
 * was one). So no loop of the kernels is an OpenMP region; the workers are
 * named POOL_THREAD_NAME, which tests/test_threads.py checks.
 *
 * One caller at a time holds the pool; a concurrent caller (another Python
 * thread, or a chunk that starts a loop of its own) runs its loop serially.
 * A forked child never touches the pool (fastcnn_thread_limit gives it one
 * thread). Without POSIX threads every loop runs serially. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#if defined(__unix__) || defined(__APPLE__)
#define POOL_THREADS 1
#include <pthread.h>
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#include "fastcnn.h"

#define POOL_MAX_WORKERS 255
#define POOL_THREAD_NAME "fastcnn-worker" /* as top -H and py-spy show it (Linux) */
#define POOL_SPIN_NS 100000         /* an idle worker's spin before it sleeps */

/* pool.job, one word so that a worker's join is one compare-and-swap that
 * cannot mistake a later job for the one it saw: generation (jobs published)
 * << 20 | closed << 19 | workers the job may use << 9 | workers joined. */
#define JOB_COUNT_MASK 511LL
#define JOB_WANT_SHIFT 9
#define JOB_CLOSED (1LL << 19)
#define JOB_GEN_SHIFT 20

#ifdef POOL_THREADS

/* A slot's range of chunks [front, back): front << 32 | back, on its own cache
 * line. The owner takes from the front, the others from the back. */
typedef struct {
    _Alignas(64) atomic_ullong span;
} slot_range;

typedef struct {
    pthread_mutex_t caller;         /* held by the thread running a job */
    pthread_mutex_t sleep_lock;     /* guards sleepers and the condition */
    pthread_cond_t wake;
    int sleepers;
    int workers;                    /* started (only grows) */
    atomic_llong job;               /* see JOB_* above */
    /* the current job, written before its job word is published */
    fastcnn_chunk_fn fn;
    void *ctx;
    int slots;                      /* workers the job may use + 1 */
    atomic_int finished;            /* joined workers that are done */
    atomic_int resting;             /* set by fastcnn_pool_rest: idle workers sleep now */
    slot_range range[POOL_MAX_WORKERS + 1];
} pool_state;

static pool_state pool = {
    .caller = PTHREAD_MUTEX_INITIALIZER,
    .sleep_lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
};

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static long long generation_of(long long job)
{
    return job >> JOB_GEN_SHIFT;
}

/* A chunk of slot v's range, from its front (own) or back (taken by
 * another slot); -1 when the range is empty. */
static int64_t take(int v, int own)
{
    atomic_ullong *span = &pool.range[v].span;
    unsigned long long r = atomic_load_explicit(span, memory_order_relaxed);
    for (;;) {
        unsigned long long front = r >> 32, back = r & 0xffffffffULL;
        if (front >= back)
            return -1;
        unsigned long long next = own ? (front + 1) << 32 | back : front << 32 | (back - 1);
        if (atomic_compare_exchange_weak_explicit(span, &r, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return (int64_t)(own ? front : back - 1);
    }
}

/* Runs chunks as slot `slot`: its own range, then the others' leftovers. */
static void run_chunks(int slot)
{
    int64_t i;
    while ((i = take(slot, 1)) >= 0)
        pool.fn(pool.ctx, i, slot);
    for (int k = 1; k < pool.slots; k++) {
        int v = (slot + k) % pool.slots;
        while ((i = take(v, 0)) >= 0)
            pool.fn(pool.ctx, i, slot);
    }
}

/* Whether worker `id` joined the current job (not closed, id below the
 * workers it wants); its slot is then id + 1. */
static int join(int id)
{
    long long w = atomic_load_explicit(&pool.job, memory_order_acquire);
    while (!(w & JOB_CLOSED) && id < ((w >> JOB_WANT_SHIFT) & JOB_COUNT_MASK))
        if (atomic_compare_exchange_weak_explicit(&pool.job, &w, w + 1, memory_order_acq_rel,
                                                  memory_order_acquire))
            return 1;
    return 0;
}

/* Returns the generation of a job published after generation `seen`, once
 * there is one: spins a while, then sleeps. */
static long long await_job(long long seen)
{
    int64_t start = now_ns();
    long long g;
    for (int spins = 1;; spins++) {
        g = generation_of(atomic_load_explicit(&pool.job, memory_order_acquire));
        if (g != seen)
            return g;
        if (atomic_load_explicit(&pool.resting, memory_order_relaxed))
            break;
        cpu_relax();
        if (spins % 256 == 0) {
            if (now_ns() - start > POOL_SPIN_NS)
                break;
            sched_yield();      /* a machine with more threads than cores */
        }
    }
    pthread_mutex_lock(&pool.sleep_lock);
    pool.sleepers++;
    while ((g = generation_of(atomic_load_explicit(&pool.job, memory_order_acquire))) == seen)
        pthread_cond_wait(&pool.wake, &pool.sleep_lock);
    pool.sleepers--;
    pthread_mutex_unlock(&pool.sleep_lock);
    return g;
}

typedef struct {
    int id;
    long long seen;     /* the generation when it started */
} worker_start;

static void *worker_main(void *arg)
{
    worker_start w = *(worker_start *)arg;
    free(arg);
#ifdef __linux__
    pthread_setname_np(pthread_self(), POOL_THREAD_NAME);
#endif
    for (;;) {
        w.seen = await_job(w.seen);
        if (join(w.id)) {
            run_chunks(w.id + 1);
            atomic_fetch_add_explicit(&pool.finished, 1, memory_order_release);
        }
    }
    return NULL;
}

/* Starts workers until there are `count` (or as many as the system allows). */
static void start_workers(int count)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (pool.workers < count) {
        pthread_t t;
        worker_start *w = malloc(sizeof *w);
        if (!w)
            break;
        w->id = pool.workers;
        w->seen = generation_of(atomic_load_explicit(&pool.job, memory_order_acquire));
        if (pthread_create(&t, &attr, worker_main, w) != 0) {
            free(w);
            break;
        }
        pool.workers++;
    }
    pthread_attr_destroy(&attr);
}

/* Publishes the job (the caller holds pool.caller, no worker is in a job):
 * slot s gets chunks [chunks s / slots, chunks (s + 1) / slots). */
static void publish(fastcnn_chunk_fn fn, void *ctx, int64_t chunks, int want)
{
    pool.fn = fn;
    pool.ctx = ctx;
    pool.slots = want + 1;
    for (int s = 0; s < pool.slots; s++) {
        unsigned long long lo = (unsigned long long)(chunks * s / pool.slots);
        unsigned long long hi = (unsigned long long)(chunks * (s + 1) / pool.slots);
        atomic_store_explicit(&pool.range[s].span, lo << 32 | hi, memory_order_relaxed);
    }
    atomic_store_explicit(&pool.finished, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.resting, 0, memory_order_relaxed);
    long long g = generation_of(atomic_load_explicit(&pool.job, memory_order_relaxed)) + 1;
    atomic_store_explicit(&pool.job, g << JOB_GEN_SHIFT | (long long)want << JOB_WANT_SHIFT,
                          memory_order_release);
    pthread_mutex_lock(&pool.sleep_lock);
    if (pool.sleepers)
        pthread_cond_broadcast(&pool.wake);     /* workers past `want` sleep again */
    pthread_mutex_unlock(&pool.sleep_lock);
}

/* Closes the job to new workers and waits for those that joined. */
static void finish(void)
{
    int joined = (int)(atomic_fetch_or_explicit(&pool.job, JOB_CLOSED, memory_order_acq_rel)
                       & JOB_COUNT_MASK);
    for (int spins = 1; atomic_load_explicit(&pool.finished, memory_order_acquire) < joined;
         spins++)
        if (spins % 256 == 0)
            sched_yield();      /* a joined worker that lost its core */
        else
            cpu_relax();
}

static void run_serially(int64_t chunks, fastcnn_chunk_fn fn, void *ctx)
{
    for (int64_t i = 0; i < chunks; i++)
        fn(ctx, i, 0);
}

void fastcnn_parallel_for(int64_t chunks, fastcnn_chunk_fn fn, void *ctx, int nthreads)
{
    int want = fastcnn_thread_limit(nthreads) - 1;
    if (want > POOL_MAX_WORKERS)
        want = POOL_MAX_WORKERS;
    if (want > chunks - 1)
        want = (int)(chunks - 1);
    /* (ranges hold 32-bit chunk numbers) */
    if (want < 1 || chunks > 0xffffffffLL || pthread_mutex_trylock(&pool.caller) != 0) {
        run_serially(chunks, fn, ctx);
        return;
    }
    start_workers(want);
    if (want > pool.workers)
        want = pool.workers;
    publish(fn, ctx, chunks, want);
    run_chunks(0);
    finish();
    pthread_mutex_unlock(&pool.caller);
}

#else

void fastcnn_parallel_for(int64_t chunks, fastcnn_chunk_fn fn, void *ctx, int nthreads)
{
    (void)nthreads;
    for (int64_t i = 0; i < chunks; i++)
        fn(ctx, i, 0);
}

void fastcnn_pool_rest(void)
{
}

#endif

void fastcnn_pool_rest(void)
{
    atomic_store_explicit(&pool.resting, 1, memory_order_relaxed);
}

/* ---- spans of elements ------------------------------------------------------ */

typedef struct {
    fastcnn_span_fn fn;
    void *ctx;
    int64_t n, span;
} span_call;

static void run_span(void *ctx, int64_t c, int slot)
{
    const span_call *s = ctx;
    int64_t lo = c * s->span;
    (void)slot;
    s->fn(s->ctx, lo, lo + s->span < s->n ? lo + s->span : s->n);
}

void fastcnn_parallel_spans(int64_t n, int64_t span, fastcnn_span_fn fn, void *ctx,
                            int nthreads)
{
    if (nthreads <= 1 || n <= span) {   /* one span: no work items */
        fn(ctx, 0, n);
        return;
    }
    span_call s = {fn, ctx, n, span};
    fastcnn_parallel_for((n + span - 1) / span, run_span, &s, nthreads);
}

/* ---- test hook ------------------------------------------------------------- */

typedef struct {
    atomic_int *runs;       /* per chunk: times it ran */
    atomic_int *busy;       /* per slot: chunks running in it now */
    atomic_int bad;         /* a slot out of range or used by two chunks at once */
    int slots;
} pool_check;

static void check_chunk(void *ctx, int64_t i, int slot)
{
    pool_check *c = ctx;
    if (slot < 0 || slot >= c->slots
        || atomic_fetch_add_explicit(&c->busy[slot], 1, memory_order_acq_rel) != 0) {
        atomic_store(&c->bad, 1);
        return;
    }
    atomic_fetch_add_explicit(&c->runs[i], 1, memory_order_relaxed);
    for (volatile int k = 0; k < (int)(i % 7) * 100; k++) {}   /* uneven chunks */
    atomic_fetch_sub_explicit(&c->busy[slot], 1, memory_order_acq_rel);
}

int fastcnn_pool_check(int64_t chunks, int nthreads, int jobs)
{
    int slots = fastcnn_thread_limit(nthreads), ok = 1;
    pool_check c = {calloc((size_t)chunks, sizeof(atomic_int)),
                    calloc((size_t)slots, sizeof(atomic_int)), 0, slots};
    if (!c.runs || !c.busy) {
        free(c.runs);
        free(c.busy);
        return -1;
    }
    for (int j = 0; j < jobs && ok; j++) {
        fastcnn_parallel_for(chunks, check_chunk, &c, nthreads);
        for (int64_t i = 0; i < chunks; i++)
            ok &= atomic_exchange(&c.runs[i], 0) == 1;
        ok &= !atomic_load(&c.bad);
    }
    free(c.runs);
    free(c.busy);
    return ok ? 0 : -1;
}
