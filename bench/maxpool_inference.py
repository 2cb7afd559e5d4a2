"""Max pooling in inference, values only, against the path it replaced:
ResNet-18's 3x3 stride-2 pooling (padding 1) on its 64x112x112 stem output.

    old   F.max_pool2d(..., return_indices=True): the general planes with
          argmax indices, which a compiled inference graph ran for every
          window other than 2x2 tiles
    new   a frozen MaxPool2d: maxpool2d_forward_inference, values only
          (csrc/pool2d_kernel.h, csrc/pool2d_avx512.c)

Interleaved in one process, same input, same threads; medians in ms and
old / new. The outputs are compared first (byte for byte).

    python bench/maxpool_inference.py [--batch 1,8] [--threads 1,2] [--repeats 25]
"""
import argparse
import statistics
import time

import numpy as np

import _path

_path.prefer_checkout()

import fastcnn  # noqa: E402
import fastcnn.functional as F  # noqa: E402


def median_ms(times):
    return 1e3 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=25)
    a = ap.parse_args()
    frozen = fastcnn.freeze(fastcnn.Sequential(fastcnn.MaxPool2d(3, 2, 1)).eval())
    print("| input | threads | old ms | new ms | old / new |\n|---|---|---|---|---|")
    for threads in map(int, a.threads.split(",")):
        fastcnn.set_num_threads(threads)
        for n in map(int, a.batch.split(",")):
            x = np.random.default_rng(0).standard_normal((n, 64, 112, 112)).astype(np.float32)
            calls = {"old": lambda: F.max_pool2d(x, 3, 2, 1, return_indices=True)[0],
                     "new": lambda: frozen(x)}
            assert calls["old"]().tobytes() == calls["new"]().tobytes()
            times = {k: [] for k in calls}
            for _ in range(a.repeats):
                for k, f in calls.items():
                    t = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t)
            old, new = median_ms(times["old"]), median_ms(times["new"])
            print(f"| {n}x64x112x112 | {threads} | {old:.3f} | {new:.3f} | {old / new:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
