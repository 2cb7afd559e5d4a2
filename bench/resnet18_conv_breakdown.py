"""Where a ResNet-18 train step (3x32x32, batch 64) spends its convolution
time: each distinct convolution of the network, one forward and one backward
(grad input except for the first layer, grad weight), fastcnn.functional
against torch (forward with autograd, then torch.autograd.grad), same inputs,
same threads, interleaved, medians of the calling thread's CPU time (1
thread) or wall clock. "x" is how many times the network runs that shape per
step; the total row weights by it. Ratio = torch / fastcnn.

    python bench/resnet18_conv_breakdown.py [--threads 1] [--repeats 7]
"""
import argparse
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, ".")
import fastcnn  # noqa: E402
from fastcnn import functional as F  # noqa: E402

N = 64
# (C, K, kernel, stride, input size, times per step)
CONVS = [(3, 64, 7, 2, 32, 1), (64, 64, 3, 1, 8, 4),
         (64, 128, 3, 2, 8, 1), (128, 128, 3, 1, 4, 3), (64, 128, 1, 2, 8, 1),
         (128, 256, 3, 2, 4, 1), (256, 256, 3, 1, 2, 3), (128, 256, 1, 2, 4, 1),
         (256, 512, 3, 2, 2, 1), (512, 512, 3, 1, 1, 3), (256, 512, 1, 2, 2, 1)]


def sides(C, K, k, s, H):
    r = np.random.default_rng(0)
    pad = k // 2
    x = r.standard_normal((N, C, H, H), dtype=np.float32)
    w = (r.standard_normal((K, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    P = (H + 2 * pad - k) // s + 1
    gy = r.standard_normal((N, K, P, P), dtype=np.float32)
    need_dx = C != 3
    tx = torch.from_numpy(x).requires_grad_(need_dx)
    tw = torch.from_numpy(w).requires_grad_(True)
    tgy = torch.from_numpy(gy)

    def ours():
        F.conv2d(x, w, None, s, pad)
        F.conv2d_backward(gy, x, w, s, pad, has_bias=False, need_grad_input=need_dx)

    def peer():
        y = torch.nn.functional.conv2d(tx, tw, None, s, pad)
        torch.autograd.grad(y, [tx, tw] if need_dx else [tw], tgy)

    return ours, peer


def measure(ours, peer, repeats, clock):
    for _ in range(2):
        ours(), peer()
    a, b = [], []
    for i in range(repeats):
        for fn, acc in ((ours, a), (peer, b))[::1 if i % 2 else -1]:
            t0 = clock()
            fn()
            acc.append(clock() - t0)
    return statistics.median(a), statistics.median(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    fastcnn.set_num_threads(a.threads)
    clock = time.thread_time if a.threads == 1 else time.perf_counter
    print(f"threads {a.threads}, torch {torch.__version__}, fastcnn kernels "
          f"{fastcnn._native.cpu_isa()}, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| conv (C->K, k, stride, HxW in) | x | fastcnn ms | torch ms | ratio |")
    print("|---|---|---|---|---|")
    total_o = total_t = 0.0
    for C, K, k, s, H, times in CONVS:
        o, t = measure(*sides(C, K, k, s, H), a.repeats, clock)
        total_o, total_t = total_o + times * o, total_t + times * t
        print(f"| {C}->{K}, {k}x{k}, s{s}, {H}x{H} | {times} | {o * 1e3:.1f} | {t * 1e3:.1f} | "
              f"{t / o:.2f} |", flush=True)
    print(f"| all convolutions of a step | | {total_o * 1e3:.1f} | {total_t * 1e3:.1f} | "
          f"{total_t / total_o:.2f} |")


if __name__ == "__main__":
    main()
