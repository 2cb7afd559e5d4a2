"""Batch-1 inference on many threads (issue 11): where a 3x224x224 ResNet-18
stops scaling. Run on the 16-core machine, one prepared script per session.

    python bench/batch1_threads.py shapes [--threads 16,8,4,1]
    python bench/batch1_threads.py models NAME:BATCH:THREADS:CHAIN[:SPLIT] ...

shapes: each distinct convolution of ResNet-18 at 3x224x224, batch 1, as a
frozen one-layer model (weights prepared once, as in a frozen network), on
each path forced (gemm, direct, kvec, Winograd F(2x2) and F(4x4) where they
fit) and as timed ("tuned", its path timed at the first thread count
listed): median ms of 9 calls per thread count, and the best / worst ratio.

models: NAME (resnet18 or mobilenet_v2) frozen at BATCH on THREADS, each in
a fresh process, beside onnxruntime running its torch twin's export on as
many threads; CHAIN 1 first runs 3 calls on 1 thread (the convolutions'
paths are then timed at 1 thread, as in a report that runs 1 thread first);
SPLIT sets sgemm's test hook _set_gemm_split (0 by cost, 4 without grids).
Prints [name, batch, threads, chain, fastcnn ms, onnxruntime ms].
"""
import json
import os
import subprocess
import sys

import numpy as np

# idle threads asleep, as in the reports (before fastcnn loads: harness imports
# it, this checkout's in-place build first)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from harness import median_ms  # noqa: E402

SHAPES = [   # (C, K, kernel, stride, input size)
    (3, 64, 7, 2, 224), (64, 64, 3, 1, 56), (64, 128, 3, 2, 56), (128, 128, 3, 1, 28),
    (64, 128, 1, 2, 56), (128, 256, 3, 2, 28), (256, 256, 3, 1, 14), (128, 256, 1, 2, 28),
    (256, 512, 3, 2, 14), (512, 512, 3, 1, 7), (256, 512, 1, 2, 14)]
HOOKS = ("_set_direct", "_set_kvec", "_set_winograd", "_set_dense")
FORCED = {"direct": ("_set_direct", 1), "kvec": ("_set_kvec", 1),
          "wino2": ("_set_winograd", 1), "wino4": ("_set_winograd", 2)}


def force(path):
    """Every path hook off for gemm, by shape for tuned, else the one path on."""
    from fastcnn import _native
    for hook in HOOKS:
        getattr(_native, hook)(-1 if path == "gemm" else 0)
    if path in FORCED:
        hook, mode = FORCED[path]
        getattr(_native, hook)(mode)


def shapes(threads):
    import fastcnn
    rng = np.random.default_rng(0)
    print("| C K kernel stride size | path | "
          + " | ".join(f"{t}T ms" for t in threads) + " | best / worst |")
    print("|---|---|" + "---|" * (len(threads) + 1))
    for C, K, k, s, H in SHAPES:
        x = rng.standard_normal((1, C, H, H), dtype=np.float32)
        layer = fastcnn.Conv2d(C, K, k, stride=s, padding=k // 2)
        layer.eval()
        winograd = ["wino2", "wino4"] if k == 3 and s == 1 else []
        for path in ["gemm", "direct", "kvec"] + winograd + ["tuned"]:
            force(path)
            frozen = fastcnn.freeze(layer)
            row = []
            for t in threads:
                fastcnn.set_num_threads(t)
                row.append(median_ms(lambda: frozen(x), 9))
            print(f"| {C} {K} {k} {s} {H} | {path} | " + " | ".join(f"{v:.3f}" for v in row)
                  + f" | {max(row) / min(row):.1f} |", flush=True)


def twins(name):
    import fastcnn
    import torch
    import models
    make = {"resnet18": models.torch_resnet18, "mobilenet_v2": models.torch_mobilenet_v2}
    fm = getattr(fastcnn.models, name)(num_classes=1000, seed=0)
    tm = make[name](torch, 1000)
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in fm.state_dict().items()})
    fm.eval()
    tm.eval()
    return fm, tm


def model(name, batch, threads, chain, split=0):
    import fastcnn
    import onnxruntime as ort
    import torch
    import models
    import scaling
    torch.set_num_threads(threads)
    fastcnn._native._set_gemm_split(split)
    fm, tm = twins(name)
    frozen = fastcnn.freeze(fm)
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    if chain:
        fastcnn.set_num_threads(1)
        for _ in range(3):
            frozen(x)
    fastcnn.set_num_threads(threads)
    ours = median_ms(lambda: frozen(x), 15)
    sess = models.ort_session(ort, scaling.export(tm, torch, x[:1]), threads)
    peer = median_ms(lambda: sess.run(None, {"x": x}), 15)
    ours = min(ours, median_ms(lambda: frozen(x), 15))
    print(json.dumps([name, batch, threads, bool(chain), round(ours, 3), round(peer, 3)]),
          flush=True)


def main(argv):
    if argv[0] == "shapes":
        threads = argv[2] if len(argv) > 2 and argv[1] == "--threads" else "16,8,4,1"
        shapes([int(t) for t in threads.split(",")])
    elif argv[0] == "models":
        for spec in argv[1:]:
            subprocess.run([sys.executable, __file__, "model"] + spec.split(":"), timeout=120)
    elif argv[0] == "model":
        model(argv[1], int(argv[2]), int(argv[3]), argv[4] == "1", *map(int, argv[5:6]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
