"""Batch norm's backward (32x64x56x56, 1 thread) with its output at page
offsets around its inputs' (numpy's large arrays start 0x10 into a page): an
output a little past its inputs modulo 4096 makes loads wait on unrelated
stores (4K aliasing). The kernel is called through ctypes, so that the
offsets are exact. Medians of 15 interleaved rounds.

    python bench/store_offset.py
"""
import ctypes
import time

import numpy as np

import fastcnn._native

lib = ctypes.CDLL(fastcnn._native.__file__)
P, I = ctypes.c_void_p, ctypes.c_int64
lib.batchnorm2d_backward.argtypes = [P] * 8 + [I, I, I, ctypes.c_int]
N, C, HW = 32, 64, 56 * 56
OUT_OFFSETS = (0x0, 0x10, 0x40, 0x80, 0x100, 0x400, 0x8c0)


def at_offset(offset, n):
    """A float32 array of n elements starting `offset` bytes into a page."""
    raw = np.empty(n * 4 + 8192, np.uint8)
    start = (-raw.ctypes.data) % 4096 + offset
    return raw[start:start + n * 4].view(np.float32)


def main():
    r = np.random.default_rng(0)
    x, dy = at_offset(0x10, N * C * HW), at_offset(0x10, N * C * HW)
    x[:], dy[:] = r.standard_normal(x.size), r.standard_normal(dy.size)
    mean, invstd, w = np.zeros(C, np.float32), np.ones(C, np.float32), np.ones(C, np.float32)
    dgamma, dbeta = np.zeros(C, np.float32), np.zeros(C, np.float32)
    outs = {o: at_offset(o, x.size) for o in OUT_OFFSETS}
    times = {o: [] for o in outs}
    for _ in range(15):
        for o, dx in outs.items():
            t0 = time.perf_counter()
            lib.batchnorm2d_backward(dx.ctypes.data, dgamma.ctypes.data, dbeta.ctypes.data,
                                     dy.ctypes.data, x.ctypes.data, mean.ctypes.data,
                                     invstd.ctypes.data, w.ctypes.data, N, C, HW, 1)
            times[o].append(time.perf_counter() - t0)
    print("inputs at page offset 0x10\n\n| output's page offset | ms |\n|---|---|")
    for o, t in times.items():
        print(f"| {o:#x} | {np.median(t) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
