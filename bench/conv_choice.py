"""How well conv2d's timed path choice does on shapes outside the suite:
random convolutions (channels 3..512, maps 4..64, kernels 1/3/5/7, strides
1/2, batch 1..64), each run on every path forced (direct, channel-vector,
GEMM, where the shape allows it), then by the default choice (timed on its
first call), and by torch. Reports per shape the chosen path's time over
the best forced path's (1.00: the best was chosen) and torch / default.

    python bench/conv_choice.py [--shapes 40] [--threads 1] [--seed 0] [--rounds 5]
"""
import argparse
import statistics
import time

import numpy as np

import _path

_path.prefer_checkout()

import fastcnn  # noqa: E402
from fastcnn import _native  # noqa: E402
from fastcnn import functional as F  # noqa: E402

FORCED = {"direct": (1, -1), "kvec": (-1, 1), "gemm": (-1, -1)}


def random_shapes(count, rng):
    shapes = []
    while len(shapes) < count:
        k = int(rng.choice([1, 3, 3, 3, 5, 7]))
        s = int(rng.choice([1, 1, 1, 2]))
        C, K = (int(v) for v in rng.choice([3, 16, 32, 64, 96, 128, 256, 512], 2))
        H = int(rng.choice([4, 7, 8, 14, 16, 28, 32, 56, 64]))
        N = int(rng.choice([1, 1, 8, 32, 64]))
        flops = 2 * N * K * C * k * k * (H // s) ** 2
        if 5e6 <= flops <= 4e9 and H + 2 * (k // 2) >= k:
            shapes.append((N, C, H, K, k, s))
    return shapes


def timed(f, rounds):
    f()
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def forced(mode, f, rounds):
    old = _native._set_direct(mode[0]), _native._set_kvec(mode[1])
    try:
        return timed(f, rounds)
    finally:
        _native._set_direct(old[0])
        _native._set_kvec(old[1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    import torch
    fastcnn.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    print("| N | C | H | K | k | s | direct | kvec | gemm | default | default / best | "
          "torch | torch / default |")
    print("|" + "---|" * 13)
    over, vs_torch = [], []
    for N, C, H, K, k, s in random_shapes(a.shapes, rng):
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        w = rng.standard_normal((K, C, k, k), dtype=np.float32)
        f = lambda: F.conv2d(x, w, None, s, k // 2)  # noqa: E731
        times = {}
        for name, mode in FORCED.items():
            if name == "direct" and s != 1 or name == "kvec" and K % 8:
                continue
            times[name] = forced(mode, f, a.rounds)
        default = timed(f, a.rounds)
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        with torch.no_grad():
            peer = timed(lambda: torch.nn.functional.conv2d(tx, tw, None, s, k // 2), a.rounds)
        best = min(times.values())
        over.append(default / best)
        vs_torch.append(peer / default)
        cells = [f"{times[n] * 1e3:.2f}" if n in times else "-" for n in FORCED]
        print(f"| {N} | {C} | {H} | {K} | {k} | {s} | " + " | ".join(cells)
              + f" | {default * 1e3:.2f} | {default / best:.2f} | {peer * 1e3:.2f} | "
              f"{peer / default:.2f} |", flush=True)
    gm = lambda v: float(np.exp(np.mean(np.log(v))))  # noqa: E731
    print(f"\n{len(over)} shapes, {a.threads} thread(s): default / best forced path: "
          f"median {statistics.median(over):.2f}, worst {max(over):.2f}; torch / default: "
          f"geomean {gm(vs_torch):.2f}, worst {min(vs_torch):.2f}")


if __name__ == "__main__":
    main()
