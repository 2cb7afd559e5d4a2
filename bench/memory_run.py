"""One process of the memory row: 20 CIFAR-net training steps (batch 64,
SGD with momentum) in fastcnn or torch, then print peak resident memory.

    python bench/memory_run.py fastcnn|torch THREADS [STEPS]

Prints JSON: peak RSS of the whole process (VmHWM: ru_maxrss would include
the parent's RSS at fork) and the RSS after imports and model construction,
before the first step, in MiB."""
import json
import sys

import _path
_path.prefer_checkout()  # this checkout's in-place build first
import models


def status_mib(field):
    """A memory field of /proc/self/status (Linux), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"{field} not in /proc/self/status")


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
        before = status_mib("VmRSS")
        for _ in range(steps):
            models.torch_train_step(tm, topt, torch, tx, tlabels)
    else:
        import fastcnn
        fastcnn.set_num_threads(threads)
        fm = models.fastcnn_model("CIFAR-net")
        fopt = fastcnn.SGD(fm.parameters(), **models.OPTIMIZERS["SGD-momentum"][2])
        loss_fn = fastcnn.CrossEntropyLoss()
        before = status_mib("VmRSS")
        for _ in range(steps):
            models.fastcnn_train_step(fm, fopt, loss_fn, x, labels)
    peak = status_mib("VmHWM")
    print(json.dumps({"peak_mib": peak, "before_mib": before, "steps": steps}))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:   # the parent reports it (pending, missing peer, failure)
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
