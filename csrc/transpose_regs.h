/* transpose_regs.h - square blocks of floats held in vector registers,
 * transposed in place: 16 x 16 for AVX-512 (transpose16), 8 x 8 for AVX2
 * (transpose8). Shared by the GEMM packing (csrc/gemm/kernel_*.c) and the
 * channel-vector convolution's epilogue (conv2d_avx*.h); each is defined
 * only where its instruction set is enabled. */
#ifndef FASTCNN_TRANSPOSE_REGS_H
#define FASTCNN_TRANSPOSE_REGS_H
#include <immintrin.h>

#ifdef __AVX512F__
/* Transpose a 16 x 16 block held in r[0..15] (rows) in place. */
static inline __attribute__((always_inline)) void transpose16(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {           /* pairs of rows, interleaved by element */
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {           /* u[4i+q], lane L: column 4L+q of rows 4i..4i+3 */
        __m512d a0 = _mm512_castps_pd(t[4 * i]), a1 = _mm512_castps_pd(t[4 * i + 1]);
        __m512d b0 = _mm512_castps_pd(t[4 * i + 2]), b1 = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, b0));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, b0));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, b1));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, b1));
    }
    for (int q = 0; q < 4; q++) {           /* gather lane L of u[q], u[4+q], u[8+q], u[12+q] */
        __m512 v0 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0x44);
        __m512 v1 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0xEE);
        __m512 w0 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0x44);
        __m512 w1 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0xEE);
        r[q] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[4 + q] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
        r[8 + q] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[12 + q] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
    }
}
#endif

#ifdef __AVX2__
/* Transpose an 8 x 8 block held in r[0..7] (rows) in place. */
static inline __attribute__((always_inline)) void transpose8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {           /* pairs of rows, interleaved by element */
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {           /* u[4i+q], half h: column 4h+q of rows 4i..4i+3 */
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int q = 0; q < 4; q++) {           /* column q from the low halves, 4 + q from the high */
        r[q] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x20);
        r[4 + q] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x31);
    }
}
#endif

#endif /* FASTCNN_TRANSPOSE_REGS_H */
