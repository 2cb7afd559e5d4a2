/* dispatch.h - per-instruction-set dispatch, one table per op family.
 *
 * Each family defines one struct of function pointers (and the constants
 * that go with them, such as a vector length) and one const table of it per
 * instruction set, named <table>_generic, <table>_avx2 and <table>_avx512;
 * its <family>_kernels_for(isa) returns FASTCNN_KERNELS_FOR(isa, <table>),
 * and the kernels call through the table of fastcnn_isa(). The per-ISA
 * tables exist on x86-64 builds only (FASTCNN_X86_KERNELS). */
#ifndef FASTCNN_DISPATCH_H
#define FASTCNN_DISPATCH_H

#include "fastcnn.h"

#ifdef FASTCNN_X86_KERNELS
#define FASTCNN_KERNELS_FOR(isa, table)                                             \
    ((isa) == FASTCNN_ISA_AVX512 ? &table##_avx512                                  \
     : (isa) == FASTCNN_ISA_AVX2 ? &table##_avx2 : &table##_generic)
#else
#define FASTCNN_KERNELS_FOR(isa, table) ((void)(isa), &table##_generic)
#endif

#endif /* FASTCNN_DISPATCH_H */
