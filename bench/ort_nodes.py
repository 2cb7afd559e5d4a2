"""Node by node against onnxruntime (issue 11): a frozen fastcnn.models network
(bench/models.py's twins, random batch-norm statistics) timed per graph node
with fastcnn.profile(), and the same network exported to ONNX timed per node
by onnxruntime's own profiler (SessionOptions.enable_profiling), both at batch
N on the same threads. Nodes are matched by their module path: fastcnn's
"features.12.conv.0.0" and onnxruntime's "/features/features.12/conv/conv.0/..."
both become "features.12 conv.0"; onnxruntime fuses a convolution with its
batch norm and clamp, fastcnn folds them, so the keys cover the same work.
A fastcnn chain (an expansion, a depthwise and a projection run as one step)
is keyed by its first node: compare the block's sum there.

The whole-call times come first (median of interleaved calls, profilers off;
onnxruntime's profiling adds its own overhead to the node rows, not to those).

    python bench/ort_nodes.py [--model MobileNetV2] [--batch 1] [--threads 1] [--calls 20]
"""
import argparse
import json
import os
import re
import statistics
import tempfile
import time

import harness
import models
import fastcnn

NODE = re.compile(r"(features\.\d+|layer\d\.\d+|conv1|bn1|fc|classifier|avgpool)"
                  r"(?:[./](?:conv[./])?(conv\.\d|conv\d|downsample))?")


def key(name):
    """'features.12 conv.0' from either side's node name; None when unmatched."""
    m = NODE.search(name)
    return None if m is None else " ".join(g for g in m.groups() if g)


def ort_node_ms(profile_path):
    """Mean ms per call of each onnxruntime node in a profile file."""
    with open(profile_path) as f:
        events = json.load(f)
    times = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times.setdefault(e["name"][:-len("_kernel_time")], []).append(e["dur"] / 1000.0)
    return {name: sum(v) / len(v) for name, v in times.items()}


def by_key(pairs):
    out = {}
    for name, ms in pairs:
        k = key(name)
        if k is not None:
            out[k] = out.get(k, 0.0) + ms
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="MobileNetV2", choices=sorted(models.CNNS))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", type=int, default=20)
    args = p.parse_args(argv)
    torch = harness.peer_module("torch")
    ort = harness.peer_module("onnxruntime")
    harness.peer_module("onnx")
    fastcnn.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    fm, _ = models.cnn_twins(args.model, torch, random_batch_norm=True)
    frozen = fastcnn.freeze(fm.eval())
    path = models.cnn_onnx_file(args.model, torch)
    x = harness.randn(harness.rng(0), args.batch, 3, 224, 224)
    plain = models.ort_session(ort, path, args.threads)
    for _ in range(3):
        frozen(x)
        plain.run(None, {"x": x})
    ours, theirs = [], []
    for _ in range(args.calls):
        t = time.perf_counter()
        frozen(x)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        plain.run(None, {"x": x})
        theirs.append(time.perf_counter() - t)
    a, b = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
    print(f"{args.model} b{args.batch}, {args.threads} thread(s): fastcnn {a:.3f} ms, "
          f"onnxruntime {b:.3f} ms, ratio {b / a:.3f}")

    with fastcnn.profile() as prof:
        for _ in range(args.calls):
            frozen(x)
    fast = by_key((r["name"], r["forward_ms"] / r["forward_calls"]) for r in prof.rows())
    with tempfile.TemporaryDirectory() as tmp:
        sess = models.ort_session(ort, path, args.threads, os.path.join(tmp, "ort"))
        for _ in range(args.calls):
            sess.run(None, {"x": x})
        slow = by_key(ort_node_ms(sess.end_profiling()).items())
    print(f"{'node':<24} {'fastcnn ms':>10} {'onnxruntime ms':>15} {'ratio':>6}")
    for k in sorted(set(fast) | set(slow), key=lambda k: [int(t) if t.isdigit() else t
                                                          for t in re.split(r"(\d+)", k)]):
        f, o = fast.get(k, 0.0), slow.get(k, 0.0)
        ratio = f"{o / f:6.2f}" if f > 0 and o > 0 else "     -"
        print(f"{k:<24} {f:>10.3f} {o:>15.3f} {ratio}")
    print(f"{'total':<24} {sum(fast.values()):>10.3f} {sum(slow.values()):>15.3f}")


if __name__ == "__main__":
    main()
