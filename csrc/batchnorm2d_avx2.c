/* batchnorm2d_avx2.c - batch norm's span loops (batchnorm2d_kernel.h)
 * compiled for AVX2 with FMA: 8-float vectors. */
#define BN_VBYTES 32
#include "batchnorm2d_kernel.h"

BATCHNORM2D_DEFINE(avx2)
