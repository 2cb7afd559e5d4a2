/* conv2d_generic.h - conv2d_kernel.h's loops set up for the portable build:
 * 16-byte vectors (GCC vector extensions; SSE2 on x86-64), 12 accumulators,
 * plain loops for row ends. Included, before any other conv2d header, by the
 * files that hold a portable kernel (conv2d_direct.c, conv2d_kvec.c,
 * conv2d_wgrad.c). */
#ifndef FASTCNN_CONV2D_GENERIC_H
#define FASTCNN_CONV2D_GENERIC_H
#define DIRECT_VBYTES 16
#define DIRECT_ACC 12
#include "conv2d_kernel.h"

#endif /* FASTCNN_CONV2D_GENERIC_H */
