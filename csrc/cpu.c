/* cpu.c - pick the instruction set of the hot kernels once, at run time. */
#include <stdatomic.h>
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
