"""The direct convolution kernel (forced) against torch on first-layer
shapes, interleaved in one process, same inputs and threads: fastcnn's
median time and torch / fastcnn per shape, on one line. Run it from two
checkouts in turn to compare builds by their ratios to torch (this VM's
absolute times drift).

    python bench/direct_vs_torch.py [THREADS]
"""
import os
import statistics
import sys
import time

import numpy as np
import torch

import _path

_path.prefer_checkout()

import fastcnn  # noqa: E402
from fastcnn import _native  # noqa: E402
from fastcnn import functional as F  # noqa: E402

# (N, C, H = W, K, kernel): CIFAR-net's and LeNet-5's first layers and others
SHAPES = [(256, 3, 32, 32, 3), (64, 1, 28, 6, 5), (64, 6, 14, 16, 5), (32, 3, 64, 16, 3),
          (8, 16, 56, 24, 3)]


def median_pair(f, g, rounds=15):
    ta, tg = [], []
    for _ in range(rounds):
        for f_, ts in ((f, ta), (g, tg)):
            t = time.perf_counter()
            f_()
            ts.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tg)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    fastcnn.set_num_threads(threads)
    torch.set_num_threads(threads)
    _native._set_direct(1)
    _native._set_kvec(-1)
    _native._set_winograd(-1)
    rng = np.random.default_rng(0)
    cells = []
    for N, C, H, K, k in SHAPES:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        w = rng.standard_normal((K, C, k, k), dtype=np.float32)
        b = np.zeros(K, np.float32)
        tx, tw, tb = map(torch.from_numpy, (x, w, b))
        ours = lambda: F.conv2d(x, w, b, 1, k // 2)  # noqa: E731
        peer = lambda: torch.nn.functional.conv2d(tx, tw, tb, 1, k // 2)  # noqa: E731
        with torch.no_grad():
            np.testing.assert_allclose(ours(), peer().numpy(), rtol=1e-3, atol=1e-3)
            a, c = median_pair(ours, peer)
        cells.append(f"{N}x{C}x{H}->{K} k{k}: {a * 1e3:.2f}ms torch/fc {c / a:.2f}")
    print(f"{os.getcwd()}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
