"""Concurrent inference on one model: N Python threads calling ``predict`` on
the same eval-mode model at once (1 OpenMP thread each), against the same
calls made one after another. Results must be bit-identical to the
sequential ones; the speedup is sequential time / concurrent time.

    python bench/concurrency.py [--threads 8] [--rounds 5]

Prints a Markdown table (model, batch, sequential ms, concurrent ms, speedup),
medians of interleaved rounds."""
import argparse
import os
import threading
import time

import _path
_path.prefer_checkout()  # this checkout's in-place build first
import numpy as np

import fastcnn
import models


def sequential(model, xs):
    return [model.predict(x) for x in xs]


def concurrent(model, xs, threads):
    out = [None] * len(xs)
    barrier = threading.Barrier(threads)

    def work(k):
        barrier.wait()
        for i in range(k, len(xs), threads):
            out[i] = model.predict(xs[i])

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    fastcnn.set_num_threads(1)
    print(f"fastcnn {fastcnn.__version__}, {os.cpu_count()} CPUs, {args.threads} Python threads "
          f"x 1 OpenMP thread, median of {args.rounds} interleaved rounds\n")
    print("| model | batch | predict calls | sequential ms | concurrent ms | speedup |")
    print("|---|---|---|---|---|---|")
    for name, n, calls in (("LeNet-5", 1, 1024), ("LeNet-5", 16, 256), ("CIFAR-net", 4, 64),
                           ("CIFAR-net", 32, 16)):
        model = models.fastcnn_model(name).eval()
        xs = [models.batch(name, n, seed=i)[0] for i in range(calls)]
        expected = sequential(model, xs)
        if not all(np.array_equal(a, b) for a, b in zip(concurrent(model, xs, args.threads),
                                                         expected)):
            raise SystemExit(f"{name}: concurrent results differ from sequential ones")
        seq, con = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            sequential(model, xs)
            seq.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            concurrent(model, xs, args.threads)
            con.append(time.perf_counter() - t0)
        s, c = np.median(seq), np.median(con)
        print(f"| {name} | {n} | {calls} | {s * 1e3:.1f} | {c * 1e3:.1f} | {s / c:.2f} |")


if __name__ == "__main__":
    main()
