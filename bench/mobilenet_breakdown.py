"""Where MobileNetV2 inference (3x224x224) spends its non-GEMM time: each
distinct depthwise 3x3 convolution (with its folded batch-norm bias), each
ReLU6 pass and each residual add of the network at batch N, fastcnn.functional
against torch.nn.functional, same inputs, same threads, interleaved, medians of
the calling thread's CPU time (1 thread) or wall clock. "x" is how many times
one forward runs that shape; the total rows weight by it. Then the whole
model: fastcnn.models.mobilenet_v2().eval() against the same network and
weights in torch (bench/models.py) and, when onnx is installed, onnxruntime
running that torch network exported to ONNX. Ratio = peer / fastcnn (higher
is better for fastcnn).

Both sides return a fresh output per call. So that this measures the kernels
and not the kernel's page faults on memory that malloc just got from the
system (a model reuses its buffers), glibc is told to keep freed memory
(mallopt: no mmap per large block, no trimming), for both sides alike.

    python bench/mobilenet_breakdown.py [--threads 1] [--batch 1] [--repeats 15]
"""
import argparse
import ctypes
import ctypes.util
import importlib.util
import io
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, ".")
sys.path.insert(0, "bench")
import fastcnn  # noqa: E402
from fastcnn import functional as F  # noqa: E402
from models import torch_mobilenet_v2  # noqa: E402

# (channels, input size, stride, times per forward)
DEPTHWISE = [(32, 112, 1, 1), (96, 112, 2, 1), (144, 56, 1, 1), (144, 56, 2, 1),
             (192, 28, 1, 2), (192, 28, 2, 1), (384, 14, 1, 4), (576, 14, 1, 2),
             (576, 14, 2, 1), (960, 7, 1, 3)]
# (channels, size, times per forward): after every expansion and depthwise conv
RELU6 = [(32, 112, 2), (96, 112, 1), (96, 56, 1), (144, 56, 3), (144, 28, 1), (192, 28, 5),
         (192, 14, 1), (384, 14, 8), (576, 14, 5), (576, 7, 1), (960, 7, 6), (1280, 7, 1)]
# (channels, size, times per forward): the inverted residuals' shortcuts
ADD = [(24, 56, 1), (32, 28, 2), (64, 14, 3), (96, 14, 2), (160, 7, 2)]


def keep_freed_memory():
    """glibc: serve large blocks from the heap and keep what is freed (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 30)      # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)      # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def depthwise_sides(n, C, H, s):
    r = np.random.default_rng(0)
    x = r.standard_normal((n, C, H, H), dtype=np.float32)
    w = (r.standard_normal((C, 1, 3, 3)) / 3).astype(np.float32)
    b = r.standard_normal(C, dtype=np.float32)
    tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
    check = np.abs(F.conv2d(x, w, b, s, 1, groups=C)
                   - torch.nn.functional.conv2d(tx, tw, tb, s, 1, groups=C).numpy()).max()
    assert check < 1e-4, f"depthwise {C}x{H} s{s} differs from torch by {check}"
    return (lambda: F.conv2d(x, w, b, s, 1, groups=C),
            lambda: torch.nn.functional.conv2d(tx, tw, tb, s, 1, groups=C))


def relu6_sides(n, C, H):
    x = np.random.default_rng(0).standard_normal((n, C, H, H), dtype=np.float32) * 4
    tx = torch.from_numpy(x)
    assert np.array_equal(F.relu6(x), torch.nn.functional.relu6(tx).numpy())
    return lambda: F.relu6(x), lambda: torch.nn.functional.relu6(tx)


def add_sides(n, C, H):
    r = np.random.default_rng(0)
    a, b = (r.standard_normal((n, C, H, H), dtype=np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert np.array_equal(F.add(a, b), (ta + tb).numpy())
    return lambda: F.add(a, b), lambda: ta + tb


def model_sides(n, threads):
    """fastcnn, torch and (or None) onnxruntime MobileNetV2, same weights."""
    fm = fastcnn.models.mobilenet_v2(seed=0).eval()
    tm = torch_mobilenet_v2(torch).eval()
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in fm.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((n, 3, 224, 224), dtype=np.float32)
    tx = torch.from_numpy(x)
    with torch.no_grad():
        want = tm(tx).numpy()
    err = np.abs(fm(x) - want).max() / np.abs(want).max()
    assert err < 1e-4, f"fastcnn's MobileNetV2 differs from torch's by {err} (relative)"

    def peer_torch():
        with torch.no_grad():
            return tm(tx)
    return (lambda: fm(x)), peer_torch, onnxruntime_side(tm, tx, x, threads)


def onnxruntime_side(tm, tx, x, threads):
    if importlib.util.find_spec("onnx") is None:    # torch.onnx.export needs it
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tm, (tx,), f, dynamo=False, input_names=["x"], opset_version=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(f.getvalue(), opts, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})


def measure(fns, repeats, clock):
    """Median time of each function, run interleaved (order alternating)."""
    for _ in range(2):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for i in range(repeats):
        order = list(range(len(fns)))[::1 if i % 2 else -1]
        for k in order:
            t0 = clock()
            fns[k]()
            times[k].append(clock() - t0)
    return [statistics.median(t) for t in times]


def table(title, rows, repeats, clock):
    print(f"\n| {title} | x | fastcnn ms | torch ms | ratio |")
    print("|---|---|---|---|---|")
    total_o = total_t = 0.0
    for name, times, sides in rows:
        o, t = measure(sides(), repeats, clock)
        total_o, total_t = total_o + times * o, total_t + times * t
        print(f"| {name} | {times} | {o * 1e3:.3f} | {t * 1e3:.3f} | {t / o:.2f} |", flush=True)
    print(f"| all of one forward | | {total_o * 1e3:.2f} | {total_t * 1e3:.2f} | "
          f"{total_t / total_o:.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    n = a.batch
    keep_freed_memory()
    torch.set_num_threads(a.threads)
    fastcnn.set_num_threads(a.threads)
    clock = time.thread_time if a.threads == 1 else time.perf_counter
    print(f"MobileNetV2 3x224x224 batch {n}, threads {a.threads}, {platform.processor() or ''}"
          f"{fastcnn._native.cpu_isa()} kernels, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    table("depthwise 3x3 + bias (C, HxW in, stride)",
          [(f"{C}, {H}x{H}, s{s}", x, lambda C=C, H=H, s=s: depthwise_sides(n, C, H, s))
           for C, H, s, x in DEPTHWISE], a.repeats, clock)
    table("ReLU6 (C, HxW)", [(f"{C}, {H}x{H}", x, lambda C=C, H=H: relu6_sides(n, C, H))
                             for C, H, x in RELU6], a.repeats, clock)
    table("residual add (C, HxW)", [(f"{C}, {H}x{H}", x, lambda C=C, H=H: add_sides(n, C, H))
                                    for C, H, x in ADD], a.repeats, clock)
    ours, peer_torch, peer_ort = model_sides(n, a.threads)
    fns = [ours, peer_torch] + ([peer_ort] if peer_ort else [])
    times = measure(fns, a.repeats, time.perf_counter)
    print("\n| whole model (eval, wall clock) | fastcnn ms | peer ms | ratio |\n|---|---|---|---|")
    for name, t in zip(["torch", "onnxruntime"], times[1:]):
        print(f"| vs {name} | {times[0] * 1e3:.2f} | {t * 1e3:.2f} | {t / times[0]:.2f} |")


if __name__ == "__main__":
    main()
