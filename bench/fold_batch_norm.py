"""Batch norm folded into the convolutions (the compiler's fold_batch_norm
pass) on ResNet-18 inference at 3x224x224: the same graph compiled three ways
and run interleaved in one process, same input, same threads:

    off       every batch_norm2d runs as its own pass over the activations
    default   the pass as compiled by default: folded where the weights to
              scale are fewer than the activations the batch norm passes over
    all       every conv2d + batch_norm2d pair folded (only_profitable=False)

    python bench/fold_batch_norm.py [--batches 1 8] [--threads 1 2] [--rounds 7]

Prints a Markdown table of medians (ms) and the ratio off / default (above 1:
the pass pays). Outputs are checked against 'off' within float tolerance."""
import argparse
import platform
import statistics
import time

import _path
_path.prefer_checkout()  # this checkout's in-place build first
import numpy as np

import fastcnn
from fastcnn.compiler import PASSES, compile_graph, fold_batch_norm
from fastcnn.runner import trace

NO_FOLD = tuple(p for p in PASSES if p != "fold_batch_norm")


def programs(model, shape):
    graph = trace(model, shape)
    return {"off": compile_graph(graph, False, NO_FOLD),
            "default": compile_graph(graph, False),
            "all": compile_graph(fold_batch_norm(graph, only_profitable=False), False, NO_FOLD)}


def timed(prog, x):
    start = time.perf_counter()
    out = prog.forward(x)[0]
    return time.perf_counter() - start, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    model = fastcnn.models.resnet18(seed=0).eval()
    print(f"fastcnn {fastcnn.__version__}, ISA {fastcnn._native.isa()}, "
          f"{platform.processor() or platform.machine()}, {args.rounds} interleaved rounds")
    print()
    print("| batch | threads | off ms | default ms | all ms | folded (default) | off / default |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batches:
        x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
        progs = programs(model, x.shape)
        folded = [n.op for n in progs["default"].graph.nodes].count("conv2d_batch_norm2d")
        for threads in args.threads:
            fastcnn.set_num_threads(threads)
            times = {k: [] for k in progs}
            ref = progs["off"].forward(x)[0]
            for k, prog in progs.items():           # warm up, and check
                np.testing.assert_allclose(prog.forward(x)[0], ref, rtol=1e-3, atol=1e-3)
            for _ in range(args.rounds):
                for k, prog in progs.items():
                    times[k].append(timed(prog, x)[0])
            med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
            print(f"| {batch} | {threads} | {med['off']:.1f} | {med['default']:.1f} | "
                  f"{med['all']:.1f} | {folded} of 20 | {med['off'] / med['default']:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
