"""Stride-2 first layers (MobileNetV2's and ResNet's stems) on each
convolution path forced (direct, channel-vector, im2col + GEMM) and in
torch, interleaved in one process on the same inputs and threads: median
ms per call, and each path's time over the direct kernel's (above 1: the
direct kernel is faster). Outputs are compared with torch's first.

    python bench/stem_paths.py [THREADS] [ROUNDS]

Idle threads sleep (OMP_WAIT_POLICY=PASSIVE unless set), as in the report's
default mode: torch's spinning OpenMP workers otherwise hold the cores that
the next fastcnn call's threads wait for.
"""
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import _path  # noqa: E402

_path.prefer_checkout()

import fastcnn  # noqa: E402
from fastcnn import _native  # noqa: E402
from fastcnn import functional as F  # noqa: E402

# (N, C, H = W, K, kernel), stride 2, padding kernel // 2
SHAPES = [(1, 3, 224, 32, 3), (32, 3, 64, 32, 3), (1, 3, 224, 64, 7), (8, 3, 224, 64, 7),
          (64, 3, 32, 64, 7)]
PATHS = {"direct": (1, -1), "kvec": (-1, 1), "gemm": (-1, -1)}   # (_set_direct, _set_kvec)


def forced(path, x, w, b):
    direct, kvec = PATHS[path]
    old = _native._set_direct(direct), _native._set_kvec(kvec), _native._set_winograd(-1)
    try:
        return F.conv2d(x, w, b, 2, w.shape[2] // 2)
    finally:
        _native._set_direct(old[0])
        _native._set_kvec(old[1])
        _native._set_winograd(old[2])


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    fastcnn.set_num_threads(threads)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    print(f"{threads} thread(s), {rounds} interleaved rounds, median ms\n")
    print("| N x C x H -> K, kernel | direct | kvec | gemm | torch | kvec / direct "
          "| gemm / direct | torch / direct |\n|---|---|---|---|---|---|---|---|")
    for N, C, H, K, k in SHAPES:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        w = rng.standard_normal((K, C, k, k), dtype=np.float32)
        b = rng.standard_normal(K, dtype=np.float32)
        tx, tw, tb = map(torch.from_numpy, (x, w, b))
        calls = {p: (lambda p=p: forced(p, x, w, b)) for p in PATHS}
        calls["torch"] = lambda: torch.nn.functional.conv2d(tx, tw, tb, 2, k // 2)
        with torch.no_grad():
            want = calls["torch"]().numpy()
            for p in PATHS:
                np.testing.assert_allclose(calls[p](), want, rtol=1e-3, atol=1e-3)
            times = {p: [] for p in calls}
            for _ in range(rounds):
                for p, f in calls.items():
                    t = time.perf_counter()
                    f()
                    times[p].append(time.perf_counter() - t)
        med = {p: 1e3 * statistics.median(v) for p, v in times.items()}
        d = med["direct"]
        print(f"| {N}x{C}x{H} -> {K}, {k}x{k} | {d:.3f} | {med['kvec']:.3f} | "
              f"{med['gemm']:.3f} | {med['torch']:.3f} | {med['kvec'] / d:.2f} | "
              f"{med['gemm'] / d:.2f} | {med['torch'] / d:.2f} |")


if __name__ == "__main__":
    main()
