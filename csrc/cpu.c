/* cpu.c - pick the instruction set of the hot kernels once, at run time. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastcnn.h"

int fastcnn_cpu_isa(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return FASTCNN_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FASTCNN_ISA_AVX2;
#endif
    return FASTCNN_ISA_GENERIC;
}

const char *fastcnn_isa_name(int isa)
{
    switch (isa) {
    case FASTCNN_ISA_AVX512: return "avx512";
    case FASTCNN_ISA_AVX2: return "avx2";
    default: return "generic";
    }
}

/* The ISA asked for by FASTCNN_ISA, or -1 if unset or unknown. */
static int requested_isa(void)
{
    const char *v = getenv("FASTCNN_ISA");
    if (v == NULL)
        return -1;
    for (int isa = FASTCNN_ISA_GENERIC; isa <= FASTCNN_ISA_AVX512; isa++)
        if (strcmp(v, fastcnn_isa_name(isa)) == 0)
            return isa;
    return -1;
}

int fastcnn_isa(void)
{
    /* atomic: several threads may resolve it at once (they agree on the value) */
    static atomic_int resolved = -1;
    int isa = atomic_load_explicit(&resolved, memory_order_relaxed);
    if (isa < 0) {
        isa = fastcnn_cpu_isa();
        int asked = requested_isa();
        if (asked >= 0 && asked < isa)
            isa = asked;
        atomic_store_explicit(&resolved, isa, memory_order_relaxed);
    }
    return isa;
}

/* Size in bytes of the data (or unified) cache of level `want` that Linux
 * describes in sysfs for cpu 0 (what lscpu reports; want 0: the highest
 * level there is), or 0 if none. The C library's sysconf is not used: on
 * AMD it reports the L3 of the whole socket (256 MiB on a 32 MiB-per-CCX
 * EPYC). */
static int64_t sysfs_cache_bytes(int want)
{
    int64_t best = 0;
    int best_level = 0;
    for (int i = 0; i < 8; i++) {
        char path[96], type[32] = "";
        int level = 0;
        long kib = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        int ok = fscanf(f, "%d", &level) == 1;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
        f = fopen(path, "r");
        ok = ok && f && fscanf(f, "%31s", type) == 1;
        if (f)
            fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        f = fopen(path, "r");
        ok = ok && f && fscanf(f, "%ldK", &kib) == 1;
        if (f)
            fclose(f);
        if (ok && strcmp(type, "Instruction") != 0 && (want ? level == want : level > best_level)
            && kib > 0) {
            best_level = level;
            best = (int64_t)kib << 10;
        }
    }
    return best;
}

/* *resolved: the size of the cache of `level` (sysfs_cache_bytes), or
 * fallback where the system does not say, read on the first call. */
static int64_t cache_bytes_once(_Atomic int64_t *resolved, int level, int64_t fallback)
{
    int64_t b = atomic_load_explicit(resolved, memory_order_relaxed);
    if (b == 0) {
        b = sysfs_cache_bytes(level);
        b = b > 0 ? b : fallback;
        atomic_store_explicit(resolved, b, memory_order_relaxed);
    }
    return b;
}

int64_t fastcnn_llc_bytes(void)
{
    static _Atomic int64_t resolved = 0;
    return cache_bytes_once(&resolved, 0, (int64_t)8 << 20);
}

int64_t fastcnn_l2_bytes(void)
{
    static _Atomic int64_t resolved = 0;
    return cache_bytes_once(&resolved, 2, (int64_t)512 << 10);
}
