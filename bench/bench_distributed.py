"""Data-parallel training on MPI ranks against one process with as many threads.

    python bench/bench_distributed.py [--ranks 2] [--images 4096] [--repeats 5]

trains CIFAR-net (BENCHMARKS.md; SGD with momentum, global batch 64) for one
epoch of ``--images`` synthetic 3x32x32 images, alternately as ``--ranks``
MPI ranks x 1 thread (``mpiexec -n R``) and as 1 process x R threads, and
prints the median epoch times, their ratio (one process's time over the
ranks'; >= 1 means the ranks are faster), the gradient all-reduce time
per step inside training (which includes waiting for the slower rank), the
bare all-reduce time of the same buffer after a barrier, and the bytes per
step. Each run is a fresh process; the epoch is timed after a warm-up step.
Needs mpi4py and mpiexec (pip install "fastcnn[mpi]"); results go to
bench/DISTRIBUTED.md by hand.

Run by the driver, ``--worker`` is one such run (its rank 0 prints one JSON line).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

import _path
from models import INPUT, SPECS

BATCH = 64


def cifar_net(fastcnn):
    make = {"conv": lambda i, o, k, s, p: fastcnn.Conv2d(i, o, k, stride=s, padding=p),
            "relu": fastcnn.ReLU, "maxpool": fastcnn.MaxPool2d, "flatten": fastcnn.Flatten,
            "linear": fastcnn.Linear}
    return fastcnn.Sequential(*[make[kind](*args) for kind, *args in SPECS["CIFAR-net"]],
                              seed=0)


def worker(images, threads):
    """One timed epoch; rank 0 prints its figures as a JSON line."""
    _path.prefer_checkout()
    import fastcnn
    from fastcnn import distributed
    fastcnn.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((images,) + INPUT["CIFAR-net"]).astype(np.float32)
    y = rng.integers(0, 10, images).astype(np.int64)
    model = cifar_net(fastcnn)
    opt = fastcnn.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if distributed.launched() > 1:
        opt = distributed.DistributedOptimizer(opt)
    model.fit(x[:BATCH], y[:BATCH], epochs=1, batch_size=BATCH, optimizer=opt, verbose=0)
    reduce_before = getattr(opt, "allreduce_seconds", 0.0)
    start = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=BATCH, optimizer=opt, seed=1, verbose=0)
    seconds = time.perf_counter() - start
    steps = -(-images // BATCH)
    figures = {"ranks": distributed.size(), "threads": fastcnn.get_num_threads(),
               "epoch_s": seconds, "steps": steps,
               "grad_bytes": int(opt._flat()[1].nbytes),
               "allreduce_in_step_s": (getattr(opt, "allreduce_seconds", 0.0)
                                       - reduce_before) / steps,
               "allreduce_bare_s": bare_allreduce(opt) if distributed.size() > 1 else 0.0}
    if distributed.rank() == 0:
        print(json.dumps(figures), flush=True)


def bare_allreduce(opt, repeats=20):
    """Median time of the gradient all-reduce alone, the ranks lined up by a barrier."""
    from mpi4py import MPI
    comm, grad, times = MPI.COMM_WORLD, opt._flat()[1], []
    for _ in range(repeats):
        comm.Barrier()
        start = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, grad, op=MPI.SUM)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(command, env):
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def driver(ranks, images, repeats):
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or \
        shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit('no mpiexec: pip install "fastcnn[mpi]"')
    me = [sys.executable, os.path.abspath(__file__), "--worker", "--images", str(images)]
    env = dict(os.environ, HYDRA_LAUNCHER="fork")
    env.pop("OMP_NUM_THREADS", None)
    single, multi = [], []
    for _ in range(repeats):     # interleaved: machine load hits both alike
        single.append(run(me + ["--threads", str(ranks)], env))
        multi.append(run([mpiexec, "-n", str(ranks)] + me + ["--threads", "1"], env))
    report(single, multi, ranks, images, repeats)


def report(single, multi, ranks, images, repeats):
    def med(runs, key):
        return statistics.median(r[key] for r in runs)
    one, many = med(single, "epoch_s"), med(multi, "epoch_s")
    steps = multi[0]["steps"]
    grad_bytes = multi[0]["grad_bytes"]
    in_step, bare = med(multi, "allreduce_in_step_s"), med(multi, "allreduce_bare_s")
    print(f"CIFAR-net, one epoch of {images} images, global batch {BATCH} ({steps} steps), "
          f"SGD momentum; medians of {repeats} interleaved runs")
    print(f"1 process x {ranks} threads: {one:.2f} s  (runs: "
          + ", ".join(f"{r['epoch_s']:.2f}" for r in single) + ")")
    print(f"{ranks} ranks x 1 thread:     {many:.2f} s  (runs: "
          + ", ".join(f"{r['epoch_s']:.2f}" for r in multi) + ")")
    print(f"ratio (1 process time / {ranks} ranks time): {one / many:.2f}")
    print(f"step time on {ranks} ranks: {1e3 * many / steps:.1f} ms; gradient all-reduce in "
          f"the step: {1e3 * in_step:.2f} ms ({100 * in_step * steps / many:.1f}% of the step, "
          f"waiting for the slower rank included); bare all-reduce: {1e3 * bare:.3f} ms")
    print(f"gradient bytes per step: {grad_bytes:,} per rank (P = {grad_bytes // 4:,} floats; "
          f"a ring all-reduce moves 2(N-1)/N x P x 4 = "
          f"{2 * (ranks - 1) / ranks * grad_bytes:,.0f} bytes per rank and step)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.worker:
        worker(args.images, args.threads)
    else:
        driver(args.ranks, args.images, args.repeats)


if __name__ == "__main__":
    main()
