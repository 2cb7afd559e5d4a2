/* peak.c - measure the machine's FP32 FMA throughput for the ISA in use, so
 * benchmarks report percent of a measured peak, not of a looked-up one.
 * Each thread runs a register-only loop of independent FMA chains; no memory
 * traffic, so the figure is the arithmetic ceiling of the core. */
#include <time.h>

#include "dispatch.h"
#include "fastcnn.h"

#define PEAK_GENERIC_LANES 48   /* 12 SSE registers' worth: latency x ports */
#define PEAK_TARGET_SECONDS 0.01
#define PEAK_REPEATS 10

static volatile float peak_sink;

float fastcnn_peak_loop_generic(int64_t iters)
{
    float v[PEAK_GENERIC_LANES];
    const float m = 0.999999f, a = 1e-6f;
    for (int j = 0; j < PEAK_GENERIC_LANES; j++)
        v[j] = (float)j;
    for (int64_t i = 0; i < iters; i++)
#pragma GCC unroll 48   /* keeps the lanes in registers, at any -O */
        for (int j = 0; j < PEAK_GENERIC_LANES; j++)
            v[j] = v[j] * m + a;
    float s = 0.0f;
    for (int j = 0; j < PEAK_GENERIC_LANES; j++)
        s += v[j];
    return s;
}

typedef float (*peak_loop)(int64_t iters);

/* The loop of one instruction set and the flops of one of its iterations
 * (chains x lanes x 2). */
typedef struct {
    peak_loop loop;
    double flops_per_iter;
} peak_kernels;

static const peak_kernels peak_kernels_generic = {fastcnn_peak_loop_generic,
                                                  PEAK_GENERIC_LANES * 2};
#ifdef FASTCNN_X86_KERNELS
static const peak_kernels peak_kernels_avx2 = {fastcnn_peak_loop_avx2, 12 * 8 * 2};
static const peak_kernels peak_kernels_avx512 = {fastcnn_peak_loop_avx512, 16 * 16 * 2};
#endif

static const peak_kernels *peak_kernels_for(int isa)
{
    return FASTCNN_KERNELS_FOR(isa, peak_kernels);
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Wall time of `nt` threads each running loop(iters) between two barriers;
 * *ran gets the number of threads that ran it. */
static double timed_run(peak_loop loop, int64_t iters, int nt, int *ran)
{
    double t0 = 0.0, t1 = 0.0;
    float sum = 0.0f;
    int count = 0;
    /* A parallel region, not a loop: each thread writes only its reduction copies. */
    #pragma omp parallel num_threads(nt) if (nt > 1) reduction(+:sum, count)
    {
        #pragma omp barrier
        #pragma omp master
        t0 = now_seconds();
        #pragma omp barrier
        sum += loop(iters);
        count += 1;
        #pragma omp barrier
        #pragma omp master
        t1 = now_seconds();
    }
    peak_sink = sum;
    *ran = count;
    return t1 - t0;
}

double fastcnn_fma_peak_gflops(int nthreads, int *threads_run)
{
    const peak_kernels *kr = peak_kernels_for(fastcnn_isa());
    peak_loop loop = kr->loop;
    double fpi = kr->flops_per_iter;
    int nt = fastcnn_thread_limit(nthreads), ran = 1;
    int64_t iters = 1 << 12;
    double t = timed_run(loop, iters, 1, &ran);
    while (t < PEAK_TARGET_SECONDS / 4) {   /* calibrate on one thread; warms the clocks */
        iters *= 2;
        t = timed_run(loop, iters, 1, &ran);
    }
    iters = (int64_t)((double)iters * PEAK_TARGET_SECONDS / t) + 1;
    double best = 0.0;
    for (int rep = 0; rep < PEAK_REPEATS; rep++) {
        t = timed_run(loop, iters, nt, &ran);
        double gflops = (double)ran * (double)iters * fpi / t * 1e-9;
        if (gflops > best)
            best = gflops;
    }
    *threads_run = ran;
    return best;
}
