"""sgemm of two builds of fastcnn side by side in one process: this checkout's
and another's (a git worktree of an earlier commit built in place), calls
interleaved, the same operands, the same threads. A change to the kernel or
the driver shows up here as a ratio, where two processes timed one after the
other on a shared machine differ by more than the change.

The other build's extension module is loaded from its file under the name
fastcnn._native (its own copy of the native state: tuning caches, test hooks,
the thread pool); both read the thread count from this checkout's
fastcnn.set_num_threads.

    git worktree add /tmp/base HEAD~1 && (cd /tmp/base && python setup.py build_ext --inplace)
    python bench/gemm_builds.py --base /tmp/base [--threads 1] [--rounds 61] 960x160x49 ...

Each shape is M x K x N (C (M, N) = A (M, K) B (K, N)); output: GFLOP/s of
the median and the best round of each build, and base time / this time.
"""
import argparse
import glob
import importlib.util
import os
import statistics
import time

import numpy as np

import _path
_path.prefer_checkout()  # this checkout's in-place build first
import fastcnn  # noqa: E402
from fastcnn import _native  # noqa: E402


def load_build(root):
    """The _native extension module of the fastcnn build under root."""
    paths = glob.glob(os.path.join(root, "fastcnn", "_native*.so"))
    if not paths:
        raise SystemExit(f"no fastcnn/_native*.so under {root!r}: build it in place first")
    spec = importlib.util.spec_from_file_location("fastcnn._native", paths[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.__file__ == _native.__file__:
        raise SystemExit(f"--base {root!r} is this checkout's own build")
    return module


def shape_of(text):
    try:
        M, K, N = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"shape {text!r}: expected M x K x N, e.g. 960x160x49") from None
    return M, K, N


def compare(base, M, K, N, rounds, rng):
    """Rounds of (base, this) interleaved, each a sample of at least ~10 MFLOP."""
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    c = np.empty((M, N), np.float32)
    reps = max(1, int(1e7 // (2 * M * K * N)))
    times = {"base": [], "this": []}
    for _ in range(rounds):
        for name, module in (("base", base), ("this", _native)):
            t = time.perf_counter()
            for _ in range(reps):
                module.sgemm(a, b, c)
            times[name].append((time.perf_counter() - t) / reps)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="root of the other build (built in place)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=61)
    p.add_argument("shapes", nargs="+", metavar="MxKxN")
    args = p.parse_args(argv)
    shapes = [shape_of(s) for s in args.shapes]
    base = load_build(args.base)
    fastcnn.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"{args.threads} thread(s), {args.rounds} interleaved rounds; GFLOP/s median (best)")
    print(f"{'M x K x N':>18} {'base':>14} {'this':>14} {'base/this time':>15}")
    for M, K, N in shapes:
        times = compare(base, M, K, N, args.rounds, rng)
        gflop = 2e-9 * M * K * N
        med = {k: statistics.median(v) for k, v in times.items()}
        cols = [f"{gflop / med[k]:6.1f} ({gflop / min(times[k]):5.1f})" for k in ("base", "this")]
        print(f"{M:>6}x{K}x{N:<6} {cols[0]:>14} {cols[1]:>14} {med['base'] / med['this']:>15.3f}")


if __name__ == "__main__":
    main()
