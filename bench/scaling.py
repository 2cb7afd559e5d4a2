"""Thread scaling (issue 11): fastcnn's throughput from 1 thread up, and the
peer's beside it, same process, same weights, same inputs, same thread
count, calls alternated (A B A B ...), medians.

Rows: CIFAR-net and ResNet-18 (3x32x32, 10 classes) inference at batch 256
against onnxruntime running the torch twin exported to ONNX; their train
steps at batch 64 (SGD with momentum) against torch; batch-1 latency of
LeNet-5, CIFAR-net and ResNet-18 at 3x224x224 (1000 classes) against
onnxruntime. Idle threads sleep on every side (OMP_WAIT_POLICY=PASSIVE
unless set; onnxruntime's allow_spinning=0). Each table gives, per thread count, fastcnn's time, the peer's,
the ratio peer / fastcnn (above 1: fastcnn faster) and fastcnn's speedup
over its own 1-thread time. With --wait-policy, the batch-1 rows run again
in child processes under OMP_WAIT_POLICY=ACTIVE and PASSIVE (fastcnn's
default) and GOMP_SPINCOUNT=10000, to compare OpenMP's idle-thread policies.

    python bench/scaling.py [--threads 1,2,4,8,16] [--rounds 5] [--out bench/SCALING.md]
                            [--only REGEX] [--wait-policy]
"""
import argparse
import datetime
import io
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

import _path
import models
from compare import cpu_model

_path.prefer_checkout()

HERE = os.path.dirname(os.path.abspath(__file__))

# Idle threads asleep on every side, as in compare.py's default mode (set
# before torch, fastcnn and onnxruntime load; models.ort_session then makes
# onnxruntime's own pool sleep too): a side's spinning threads would take a
# core from the other side's next call. OMP_WAIT_POLICY set by the caller wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def export(tm, torch, example):
    """The torch model as ONNX bytes (opset 17, dynamic batch)."""
    f = io.BytesIO()
    tm.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tm, (torch.from_numpy(example),), f, dynamo=False,
                          input_names=["x"], output_names=["logits"], opset_version=17,
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return f.getvalue()


def resnet_twins(torch, classes):
    import fastcnn
    fm = fastcnn.models.resnet18(num_classes=classes, seed=0)
    tm = models.torch_resnet18(torch, classes)
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in fm.state_dict().items()})
    return fm, tm


def twins(name, torch):
    if name == "ResNet-18":
        return resnet_twins(torch, 10)
    if name == "ResNet-18 224":
        return resnet_twins(torch, 1000)
    return models.twins(name, torch)


def input_of(name, n):
    shape = {"ResNet-18": (3, 32, 32), "ResNet-18 224": (3, 224, 224)}.get(name)
    if shape is None:
        return models.batch(name, n)[0]
    return np.random.default_rng(0).standard_normal((n,) + shape).astype(np.float32)


def inference(name, n, threads):
    """(fastcnn call, onnxruntime call) for `name` at batch n on `threads`."""
    import fastcnn
    import onnxruntime as ort
    import torch
    fm, tm = twins(name, torch)
    fm.eval()
    frozen = fastcnn.freeze(fm)     # a snapshot for inference, as the session is
    x = input_of(name, n)
    sess = models.ort_session(ort, export(tm, torch, x[:1]), threads)
    ours, peer = (lambda: frozen(x)), (lambda: sess.run(None, {"x": x})[0])
    scale = np.abs(peer()).max()
    assert np.abs(ours() - peer()).max() <= 1e-3 * scale, f"{name}: outputs differ"
    return ours, peer


def training(name, n, threads):
    """(fastcnn step, torch step) for `name` at batch n (SGD with momentum)."""
    import fastcnn
    import torch
    fm, tm = twins(name, torch)
    x = input_of(name, n)
    labels = np.random.default_rng(1).integers(0, 10, n).astype(np.int64)
    fopt, topt = models.optimizers("SGD-momentum", fm, tm, torch)
    loss = fastcnn.CrossEntropyLoss()
    tx, tl = torch.from_numpy(x), torch.from_numpy(labels)
    return (lambda: models.fastcnn_train_step(fm, fopt, loss, x, labels),
            lambda: models.torch_train_step(tm, topt, torch, tx, tl))


