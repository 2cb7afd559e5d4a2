"""conv2d: fastcnn against PyTorch, same process, same inputs, same threads.

Each repeat runs torch and fastcnn back to back (alternating which goes
first); the table gives medians over the repeats (1 thread: CPU time of
the calling thread, which both libraries compute on, so time slices lost
to other processes on a shared machine do not count; 2 threads: wall
clock), the ratio
torch / fastcnn (higher is better for fastcnn), and fastcnn's GFLOP/s with
its share of the peak (269 GFLOP/s per core AVX-512, BENCHMARKS.md).
fwd+bwd computes the gradients of the input, the weight and the bias.

    python bench/conv2d_vs_torch.py [--threads 1 2] [--repeats 21] [--shapes a b]
"""
import argparse
import math
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, ".")
import fastcnn  # noqa: E402
from fastcnn import functional as F  # noqa: E402

# name: (N, C, H=W, K, R, stride, pad[, groups])
SHAPES = {
    "lenet_c1": (64, 1, 28, 6, 5, 1, 2),
    "lenet_c2": (64, 6, 14, 16, 5, 1, 0),
    "mnist_c1": (64, 1, 28, 32, 3, 1, 1),
    "mnist_c2": (64, 32, 14, 64, 3, 1, 1),
    "cifar_c1": (64, 3, 32, 64, 3, 1, 1),
    "vgg_56": (32, 64, 56, 64, 3, 1, 1),
    "res_28": (32, 128, 28, 128, 3, 1, 1),
    "res_s2": (32, 128, 28, 256, 3, 2, 1),
    "pw_14": (32, 256, 14, 256, 1, 1, 0),
    "b1_56": (1, 64, 56, 64, 3, 1, 1),
    "dw_56": (32, 144, 56, 144, 3, 1, 1, 144),      # MobileNetV2 depthwise 3x3
    "dw_56_s2": (32, 144, 56, 144, 3, 2, 1, 144),
    "cifarnet_1": (64, 3, 32, 32, 3, 1, 1),           # CIFAR-net's four convolutions
    "cifarnet_2": (64, 32, 32, 32, 3, 1, 1),
    "cifarnet_3": (64, 32, 16, 64, 3, 1, 1),
    "cifarnet_4": (64, 64, 16, 64, 3, 1, 1),
}
LARGE = {"vgg_56", "res_28", "res_s2", "pw_14"}
PEAK_PER_CORE = 269.0


def unpack(shape):
    """(N, C, H, K, R, stride, pad, groups)."""
    return tuple(shape) + (1,) * (8 - len(shape))


def make(shape, seed=0):
    N, C, H, K, R, st, pad, G = unpack(shape)
    g = np.random.default_rng(seed)
    x = g.standard_normal((N, C, H, H), dtype=np.float32)
    w = g.standard_normal((K, C // G, R, R), dtype=np.float32) * (1.0 / math.sqrt(C // G * R * R))
    b = g.standard_normal(K, dtype=np.float32)
    P = (H + 2 * pad - R) // st + 1
    dy = g.standard_normal((N, K, P, P), dtype=np.float32)
    return x, w, b, dy, P


def runners(shape, mode):
    N, C, H, K, R, st, pad, G = unpack(shape)
    x, w, b, dy, P = make(shape)
    tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, w, b, dy))
    tx.requires_grad_(mode == "fwd+bwd")
    tw.requires_grad_(mode == "fwd+bwd")
    tb.requires_grad_(mode == "fwd+bwd")

    def torch_fwd():
        with torch.no_grad():
            torch.nn.functional.conv2d(tx, tw, tb, st, pad, 1, G)

    def torch_fwdbwd():
        tx.grad = tw.grad = tb.grad = None
        y = torch.nn.functional.conv2d(tx, tw, tb, st, pad, 1, G)
        y.backward(tdy)

    def ours_fwd():
        F.conv2d(x, w, b, st, pad, 1, G)

    def ours_fwdbwd():
        F.conv2d(x, w, b, st, pad, 1, G)
        F.conv2d_backward(dy, x, w, st, pad, 1, G)

    flops = 2.0 * N * K * C // G * R * R * P * P * (1 if mode == "fwd" else 3)
    if mode == "fwd":
        return torch_fwd, ours_fwd, flops
    return torch_fwdbwd, ours_fwdbwd, flops


def timed(fn, clock):
    t0 = clock()
    fn()
    return clock() - t0


def measure(shape, mode, repeats, clock, min_time=0.02):
    tf, of, flops = runners(shape, mode)
    for _ in range(2):
        tf(), of()
    # several calls per sample for very short ops, so each sample is >= min_time/4
    one = max(1e-6, min(timed(tf, clock), timed(of, clock)))
    inner = max(1, int(min_time / 4 / one))
    ts, os_ = [], []
    for i in range(repeats):
        pair = [(tf, ts), (of, os_)]
        if i % 2:
            pair.reverse()
        for fn, acc in pair:
            t0 = clock()
            for _ in range(inner):
                fn()
            acc.append((clock() - t0) / inner)
    return statistics.median(ts), statistics.median(os_), flops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES))
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"])
    a = ap.parse_args()
    print(f"command: python {' '.join(sys.argv)}  (torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')})\n")
    print("| shape | thr | mode | torch ms | fastcnn ms | ratio | fastcnn GFLOP/s | % peak |")
    print("|---|---|---|---|---|---|---|---|")
    ratios = []
    for nt in a.threads:
        torch.set_num_threads(nt)
        fastcnn.set_num_threads(nt)
        for name in a.shapes:
            for mode in a.modes:
                clock = time.thread_time if nt == 1 else time.perf_counter
                tt, ot, flops = measure(SHAPES[name], mode, a.repeats, clock)
                r = tt / ot
                ratios.append(r)
                gf = flops / ot / 1e9
                pk = f"{100 * gf / (PEAK_PER_CORE * nt):.0f}%"
                print(f"| {name} | {nt} | {mode} | {tt * 1e3:.3f} | {ot * 1e3:.3f} | "
                      f"{r:.2f} | {gf:.0f} | {pk} |", flush=True)
    gm = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(f"\ngeometric mean ratio: {gm:.2f}; rows below 1.0: "
          f"{sum(r < 1.0 for r in ratios)} of {len(ratios)}")


if __name__ == "__main__":
    main()
