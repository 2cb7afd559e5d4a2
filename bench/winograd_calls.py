"""Times Winograd F(2x2, 3x3) convolutions (forced: `_set_winograd(1)`, no
timing of other paths) for one build of fastcnn: batch 64, 3x3, padding 1,
the CIFAR-net and small-map ResNet shapes; medians of 15 calls (after one
warm-up call), ms, forward and backward (grad input, weight and bias).

Compare two builds by alternating processes, e.g. a worktree of the old
commit built in place:

    for i in 1 2; do python bench/winograd_calls.py /tmp/w/base 1
                     python bench/winograd_calls.py . 1; done
"""
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else ".")
import fastcnn  # noqa: E402
from fastcnn import _native  # noqa: E402
from fastcnn import functional as F  # noqa: E402

SHAPES = [(32, 32, 32), (32, 64, 16), (64, 64, 16), (64, 64, 8), (128, 128, 8)]   # C, K, H = W
N = 64


def median_ms(f, n=15):
    f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main():
    fastcnn.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    _native._set_tune(False)
    _native._set_winograd(1)
    r = np.random.default_rng(0)
    print(f"{sys.argv[1] if len(sys.argv) > 1 else '.'}: fwd / bwd ms")
    for C, K, H in SHAPES:
        x = r.standard_normal((N, C, H, H), dtype=np.float32)
        w = (r.standard_normal((K, C, 3, 3)) / np.sqrt(C * 9)).astype(np.float32)
        b = np.zeros(K, np.float32)
        dy = r.standard_normal((N, K, H, H), dtype=np.float32)
        fwd = median_ms(lambda: F.conv2d(x, w, b, 1, 1))
        bwd = median_ms(lambda: F.conv2d_backward(dy, x, w, 1, 1))
        print(f"  {C}->{K} {H}x{H}: {fwd:.2f} / {bwd:.2f}", flush=True)


if __name__ == "__main__":
    main()
