"""How sgemm cuts C among many threads (issue 11): each product timed with
the split forced along M, along N, along both (a grid), as the cost model
chooses without grids ("1-D", the choice before grids) and with them
("cost"), on each thread count; GFLOP/s of the best round and (after the
slash) the median of the interleaved rounds.

The shapes are the products of the scaling rows whose 1-D cuts feed 16
threads badly: CIFAR-net's 4096 -> 256 linear layer at batch 256 (and its
weight gradient at batch 64), the dense path of ResNet-18's 3x3 convolutions
on 2x2 and 1x1 maps at batch 256 and 64 (x (N, CHW) times the spread
weights), and two that a 1-D cut serves (a control).

    python bench/gemm_split.py [--threads 4,8,16] [--rounds 7]
"""
import argparse

import numpy as np

import harness
import fastcnn
from fastcnn import _native

# (label, M, N, K, trans_a, trans_b)
SHAPES = [
    ("linear 4096->256 fwd, batch 256", 256, 256, 4096, False, True),
    ("linear 4096->256 weight grad, batch 64", 256, 4096, 64, True, False),
    ("dense 256->256 on 2x2, batch 256", 256, 1024, 1024, False, True),
    ("dense 256->256 on 2x2, batch 64", 64, 1024, 1024, False, True),
    ("dense 256->512 s2 on 2x2, batch 256", 256, 512, 1024, False, True),
    ("1x1 map 512->512, batch 256", 256, 512, 512, False, True),
    ("control: 1024 cube", 1024, 1024, 1024, False, False),
    ("control: 64 -> 64 3x3 at 8x8, batch 256 (im2col)", 64, 16384, 576, False, False),
]
MODES = [("1-D", 4), ("cost", 0), ("M", 1), ("N", 2), ("grid", 3)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="4,8,16")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    r = np.random.default_rng(0)
    print(f"Produced by `python bench/gemm_split.py --threads {args.threads} "
          f"--rounds {args.rounds}`; GFLOP/s, best / median\n")
    print("| product | M x N x K | threads | " + " | ".join(m for m, _ in MODES) + " |")
    print("|---|---|---|" + "---|" * len(MODES))
    for label, M, N, K, ta, tb in SHAPES:
        a = r.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = r.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
        c = np.empty((M, N), np.float32)
        for t in map(int, args.threads.split(",")):
            fastcnn.set_num_threads(t)
            times = {m: [] for m, _ in MODES}
            for _ in range(args.rounds):          # modes interleaved round by round
                for m, mode in MODES:
                    old = _native._set_gemm_split(mode)
                    try:
                        times[m].append(harness.median_ms(
                            lambda: _native.sgemm(a, b, c, trans_a=ta, trans_b=tb), 3, warmup=1))
                    finally:
                        _native._set_gemm_split(old)
            flop = 2e-6 * M * N * K
            print(f"| {label} | {M}x{N}x{K} | {t} | "
                  + " | ".join(f"{flop / min(times[m]):.0f} / {flop / np.median(times[m]):.0f}"
                               for m, _ in MODES) + " |", flush=True)


if __name__ == "__main__":
    main()
