"""One process of the memory row: 20 CIFAR-net training steps (batch 64,
SGD with momentum) in fastcnn or torch, then print peak resident memory.

    python bench/memory_run.py fastcnn|torch THREADS [STEPS]

Prints JSON: peak RSS of the whole process (ru_maxrss) and the RSS after
imports and model construction, before the first step, in MiB."""
import json
import resource
import sys

import _path  # noqa: F401  (this checkout's in-place build first)
import models


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    lib, threads = sys.argv[1], int(sys.argv[2])
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    x, labels = models.batch("CIFAR-net", 64)
    if lib == "torch":
        import torch
        torch.set_num_threads(threads)
        tm = models.torch_model("CIFAR-net", torch)
        topt = torch.optim.SGD(tm.parameters(), **models.OPTIMIZERS["SGD-momentum"][2])
        tx, tlabels = torch.from_numpy(x), torch.from_numpy(labels)
        before = rss_mib()
        for _ in range(steps):
            models.torch_train_step(tm, topt, torch, tx, tlabels)
    else:
        import fastcnn
        fastcnn.set_num_threads(threads)
        fm = models.fastcnn_model("CIFAR-net")
        fopt = fastcnn.SGD(fm.parameters(), **models.OPTIMIZERS["SGD-momentum"][2])
        loss_fn = fastcnn.CrossEntropyLoss()
        before = rss_mib()
        for _ in range(steps):
            models.fastcnn_train_step(fm, fopt, loss_fn, x, labels)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak, "before_mib": before, "steps": steps}))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:   # the parent reports it (pending, missing peer, failure)
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
