"""sgemm: fastcnn's engine against numpy's matmul (OpenBLAS), side by side in
one process, same inputs, same thread count, interleaved, medians.

Run from the repository root after an in-place build:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/gemm_vs_numpy.py

(OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow OpenBLAS down on these machines;
the script refuses to run with them set.) Prints a markdown table: GFLOP/s of
each, the ratio fastcnn / numpy (time of numpy over time of fastcnn; higher
is better) and fastcnn's share of the FP32 peak (--peak GFLOP/s per core).
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import time

for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    if var in os.environ:
        sys.exit(f"{var} is set, which slows numpy's OpenBLAS; run under "
                 "`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/gemm_vs_numpy.py`")

import numpy as np                                      # noqa: E402  (after the check)
from threadpoolctl import threadpool_info, threadpool_limits   # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastcnn                                          # noqa: E402
from fastcnn import _native                         # noqa: E402

# name, M, N, K, trans_a, trans_b
SQUARE = [(f"square {n}", n, n, n, False, False) for n in (256, 512, 1024, 2048)]
# conv as GEMM per image, (K, CRS) x (CRS, PQ), and its two backward products;
# linear layers (batch 64) as x (N, F) W^T.
CONV = [
    ("res_28 fwd  (K,CRS)x(CRS,PQ)", 128, 784, 1152, False, False),
    ("res_28 bwd-data W^T dY", 1152, 784, 128, True, False),
    ("res_28 bwd-weight dY col^T", 128, 1152, 784, False, True),
    ("vgg_56 fwd", 64, 3136, 576, False, False),
    ("pw_14 fwd", 256, 196, 256, False, False),
    ("mnist_c1 fwd (K=9)", 32, 784, 9, False, False),
    ("cifar_c1 fwd (K=27)", 64, 1024, 27, False, False),
    ("lenet_c1 fwd (K=25)", 6, 784, 25, False, False),
    ("mnist_c1 fwd, batch 64 (N=64*784)", 32, 50176, 9, False, False),
    ("linear 4096->256, batch 64", 64, 256, 4096, False, True),
    ("linear 400->120, batch 64", 64, 120, 400, False, True),
]


def timer(fn, target, clock):
    """A sample: fn repeated so that one sample takes about `target` seconds."""
    fn()
    t = clock()
    fn()
    once = max(clock() - t, 1e-7)
    reps = max(1, int(target / once))

    def sample():
        t0 = clock()
        for _ in range(reps):
            fn()
        return (clock() - t0) / reps
    return sample


def measure(M, N, K, ta, tb, threads, samples, target, rng, clock):
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    c_ours = np.empty((M, N), np.float32)
    c_np = np.empty((M, N), np.float32)
    opa, opb = (a.T if ta else a), (b.T if tb else b)

    def ours():
        _native.sgemm(a, b, c_ours, trans_a=ta, trans_b=tb)

    def theirs():
        np.matmul(opa, opb, out=c_np)

    fastcnn.set_num_threads(threads)
    with threadpool_limits(limits=threads, user_api="blas"):
        s_ours, s_np = timer(ours, target, clock), timer(theirs, target, clock)
        t_ours, t_np = [], []
        for _ in range(samples):           # interleaved: A B A B ...
            t_ours.append(s_ours())
            t_np.append(s_np())
    err = np.abs(c_ours - c_np).max() / max(1e-30, np.abs(c_np).max())
    assert err < 1e-4, f"results differ: relative max error {err}"
    return statistics.median(t_ours), statistics.median(t_np)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--samples", type=int, default=15, help="interleaved samples per side")
    ap.add_argument("--target", type=float, default=0.02, help="seconds per sample")
    ap.add_argument("--peak", type=float, default=269.0, help="FP32 peak GFLOP/s per core")
    ap.add_argument("--only", default="", help="run the rows whose name contains this")
    ap.add_argument("--no-conv", action="store_true", help="square sizes only")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: perf_counter (default); cpu: the process's CPU time, which "
                         "ignores time slices lost to other processes on a busy machine "
                         "(meaningful at 1 thread only: at more it also counts waiting)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    rows = SQUARE + ([] if args.no_conv else CONV)
    rows = [r for r in rows if args.only in r[0]]
    blas = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    print(f"# sgemm vs numpy, {datetime.date.today()}, {platform.node()}, "
          f"{platform.processor() or platform.machine()}, fastcnn isa={_native.isa()}, "
          f"numpy {np.__version__} with {', '.join(blas)}")
    print(f"# command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"# clock: {args.clock}; medians of {args.samples} interleaved samples; load average "
          f"before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| shape | M | N | K | op | threads | fastcnn GFLOP/s | numpy GFLOP/s "
          "| ratio | % of peak |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for threads in [int(t) for t in args.threads.split(",")]:
        for name, M, N, K, ta, tb in rows:
            t_ours, t_np = measure(M, N, K, ta, tb, threads, args.samples, args.target, rng,
                                   clock)
            flops = 2.0 * M * N * K
            op = ("T" if ta else "N") + ("T" if tb else "N")
            print(f"| {name} | {M} | {N} | {K} | {op} | {threads} | {flops / t_ours / 1e9:.1f} "
                  f"| {flops / t_np / 1e9:.1f} | {t_np / t_ours:.2f} "
                  f"| {100 * flops / t_ours / 1e9 / (args.peak * threads):.0f}% |", flush=True)


if __name__ == "__main__":
    main()
