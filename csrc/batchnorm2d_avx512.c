/* batchnorm2d_avx512.c - batch norm's span loops (batchnorm2d_kernel.h)
 * compiled for AVX-512: 16-float vectors. */
#define BN_VBYTES 64
#include "batchnorm2d_kernel.h"

BATCHNORM2D_DEFINE(avx512)
