"""Training runs of tests/test_distributed.py, each run twice by the test:
on 2 MPI ranks (``mpiexec -n 2 python mpi_scenarios.py NAME OUT``, the data
parallel way) and in one process without fastcnn.distributed
(``python mpi_scenarios.py NAME OUT --reference``, the plain way with the
same global batches). Rank 0 (or the one process) writes the final state
dict and the figures to compare into the .npz file OUT.
"""
import sys

import numpy as np

import fastcnn
from fastcnn.losses import CrossEntropyLoss

GLOBAL_BATCH = 64


def data(n, shape, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    return x, y


def lenet():
    return fastcnn.Sequential(
        fastcnn.Conv2d(1, 6, 5, padding=2), fastcnn.ReLU(), fastcnn.MaxPool2d(2),
        fastcnn.Conv2d(6, 16, 5), fastcnn.ReLU(), fastcnn.MaxPool2d(2), fastcnn.Flatten(),
        fastcnn.Linear(400, 120), fastcnn.ReLU(), fastcnn.Linear(120, 84), fastcnn.ReLU(),
        fastcnn.Linear(84, 10), seed=0)


def bn_net():
    return fastcnn.Sequential(
        fastcnn.Conv2d(3, 8, 3, padding=1), fastcnn.BatchNorm2d(8), fastcnn.ReLU(),
        fastcnn.MaxPool2d(2), fastcnn.Conv2d(8, 8, 3, padding=1), fastcnn.BatchNorm2d(8),
        fastcnn.ReLU(), fastcnn.Flatten(), fastcnn.Linear(8 * 8 * 8, 10), seed=0)


def wrap(optimizer, reference):
    if reference:
        return optimizer
    from fastcnn import distributed
    return distributed.DistributedOptimizer(optimizer)


def lenet_fit(reference):
    """LeNet, 2 epochs of fit, SGD with momentum, with validation data; 301
    examples make a last batch of 45 (slices of 22 and 23), a second fit on
    257 a last batch of 1 (one rank's slice is empty); then evaluate and
    predict."""
    model = lenet()
    opt = wrap(fastcnn.SGD(model.parameters(), lr=0.05, momentum=0.9), reference)
    x, y = data(301, (1, 28, 28))
    x2, y2 = data(257, (1, 28, 28), seed=2)
    history = model.fit(x, y, epochs=2, batch_size=GLOBAL_BATCH, optimizer=opt, seed=3,
                        verbose=2, validation_data=(x2[:51], y2[:51]))
    history2 = model.fit(x2, y2, epochs=1, batch_size=GLOBAL_BATCH, optimizer=opt, seed=4,
                         verbose=0)
    loss, accuracy = model.evaluate(x, y, batch_size=50)
    figures = {"loss": history["loss"] + history2["loss"],
               "accuracy": history["accuracy"] + history2["accuracy"],
               "val_loss": history["val_loss"], "val_accuracy": history["val_accuracy"],
               "evaluate": [loss, accuracy], "predict": model.predict(x, batch_size=40)}
    return model, figures


def adam_loop(reference):
    """A hand-written loop with Adam: each rank runs its half of every
    global batch; the reference runs the whole batch."""
    model = lenet()
    opt = wrap(fastcnn.Adam(model.parameters(), lr=2e-3), reference)
    rank, size = (0, 1) if reference else (opt._rank, opt._size)
    loss_fn = CrossEntropyLoss()
    x, y = data(256, (1, 28, 28))
    losses = []
    for epoch in range(2):
        for start in range(0, len(x), GLOBAL_BATCH):
            share = GLOBAL_BATCH // size
            lo = start + rank * share
            out = model(x[lo:lo + share])
            losses.append(loss_fn(out, y[lo:lo + share]))
            opt.zero_grad()
            model.backward(loss_fn.backward(), need_grad_input=False)
            opt.step()
    return model, {"steps": [opt.steps]}


def batchnorm_fit(reference):
    """A model with BatchNorm, 2 epochs of fit with SGD + momentum. On 2 ranks
    each normalizes its half of the batch with the half's statistics and fit
    averages the running statistics at the end of each epoch; the reference
    does the same in one process: both halves forward and backward from the
    same weights, gradients accumulated, running statistics averaged."""
    model = bn_net()
    x, y = data(256, (3, 16, 16))
    opt = wrap(fastcnn.SGD(model.parameters(), lr=0.05, momentum=0.9), reference)
    if not reference:
        model.fit(x, y, epochs=2, batch_size=GLOBAL_BATCH, optimizer=opt, seed=5, verbose=0)
        return model, {}
    rng = np.random.default_rng(5)
    loss_fn = CrossEntropyLoss()
    for epoch in range(2):
        order = rng.permutation(len(x))
        for start in range(0, len(x), GLOBAL_BATCH):
            idx = order[start:start + GLOBAL_BATCH]
            _two_rank_step(model, opt, loss_fn, [idx[:len(idx) // 2], idx[len(idx) // 2:]],
                           x, y)
    return model, {}


def _two_rank_step(model, opt, loss_fn, halves, x, y):
    buffers = [b for _, b in model.named_buffers() if b.dtype.kind == "f"]
    start = [b.copy() for b in buffers]
    after = []
    opt.zero_grad()
    for half in halves:
        for b, s in zip(buffers, start):
            b[...] = s
        loss_fn(model(x[half]), y[half])
        model.backward(loss_fn.backward() * np.float32(0.5), need_grad_input=False)
        after.append([b.copy() for b in buffers])
    for i, b in enumerate(buffers):
        b[...] = (after[0][i] + after[1][i]) / 2
    for _, b in model.named_buffers():
        if b.dtype.kind != "f":
            b[...] -= 1          # one step counted per global batch, as on each rank
    opt.step()


def checkpoint(reference):
    """One epoch of LeNet on 2 ranks; rank 0 writes the checkpoint (model
    file and optimizer state) into the working directory."""
    model = lenet()
    opt = wrap(fastcnn.SGD(model.parameters(), lr=0.05, momentum=0.9), reference)
    x, y = data(256, (1, 28, 28))
    model.fit(x, y, epochs=1, batch_size=GLOBAL_BATCH, optimizer=opt, seed=3, verbose=0)
    if reference or opt._rank == 0:
        model.save("checkpoint.fcnn")
        np.savez("checkpoint_optimizer.npz", **opt.state_dict())
    return model, {}


def resume(reference):
    """The checkpoint resumed for one more epoch: on 2 ranks, or in one process."""
    model = fastcnn.load("checkpoint.fcnn")
    opt = fastcnn.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with np.load("checkpoint_optimizer.npz") as state:
        opt.load_state_dict({k: v[()] for k, v in state.items()})     # 0-d arrays: scalars
    opt = wrap(opt, reference)
    x, y = data(256, (1, 28, 28))
    model.fit(x, y, epochs=1, batch_size=GLOBAL_BATCH, optimizer=opt, seed=4, verbose=0)
    return model, {"steps": [opt.steps]}


def fails_on_one_rank(reference):
    """Rank 1 raises while rank 0 waits in a collective: the job must end
    (with an error), not hang."""
    from fastcnn import distributed
    if distributed.rank() == 1:
        raise ValueError("rank 1 fails on purpose")
    distributed.allreduce(np.ones(3))
    return None, {}


def fails_before_mpi_starts(reference):
    """Rank 1 raises before any call of fastcnn.distributed (MPI not started
    there) while rank 0 waits in MPI's start-up: the job must end too."""
    import os
    from fastcnn import distributed   # importing it under a launcher guards the job
    if os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK")) == "1":
        raise ValueError("rank 1 fails on purpose")
    distributed.allreduce(np.ones(3))
    return None, {}


SCENARIOS = {"lenet_fit": lenet_fit, "adam_loop": adam_loop, "batchnorm_fit": batchnorm_fit,
             "checkpoint": checkpoint, "resume": resume, "fails_on_one_rank": fails_on_one_rank,
             "fails_before_mpi_starts": fails_before_mpi_starts}


def main(name, out, reference):
    model, figures = SCENARIOS[name](reference)
    rank = 0
    if not reference:
        from fastcnn import distributed
        rank = distributed.rank()
        figures["ranks"] = [distributed.size()]
    if rank == 0:
        state = {"state." + k: v for k, v in model.state_dict().items()}
        np.savez(out, **state, **{k: np.asarray(v) for k, v in figures.items()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--reference" in sys.argv[3:])
