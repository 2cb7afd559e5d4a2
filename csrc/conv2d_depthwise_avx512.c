/* conv2d_depthwise_avx512.c - the depthwise convolution's loops
 * (conv2d_depthwise_kernel.h) compiled for AVX-512: 16-float vectors. */
#define DEPTHWISE_VBYTES 64
#include "conv2d_depthwise_kernel.h"

DEPTHWISE_DEFINE(avx512)
