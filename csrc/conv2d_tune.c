/* conv2d_tune.c - the table of timed path choices (conv2d.c times the
 * candidate paths of a convolution the first time its shape comes, and
 * keeps the fastest here): one entry per (op, shape, requested threads,
 * instruction set), process-wide, for the life of the process.
 *
 * Lock-free, so no thread ever waits on another (nor a forked child on a
 * lock its parent's threads held): an entry is claimed by one
 * compare-and-swap of its state, written, then published; readers only
 * trust published entries. Once half the slots are taken, no more shapes
 * are timed (conv2d_tune_room): they go by shape, so a shape never changes
 * path from one call to the next. */
#include <float.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "conv2d_internal.h"

#define TUNE_SLOTS 8192     /* a power of two */
#define CONV2D_TIMED_MAX 8  /* most candidates conv2d_time_fastest compares */
#define TUNE_USES_MAX (1 << 20) /* conv2d_tune_use counts no further */

enum { SLOT_EMPTY, SLOT_WRITING, SLOT_READY };

typedef struct {
    int state;
    int uses;               /* conv2d_tune_use's count */
    float best;             /* conv2d_tune_seen's fastest call, seconds */
    conv2d_tune_key key;
    conv2d_tune_choice choice;
} tune_slot;

static tune_slot table[TUNE_SLOTS];
static int kept;            /* slots taken */

conv2d_tune_key conv2d_tune_key_of(int op, const conv2d_shape *s, int nthreads)
{
    conv2d_tune_key k;
    memset(&k, 0, sizeof k);    /* padding too: keys are compared bytewise */
    k.op = op;
    k.nthreads = nthreads;
    k.isa = fastcnn_isa();
    k.shape = *s;
    k.shape.clamp = 0;          /* an epilogue does not change the best path */
    k.shape.lo = k.shape.hi = 0.0f;
    return k;
}

static uint64_t key_hash(const conv2d_tune_key *k)
{
    const unsigned char *p = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ULL;        /* FNV-1a */
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* A slot's fastest call (several threads may see calls of one shape at once;
 * the fastest of two at once may be lost, a call's time is a sample). */
static float load_best(tune_slot *e)
{
    float v;
    __atomic_load(&e->best, &v, __ATOMIC_RELAXED);
    return v;
}

static void store_best(tune_slot *e, float v)
{
    __atomic_store(&e->best, &v, __ATOMIC_RELAXED);
}

/* The ready slot holding k, or NULL. */
static tune_slot *slot_of(const conv2d_tune_key *k)
{
    uint64_t h = key_hash(k);
    for (int i = 0; i < TUNE_SLOTS; i++) {
        tune_slot *e = &table[(h + (uint64_t)i) & (TUNE_SLOTS - 1)];
        int state = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
        if (state == SLOT_EMPTY)
            return NULL;
        if (state == SLOT_READY && memcmp(&e->key, k, sizeof *k) == 0)
            return e;
    }
    return NULL;
}

int conv2d_tune_find(const conv2d_tune_key *k, conv2d_tune_choice *out)
{
    tune_slot *e = slot_of(k);
    if (!e)
        return 0;
    out->path = e->choice.path;
    out->threads = __atomic_load_n(&e->choice.threads, __ATOMIC_RELAXED);
    return 1;
}

void conv2d_tune_keep(const conv2d_tune_key *k, conv2d_tune_choice c)
{
    tune_slot *kept_slot = slot_of(k);
    if (kept_slot) {            /* timed again: a new thread count, the same path */
        __atomic_store_n(&kept_slot->choice.threads, c.threads, __ATOMIC_RELAXED);
        store_best(kept_slot, FLT_MAX);
        return;
    }
    uint64_t h = key_hash(k);
    for (int i = 0; i < TUNE_SLOTS; i++) {
        tune_slot *e = &table[(h + (uint64_t)i) & (TUNE_SLOTS - 1)];
        int empty = SLOT_EMPTY;
        if (__atomic_compare_exchange_n(&e->state, &empty, SLOT_WRITING, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            e->key = *k;
            e->choice = c;
            e->uses = 0;
            store_best(e, FLT_MAX);
            __atomic_store_n(&e->state, SLOT_READY, __ATOMIC_RELEASE);
            __atomic_add_fetch(&kept, 1, __ATOMIC_RELAXED);
            return;
        }
    }
}

int conv2d_tune_use(const conv2d_tune_key *k)
{
    tune_slot *e = slot_of(k);
    if (!e)
        return 0;
    int uses = __atomic_load_n(&e->uses, __ATOMIC_RELAXED);
    return uses >= TUNE_USES_MAX ? uses : __atomic_add_fetch(&e->uses, 1, __ATOMIC_RELAXED);
}

void conv2d_tune_seen(const conv2d_tune_key *k, double seconds)
{
    tune_slot *e = slot_of(k);
    if (e && seconds < load_best(e))
        store_best(e, (float)seconds);
}

double conv2d_tune_best(const conv2d_tune_key *k)
{
    tune_slot *e = slot_of(k);
    return e ? load_best(e) : FLT_MAX;
}

void conv2d_tune_set_best(double seconds)
{
    for (int i = 0; i < TUNE_SLOTS; i++)
        store_best(&table[i], (float)seconds);
}

int conv2d_tune_room(void)
{
    return __atomic_load_n(&kept, __ATOMIC_RELAXED) < TUNE_SLOTS / 2;
}

void conv2d_tune_forget(void)
{
    for (int i = 0; i < TUNE_SLOTS; i++)
        __atomic_store_n(&table[i].state, SLOT_EMPTY, __ATOMIC_RELEASE);
    __atomic_store_n(&kept, 0, __ATOMIC_RELAXED);
}

double conv2d_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void conv2d_evict(const float *v, int64_t n)
{
#if defined(__x86_64__)
    for (int64_t i = 0; i < n; i += 64 / (int64_t)sizeof(float))
        _mm_clflush(v + i);
    if (n > 0)
        _mm_clflush(v + n - 1);
    _mm_mfence();
#else
    (void)v, (void)n;
#endif
}

/* Seconds of one run of candidate i after before(arg) (err set on failure). */
static double one_run(int (*run)(void *, int), void (*before)(void *), void *arg, int i,
                      int *err)
{
    if (before)
        before(arg);
    double t0 = conv2d_seconds();
    *err = run(arg, i);
    return conv2d_seconds() - t0;
}

int conv2d_time_fastest(int n, int (*run)(void *arg, int i), void (*before)(void *arg),
                        void *arg, int *fastest)
{
    double best[CONV2D_TIMED_MAX];
    int err = FASTCNN_OK;
    n = n < CONV2D_TIMED_MAX ? n : CONV2D_TIMED_MAX;
    for (int i = 0; i < n && !err; i++) {
        one_run(run, before, arg, i, &err);
        best[i] = 1e300;
    }
    double spent = 0.0;
    for (int round = 0; round < CONV2D_TUNE_MAX_ROUNDS && !err; round++) {
        if (round >= CONV2D_TUNE_ROUNDS && spent >= n * CONV2D_TUNE_MIN_SECONDS)
            break;
        for (int i = 0; i < n && !err; i++) {
            double t = one_run(run, before, arg, i, &err);
            best[i] = t < best[i] ? t : best[i];
            spent += t;
        }
    }
    *fastest = 0;
    for (int i = 1; i < n; i++)
        if (best[i] < best[*fastest])
            *fastest = i;
    return err;
}
