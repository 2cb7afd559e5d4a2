/* conv2d_avx512.h - conv2d_kernel.h's loops set up for AVX-512: 16-float
 * vectors; the direct tile holds 8 channels x 3 vectors (24 of the 32 zmm
 * registers), the channel-vector tile 14 positions x 2 vectors; masked
 * stores and loads for row ends and the stride-1 im2col. Included by the
 * conv2d_<algorithm>_avx512.c files, each compiled with AVX-512 flags. */
#ifndef FASTCNN_CONV2D_AVX512_H
#define FASTCNN_CONV2D_AVX512_H
#define DIRECT_VBYTES 64
#define DIRECT_ACC 24
#define KVEC_ACC 28             /* 14 positions x 2 vectors, + 2 weights + 1 broadcast */
#define DIRECT_STORE_PART(dst, vec, n) \
    _mm512_mask_storeu_ps(dst, (__mmask16)((1u << (n)) - 1), (__m512)(vec))
#include <immintrin.h>

/* Lanes [lo, hi) of a 16-lane vector, as a mask (lo, hi clipped to 0..16). */
static inline __mmask16 lane_range(int64_t lo, int64_t hi)
{
    lo = lo < 0 ? 0 : lo > 16 ? 16 : lo;
    hi = hi < lo ? lo : hi > 16 ? 16 : hi;
    return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}
#define DIRECT_LOAD_RANGE(src, lo, hi) ((dvec)_mm512_maskz_loadu_ps(lane_range(lo, hi), src))
#include "conv2d_kernel.h"

#endif /* FASTCNN_CONV2D_AVX512_H */
