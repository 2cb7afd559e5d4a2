/* conv2d_depthwise_avx2.c - the depthwise convolution's loops
 * (conv2d_depthwise_kernel.h) compiled for AVX2 + FMA: 8-float vectors. */
#define DEPTHWISE_VBYTES 32
#include "conv2d_depthwise_kernel.h"

DEPTHWISE_DEFINE(avx2)
