"""Where thread scaling stops (issue 11): the fastcnn side of bench/scaling.py's
batch-256 inference and batch-64 training rows, profiled node by node with
fastcnn.profile at each thread count (fastcnn alone in the process).

The machine's own scaling comes first: its measured FP32 peak
(fastcnn._native.fma_peak_gflops) at each thread count, the ceiling of a
compute-bound row's speedup. Per row: the wall time of a call, the graph's
nodes' time and what is outside
the graph (loss, optimizer update, zeroing the gradients, copies, Python),
then the nodes grouped by op and output shape, slowest on the most threads
first, as ms per call at each thread count and the speedup from the first
count to the last: of the call with the median wall time of --calls calls of
a warm model.

    python bench/profile_scaling.py [--threads 1,16] [--calls 5] [--only REGEX] [--top 12]
                                    [--gemm-split MODE]

--gemm-split sets sgemm's test hook (_native._set_gemm_split: 0 by cost, 4
without grids, ...) for an A/B of how its products are cut among threads.
"""
import argparse
import re
import sys
import time

import numpy as np

import _path
import models

_path.prefer_checkout()


def build(name):
    import fastcnn
    if name == "ResNet-18":
        return fastcnn.models.resnet18(num_classes=10, seed=0)
    return models.fastcnn_model(name)


def inference(name, n):
    import fastcnn
    model = build(name).eval()
    frozen = fastcnn.freeze(model)
    x = np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32)
    return lambda: frozen(x)


def training(name, n):
    import fastcnn
    model = build(name).train()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, n).astype(np.int64)
    opt = fastcnn.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = fastcnn.CrossEntropyLoss()
    return lambda: models.fastcnn_train_step(model, opt, loss, x, labels)


ROWS = [   # (title, factory, model, batch): scaling.py's throughput rows
    ("CIFAR-net inference b256", inference, "CIFAR-net", 256),
    ("ResNet-18 3x32x32 inference b256", inference, "ResNet-18", 256),
    ("CIFAR-net train step b64", training, "CIFAR-net", 64),
    ("ResNet-18 3x32x32 train step b64", training, "ResNet-18", 64),
]


def profiled(call, calls):
    """(wall seconds, {(op, shape): [forward ms, backward ms]}) of the call with
    the median wall time of `calls` profiled calls, after two warm-up calls."""
    import fastcnn
    for _ in range(2):
        call()
    runs = []
    for _ in range(calls):
        with fastcnn.profile() as prof:
            t0 = time.perf_counter()
            call()
            wall = time.perf_counter() - t0
        groups = {}
        for r in prof.rows():
            g = groups.setdefault((r["op"], "x".join(map(str, r["shape"]))), [0.0, 0.0])
            g[0] += r["forward_ms"]
            g[1] += r["backward_ms"]
        runs.append((wall, groups))
    runs.sort(key=lambda run: run[0])
    return runs[len(runs) // 2]


def report(title, factory, name, n, threads, calls, top):
    import fastcnn
    walls, groups = [], []
    for t in threads:
        fastcnn.set_num_threads(t)
        wall, g = profiled(factory(name, n), calls)
        walls.append(wall)
        groups.append(g)
        print(f"  {title}: {t} threads done", file=sys.stderr, flush=True)
    counts = " / ".join(map(str, threads))
    lines = [f"### {title}", "",
             f"| ms per call at {counts} threads | " + " | ".join(f"{t}T" for t in threads)
             + f" | speedup {threads[0]}T -> {threads[-1]}T |",
             "|---|" + "---|" * (len(threads) + 1)]

    def row(label, values):
        speed = values[0] / values[-1] if values[-1] > 0 else float("nan")
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in values)
                     + f" | {speed:.2f} |")

    nodes = [sum(a + b for a, b in g.values()) for g in groups]
    row("wall", [1e3 * w for w in walls])
    row("graph nodes", nodes)
    row("outside the graph", [1e3 * w - s for w, s in zip(walls, nodes)])
    keys = sorted(set().union(*groups), key=lambda k: -sum(groups[-1].get(k, [0, 0])))
    for phase, label in ((0, "fwd"), (1, "bwd")):
        for op, shape in keys[:top]:
            values = [g.get((op, shape), [0.0, 0.0])[phase] for g in groups]
            if values[0] > 0:
                row(f"{op} {shape} {label}", values)
    return lines + [""]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,16")
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--only", help="regular expression on the row titles")
    p.add_argument("--top", type=int, default=12, help="op and shape groups shown per row")
    p.add_argument("--gemm-split", type=int, default=0)
    args = p.parse_args(argv)
    from fastcnn import _native
    _native._set_gemm_split(args.gemm_split)
    threads = [int(t) for t in args.threads.split(",")]
    out = [f"Produced by `python bench/profile_scaling.py --threads {args.threads} "
           f"--calls {args.calls} --gemm-split {args.gemm_split}`", ""]
    peaks = [_native.fma_peak_gflops(t) for t in threads]
    out += [f"FP32 peak at {args.threads} threads: "
            + " / ".join(f"{g:.0f}" for g in peaks)
            + f" GFLOP/s ({peaks[-1] / peaks[0]:.2f}x from {threads[0]} to {threads[-1]})", ""]
    for title, factory, name, n in ROWS:
        if args.only and not re.search(args.only, title):
            continue
        out += report(title, factory, name, n, threads, args.calls, args.top)
    print("\n".join(out))


if __name__ == "__main__":
    main()
