"""Times the pooling calls of bench/POOL2D.md on 64x64x56x56 for one build of
fastcnn: medians of 25 calls (after 2 warm-up calls), ms, in this order:
max_pool2d 3x3 s2 p1 (values), max_pool2d 2x2 (values), max_pool2d_backward
2x2, max_pool2d 3x3 s2 p1 with indices, max_pool2d 2x2 with indices,
avg_pool2d 3x3 s2 p1, avg_pool2d 2x2, avg_pool2d_backward 3x3 s2 p1,
avg_pool2d_backward 2x2.

Compare two builds by alternating processes, e.g. a worktree of the old
commit built in place:

    for i in 1 2 3; do python bench/pool2d_calls.py /tmp/w/base 1
                       python bench/pool2d_calls.py . 1; done
"""
import sys
import time

import numpy as np

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else ".")
import fastcnn  # noqa: E402
from fastcnn import functional as F  # noqa: E402


def median_ms(f, n=25):
    f()
    f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main():
    fastcnn.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    x = np.random.default_rng(0).standard_normal((64, 64, 56, 56)).astype(np.float32)
    _, idx = F.max_pool2d(x, 2, return_indices=True)
    dy = np.ones(idx.shape, np.float32)
    dy3 = np.ones(F.avg_pool2d(x, 3, 2, 1).shape, np.float32)
    calls = [lambda: F.max_pool2d(x, 3, 2, 1), lambda: F.max_pool2d(x, 2),
             lambda: F.max_pool2d_backward(dy, idx, x.shape),
             lambda: F.max_pool2d(x, 3, 2, 1, return_indices=True),
             lambda: F.max_pool2d(x, 2, return_indices=True),
             lambda: F.avg_pool2d(x, 3, 2, 1), lambda: F.avg_pool2d(x, 2),
             lambda: F.avg_pool2d_backward(dy3, x.shape, 3, 2, 1),
             lambda: F.avg_pool2d_backward(dy, x.shape, 2)]
    print(" ".join(f"{median_ms(f):.2f}" for f in calls))


if __name__ == "__main__":
    main()
