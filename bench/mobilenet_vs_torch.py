"""MobileNetV2 train step (forward, loss, backward, SGD with momentum):
fastcnn.models.mobilenet_v2 against the same network in torch (bench/models.py),
same weights, same batch, same threads, interleaved, medians (1 thread: CPU
time of the calling thread; 2 threads: wall clock). Ratio = torch / fastcnn.

    python bench/mobilenet_vs_torch.py [--threads 1 2] [--repeats 7] [--batch 32] [--size 64]
"""
import argparse
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, ".")
sys.path.insert(0, "bench")
import fastcnn  # noqa: E402
from fastcnn import models  # noqa: E402
from models import fastcnn_train_step, torch_mobilenet_v2, torch_train_step  # noqa: E402


def steps(batch, size, classes=1000, seed=0):
    fm = models.mobilenet_v2(num_classes=classes, seed=seed)
    tm = torch_mobilenet_v2(torch, classes)
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in fm.state_dict().items()})
    fm.train()
    tm.train()
    r = np.random.default_rng(seed)
    x = r.standard_normal((batch, 3, size, size)).astype(np.float32)
    labels = r.integers(0, classes, batch)
    fopt = fastcnn.SGD(fm.parameters(), lr=0.01, momentum=0.9)
    topt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
    loss_fn = fastcnn.CrossEntropyLoss()
    tx, tl = torch.from_numpy(x), torch.from_numpy(labels)
    return (lambda: torch_train_step(tm, topt, torch, tx, tl),
            lambda: fastcnn_train_step(fm, fopt, loss_fn, x, labels))


def measure(tf, of, repeats, clock):
    for _ in range(2):
        tf(), of()
    ts, os_ = [], []
    for i in range(repeats):
        pair = [(tf, ts), (of, os_)]
        if i % 2:
            pair.reverse()
        for fn, acc in pair:
            t0 = clock()
            fn()
            acc.append(clock() - t0)
    return statistics.median(ts), statistics.median(os_)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    print(f"command: python {' '.join(sys.argv)}  (torch {torch.__version__}, "
          f"fastcnn kernels {fastcnn._native.cpu_isa()}, {time.strftime('%Y-%m-%d %H:%M')})\n")
    print("| row | thr | torch ms | fastcnn ms | ratio |")
    print("|---|---|---|---|---|")
    for nt in a.threads:
        torch.set_num_threads(nt)
        fastcnn.set_num_threads(nt)
        tf, of = steps(a.batch, a.size)
        clock = time.thread_time if nt == 1 else time.perf_counter
        tt, ot = measure(tf, of, a.repeats, clock)
        print(f"| MobileNetV2 train step 3x{a.size}x{a.size} b{a.batch} SGD-momentum | {nt} | "
              f"{tt * 1e3:.1f} | {ot * 1e3:.1f} | {tt / ot:.2f} |", flush=True)


if __name__ == "__main__":
    main()
