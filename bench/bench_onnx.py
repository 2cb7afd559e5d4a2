"""ONNX import (issue 11): fastcnn.onnx.load of ResNet-18 and MobileNetV2
(torchvision's architectures; bench/models.py's torch twins of
fastcnn.models, batch norm with random statistics, in eval mode) exported
with torch.onnx.export at opset 17 with a dynamic batch, the same file
bench_models.py's 224x224 rows give onnxruntime, against onnxruntime running
that file: 3x224x224, batch 1 and 8, outputs compared first; heavy rows.
fastcnn runs fastcnn.freeze of the loaded model (a snapshot for inference,
as onnxruntime's session is). Run
as a script (`python bench/bench_onnx.py [--batch 1,8] [--threads 1,2]
[--repeat 10] [--size 224]`), it runs `fastcnn bench` on each exported file.
"""
import argparse

import pytest

import harness
import models
from bench_models import CNN_BATCHES, CNN_GROUP, CNN_SIZE
from harness import Case, Pair, assert_close


def import_case(name, n):
    def build(threads):
        torch = harness.peer_module("torch")
        ort = harness.peer_module("onnxruntime")
        harness.peer_module("onnx")         # torch.onnx.export and fastcnn.onnx need it
        load = harness.fastcnn_attr("onnx.load", "ONNX interchange")
        path = models.cnn_onnx_file(name, torch, CNN_SIZE)
        fm = harness.fastcnn_attr("freeze", "issue 11")(load(path))
        sess = models.ort_session(ort, path, threads)
        x = harness.randn(harness.rng(0), n, 3, CNN_SIZE, CNN_SIZE)

        def ours():
            return fm(x)

        def peer():
            return sess.run(None, {"x": x})[0]

        def check():
            assert_close(ours(), peer(), "logits")

        return Pair(ours, peer, check)

    return Case(CNN_GROUP, f"{name} b{n} (fastcnn.onnx.load)", "onnxruntime", build, items=n,
                target=1.0, heavy=True)


CASES = [import_case(m, n) for m in models.CNNS for n in CNN_BATCHES]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name} vs {c.peer}")
def test_onnx(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)


def main():
    import torch
    from fastcnn.onnx.bench import bench
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", default="1,8")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--size", type=int, default=CNN_SIZE)
    args = p.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    for name in models.CNNS:
        print(f"== {name} (opset 17, {args.size}x{args.size})")
        bench(models.cnn_onnx_file(name, torch, args.size), batches, threads, args.repeat)


if __name__ == "__main__":
    main()
