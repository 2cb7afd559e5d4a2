"""A model in eval mode, its fastcnn.freeze snapshot and an onnxruntime
session on the same exported file (bench/models.py's ResNet-18 and
MobileNetV2 twins, batch norm with random statistics), interleaved in one
process on the same input and threads: medians in ms, and onnxruntime's
time over each fastcnn one (higher is better for fastcnn). Outputs are
checked against onnxruntime's first.

    python bench/frozen_vs_ort.py [--models ResNet-18,MobileNetV2] [--batch 1,8]
                                  [--threads 1,2] [--repeats 11]
"""
import argparse
import os
import time

import numpy as np

import harness
import models


def one(name, n, threads, repeats):
    import fastcnn
    import onnxruntime as ort
    import torch
    fastcnn.set_num_threads(threads)
    torch.set_num_threads(threads)
    fm, _ = models.cnn_twins(name, torch, random_batch_norm=True)
    fm.eval()
    frozen = fastcnn.freeze(fm)
    sess = models.ort_session(ort, models.cnn_onnx_file(name, torch, 224), threads)
    x = harness.randn(harness.rng(0), n, 3, 224, 224)
    want = sess.run(None, {"x": x})[0]
    for f in (fm, frozen):
        harness.assert_close(f(x), want, f"{name} logits")
    calls = {"model": lambda: fm(x), "frozen": lambda: frozen(x),
             "onnxruntime": lambda: sess.run(None, {"x": x})}
    for f in calls.values():
        f()
        f()
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for k, f in calls.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="ResNet-18,MobileNetV2")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")     # peer workers sleep (ort_session)
    print("| model, batch, threads | model ms | frozen ms | onnxruntime ms | "
          "ort / model | ort / frozen |\n|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for n in map(int, args.batch.split(",")):
            for t in map(int, args.threads.split(",")):
                m = one(name, n, t, args.repeats)
                print(f"| {name} b{n} {t}T | {m['model']:.2f} | {m['frozen']:.2f} | "
                      f"{m['onnxruntime']:.2f} | {m['onnxruntime'] / m['model']:.2f} | "
                      f"{m['onnxruntime'] / m['frozen']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
