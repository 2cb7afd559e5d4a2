"""What waking a sleeping worker costs here: fastcnn.functional.relu on
64x56x56 floats (a parallel loop) timed right after other fastcnn work
(its workers awake), and after a 1 ms sleep (asleep). Medians in us of
2000 calls each, twice, on the threads asked for.

    python bench/wake_latency.py [THREADS]
"""
import statistics
import sys
import time

import numpy as np

import _path

_path.prefer_checkout()

import fastcnn  # noqa: E402
from fastcnn import functional as F  # noqa: E402


def relu_after(before, a, rounds=2000):
    times = []
    for _ in range(rounds):
        before()
        t0 = time.perf_counter()
        F.relu(a)
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    fastcnn.set_num_threads(threads)
    a = np.random.default_rng(0).standard_normal(64 * 56 * 56).astype(np.float32)
    b = a.copy()
    print(f"{threads} thread(s), relu on {a.size} floats, median us")
    for _ in range(2):
        print(f"  after an add (workers awake): {relu_after(lambda: F.add(a, b), a):7.1f}")
        print(f"  after a 1 ms sleep:           {relu_after(lambda: time.sleep(0.001), a):7.1f}")


if __name__ == "__main__":
    main()
