"""Large outputs with and without fastcnn's block cache (csrc/blocks.c): the
same calls in alternating child processes, FASTCNN_CACHE_MB unset (the
default cache) and 0 (numpy's own allocator: a large output comes fresh from
the system unless glibc kept the freed block, below its mmap threshold).
Medians of each process's calls, then the median over processes.

    python bench/block_cache.py [--threads 1] [--pairs 4] [--calls 30]
"""
import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time
import numpy as np
import fastcnn
from fastcnn import functional as F
fastcnn.set_num_threads(int(sys.argv[1]))
calls = int(sys.argv[2])
r = np.random.default_rng(0)
x = r.standard_normal((64, 64, 56, 56), dtype=np.float32)       # 51 MB
y, idx = F.max_pool2d(x, 2, 2, 0, return_indices=True)
gy = r.standard_normal(y.shape, dtype=np.float32)
xb, gb = x[:32], x[32:]                                            # 25.7 MB each
w, mean, invstd = np.ones(64, np.float32), np.zeros(64, np.float32), np.ones(64, np.float32)
cases = {
    "maxpool 2x2 bwd, 64x64x56x56": lambda: F.max_pool2d_backward(gy, idx, x.shape),
    "avgpool 2x2 bwd, 64x64x56x56": lambda: F.avg_pool2d_backward(gy, x.shape, 2, 2, 0),
    "relu fwd, 64x64x56x56": lambda: F.relu(x),
    "batch norm bwd, 32x64x56x56": lambda: F.batch_norm2d_backward(gb, xb, w, 1e-5, mean=mean,
                                                                   invstd=invstd),
}
for name, fn in cases.items():
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    print(name, "\t", sorted(times)[calls // 2] * 1e3)
"""


def run(threads, calls, cache_mb):
    env = dict(os.environ)
    env.pop("FASTCNN_CACHE_MB", None)
    if cache_mb is not None:
        env["FASTCNN_CACHE_MB"] = cache_mb
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(calls)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return {line.split("\t")[0].strip(): float(line.split("\t")[1]) for line in out.splitlines()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--calls", type=int, default=30)
    a = ap.parse_args()
    runs = {"cache": [], "none": []}
    for _ in range(a.pairs):
        runs["none"].append(run(a.threads, a.calls, "0"))
        runs["cache"].append(run(a.threads, a.calls, None))
    print(f"command: python bench/block_cache.py --threads {a.threads} --pairs {a.pairs} "
          f"--calls {a.calls}\n")
    print("| call | no cache (ms) | cache (ms) | speedup |\n|---|---|---|---|")
    for name in runs["cache"][0]:
        old = statistics.median(r[name] for r in runs["none"])
        new = statistics.median(r[name] for r in runs["cache"])
        print(f"| {name} | {old:.2f} | {new:.2f} | {old / new:.2f} |")


if __name__ == "__main__":
    main()
