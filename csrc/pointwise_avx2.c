/* pointwise_avx2.c - hardtanh's loops (pointwise_kernel.h) compiled for
 * AVX2: 8-float vectors. */
#include "pointwise_kernel.h"

POINTWISE_HARDTANH_DEFINE(avx2)
