"""The dense path (csrc/conv2d_dense.c) on ResNet-18's late convolutions at
3x32x32, batch 64: forward, backward data and weight gradient, ms, with the
dense path never taken, always taken, and by timing (the default). dx is
the time of the backward with the input gradient minus the time without it.

    python bench/conv2d_dense.py [--threads 1] [--repeats 21]
"""
import argparse
from functools import partial

import numpy as np

from harness import median_ms as _median_ms   # this checkout's in-place build first
import fastcnn
from fastcnn import _native
from fastcnn import functional as F

# (C, K, input size, stride) of 3x3 convolutions with padding 1
SHAPES = [(256, 256, 2, 1), (256, 512, 2, 2), (512, 512, 1, 1), (128, 256, 4, 2),
          (128, 128, 4, 1)]


# the probes' median of `repeats` timed calls after two untimed ones
median_ms = partial(_median_ms, warmup=2)


def ops(C, K, H, stride, repeats, rng):
    x = rng.standard_normal((64, C, H, H)).astype(np.float32)
    w = (0.05 * rng.standard_normal((K, C, 3, 3))).astype(np.float32)
    dy = rng.standard_normal(F.conv2d(x, w, None, stride, 1).shape).astype(np.float32)
    fwd = median_ms(lambda: F.conv2d(x, w, None, stride, 1), repeats)
    both = median_ms(lambda: F.conv2d_backward(dy, x, w, stride, 1, has_bias=False), repeats)
    dw = median_ms(lambda: F.conv2d_backward(dy, x, w, stride, 1, has_bias=False,
                                             need_grad_input=False), repeats)
    return fwd, both - dw, dw


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=21)
    args = p.parse_args()
    fastcnn.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"threads {args.threads}, kernels {_native.isa()}; ms: fwd / dx / dw")
    print("| conv (3x3, padding 1) | never | always | by timing |")
    print("|---|---|---|---|")
    for C, K, H, stride in SHAPES:
        cells = []
        for mode in (-1, 1, 0):
            old = _native._set_dense(mode)
            try:
                cells.append(" / ".join(f"{t:.2f}" for t in ops(C, K, H, stride, args.repeats,
                                                              rng)))
            finally:
                _native._set_dense(old)
        print(f"| {C}->{K}, {H}x{H}, s{stride} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