ROWS = [   # (title, peer, factory, model, batch)
    ("CIFAR-net inference b256", "onnxruntime", inference, "CIFAR-net", 256),
    ("ResNet-18 3x32x32 inference b256", "onnxruntime", inference, "ResNet-18", 256),
    ("CIFAR-net train step b64", "torch", training, "CIFAR-net", 64),
    ("ResNet-18 3x32x32 train step b64", "torch", training, "ResNet-18", 64),
    ("LeNet-5 inference b1", "onnxruntime", inference, "LeNet-5", 1),
    ("CIFAR-net inference b1", "onnxruntime", inference, "CIFAR-net", 1),
    ("ResNet-18 3x224x224 inference b1", "onnxruntime", inference, "ResNet-18 224", 1),
]


def set_threads(n):
    import fastcnn
    import torch
    fastcnn.set_num_threads(n)
    torch.set_num_threads(n)


def alternate(ours, peer, rounds):
    """Medians of `rounds` alternated timings of each, after two warm-up calls;
    each timing repeats a call until 20 ms have passed."""
    for _ in range(2):
        ours(), peer()

    def once(f):
        count, t0 = 0, time.perf_counter()
        while True:
            f()
            count += 1
            t = time.perf_counter() - t0
            if t >= 0.02:
                return t / count

    a, b = [], []
    for _ in range(rounds):
        a.append(once(ours))
        b.append(once(peer))
    return statistics.median(a), statistics.median(b)


def fmt(s):
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.2f} s"


def measure(row, thread_counts, rounds):
    title, peer_name, factory, model, n = row
    lines = [f"### {title} (peer: {peer_name})", "",
             "| threads | fastcnn | peer | peer / fastcnn | fastcnn speedup vs 1T |",
             "|---|---|---|---|---|"]
    first = None
    for t in thread_counts:
        set_threads(t)
        ours, peer = factory(model, n, t)
        a, b = alternate(ours, peer, rounds)
        first = first or a
        lines.append(f"| {t} | {fmt(a)} | {fmt(b)} | {b / a:.2f} | {first / a:.2f} |")
        print(title, t, fmt(a), fmt(b), f"{b / a:.2f}", f"{first / a:.2f}", file=sys.stderr,
              flush=True)
    return lines + [""]


def wait_policy_lines(args):
    """The batch-1 rows in child processes under each idle-thread policy."""
    lines = ["## Batch-1 latency under OpenMP idle-thread policies", ""]
    for label, env in (("PASSIVE (fastcnn's default)", {}),
                       ("ACTIVE", {"OMP_WAIT_POLICY": "ACTIVE"}),
                       ("GOMP_SPINCOUNT=10000", {"OMP_WAIT_POLICY": "",
                                                 "GOMP_SPINCOUNT": "10000"})):
        child = dict(os.environ, **env)
        if child.get("OMP_WAIT_POLICY") == "":
            del child["OMP_WAIT_POLICY"]
        cmd = [sys.executable, __file__, "--threads", ",".join(map(str, args.threads)),
               "--rounds", str(args.rounds), "--only", "b1", "--child"]
        out = subprocess.run(cmd, env=child, capture_output=True, text=True, timeout=900)
        lines += [f"**{label}**", "", out.stdout.strip() or out.stderr[-2000:], ""]
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2,4,8,16")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", help="regular expression on the row titles")
    p.add_argument("--out", default=os.path.join(HERE, "SCALING.md"))
    p.add_argument("--wait-policy", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",")]
    rows = [r for r in ROWS if not args.only or re.search(args.only, r[0])]
    import fastcnn
    body = []
    for row in rows:
        body += measure(row, args.threads, args.rounds)
    if args.child:
        print("\n".join(body))
        return
    if args.wait_policy:
        body += wait_policy_lines(args)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [f"# Thread scaling: {cpu_model()}, {os.cpu_count()} logical CPUs", "",
            f"`python bench/scaling.py {' '.join(argv or sys.argv[1:])}` on {now}; "
            f"fastcnn {fastcnn.__version__} ({fastcnn._native.cpu_isa()}), "
            f"Python {platform.python_version()}, numpy {np.__version__}.", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(head + body) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
