/* pointwise_avx512.c - hardtanh's loops (pointwise_kernel.h) compiled for
 * AVX-512: 16-float vectors. */
#include "pointwise_kernel.h"

POINTWISE_HARDTANH_DEFINE(avx512)
