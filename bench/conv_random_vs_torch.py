"""conv2d on random shapes outside the suite, against PyTorch: the forward,
the backward (input and weight gradients) and the weight gradient alone (a
first layer's), each at the thread count given, same process, same inputs.
Shapes: channels 3..512, maps 4..96, kernels 1/3/5/7, strides 1/2, batch
1..64, 5 MFLOP to 3 GFLOP. Each round runs fastcnn then torch on one op;
the table gives the medians over the rounds and torch / fastcnn (above 1:
fastcnn faster); the last lines the worst rows and the geomeans per op.

    python bench/conv_random_vs_torch.py [--shapes 30] [--threads 2] [--seed 5] [--rounds 7]
"""
import argparse
import statistics
import time

import numpy as np

import _path

_path.prefer_checkout()

import fastcnn  # noqa: E402
from fastcnn import functional as F  # noqa: E402


def random_shapes(count, rng):
    shapes = []
    while len(shapes) < count:
        k = int(rng.choice([1, 3, 3, 3, 5, 7]))
        s = int(rng.choice([1, 1, 1, 2]))
        C, K = (int(v) for v in rng.choice([3, 8, 16, 24, 32, 64, 96, 128, 256, 512], 2))
        H = int(rng.choice([4, 7, 8, 14, 16, 28, 32, 56, 64, 96]))
        N = int(rng.choice([1, 2, 8, 32, 64]))
        flops = 2 * N * K * C * k * k * (H // s) ** 2
        if 5e6 <= flops <= 3e9:
            shapes.append((N, C, H, K, k, s))
    return shapes


def interleaved(ours, peer, rounds):
    """Medians of ours and peer, one call each per round (after two warm-ups)."""
    for f in (ours, peer, ours, peer):
        f()
    a, b = [], []
    for _ in range(rounds):
        for f, ts in ((ours, a), (peer, b)):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def ops(N, C, H, K, k, s, rng, torch):
    x = rng.standard_normal((N, C, H, H), dtype=np.float32)
    w = rng.standard_normal((K, C, k, k), dtype=np.float32)
    p = k // 2
    gy = rng.standard_normal(F.conv2d(x, w, None, s, p).shape, dtype=np.float32)
    tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))

    def peer_backward(mask):
        return lambda: torch.ops.aten.convolution_backward(
            tgy, tx, tw, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask)

    return {
        "fwd": (lambda: F.conv2d(x, w, None, s, p),
                lambda: torch.nn.functional.conv2d(tx, tw, None, s, p)),
        "bwd": (lambda: F.conv2d_backward(gy, x, w, s, p, has_bias=False),
                peer_backward([True, True, False])),
        "wgrad": (lambda: F.conv2d_backward(gy, x, w, s, p, has_bias=False,
                                            need_grad_input=False),
                  peer_backward([False, True, False])),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    import torch
    fastcnn.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    print("| N | C | H | K | k | s | fwd ms (torch) | ratio | bwd ms (torch) | ratio | "
          "wgrad ms (torch) | ratio |")
    print("|" + "---|" * 12)
    rows = []
    with torch.no_grad():
        for shape in random_shapes(a.shapes, rng):
            cells = []
            for name, (ours, peer) in ops(*shape, rng, torch).items():
                t, tp = interleaved(ours, peer, a.rounds)
                rows.append((tp / t, name, shape))
                cells.append(f"{t * 1e3:.2f} ({tp * 1e3:.2f}) | {tp / t:.2f}")
            print("| " + " | ".join(map(str, shape)) + " | " + " | ".join(cells) + " |",
                  flush=True)
    gm = {n: float(np.exp(np.mean([np.log(r) for r, m, _ in rows if m == n])))
          for n in ("fwd", "bwd", "wgrad")}
    print(f"\n{a.shapes} shapes, {a.threads} thread(s), seed {a.seed}: geomean torch / fastcnn "
          + ", ".join(f"{n} {v:.2f}" for n, v in gm.items()))
    print("worst: " + "; ".join(f"{n} {s}: {r:.2f}" for r, n, s in sorted(rows)[:6]))


if __name__ == "__main__":
    main()
