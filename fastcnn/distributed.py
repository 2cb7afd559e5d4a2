"""Data-parallel training across processes on MPI (Horovod's design).

Launch N copies of a script with ``mpiexec -n N python train.py`` (or
``srun``); each copy is a *rank*. Wrap the optimizer::

    from fastcnn import distributed
    opt = distributed.DistributedOptimizer(fastcnn.SGD(model.parameters(), lr=0.01))
    model.fit(x, y, batch_size=256, optimizer=opt, seed=0)

and ``fit`` trains data-parallel: every rank draws the same shuffle, takes
its slice of each global batch (``batch_size`` is the global batch), and the
optimizer averages the gradients of all ranks in one ``Allreduce`` of the
packed gradient buffer before each update, so every rank holds the same
weights and training equals one process with the same global batch (within
float rounding of the all-reduce sums).

Communication goes through mpi4py and the MPI library it is built on
(MPICH, Open MPI, Intel MPI); mpi4py is imported on first use, never by
``import fastcnn``. Without mpi4py, or in a process not started by an MPI
launcher, there is one rank and everything behaves as without this module.

BatchNorm: each rank normalizes its slice with the slice's own batch
statistics (as PyTorch's DistributedDataParallel does); ``fit`` averages the
running statistics of all ranks at the end of every epoch (call
:func:`allreduce_buffers` yourself in a hand-written loop).

Dropout draws its masks per rank, so a model with Dropout trains correctly
but not bit-comparably to one process.
"""
import io
import os
import sys
import time

import numpy as np

from ._checks import as_int
from .optim import Optimizer

__all__ = ["rank", "size", "local_rank", "launched", "broadcast_parameters", "allreduce",
           "allreduce_buffers", "DistributedOptimizer"]

# Environment variables by which MPI launchers announce the job's size.
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
                       "SLURM_STEP_NUM_TASKS")
_REDUCE_OPS = ("mean", "sum", "max", "min")

_state = {}


def launched():
    """The number of ranks an MPI launcher (mpiexec, mpirun, srun) started,
    read from its environment variables, without importing mpi4py; 1 when
    the process was not started by a launcher."""
    for name in _LAUNCHER_SIZE_VARS:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def _comm():
    """MPI.COMM_WORLD, or None for a single process without mpi4py."""
    if "comm" not in _state:
        _state["comm"] = _open_comm()
    return _state["comm"]


def _open_comm():
    try:
        from mpi4py import MPI
    except ImportError:
        if launched() > 1:
            raise ImportError(
                f"this process is one of {launched()} started by an MPI launcher, but mpi4py "
                f"is not installed, so the ranks cannot talk to each other. Install it: "
                f'pip install "fastcnn[mpi]" (or pip install mpi4py against your MPI)') from None
        return None
    comm = MPI.COMM_WORLD
    if comm.Get_size() > 1 and "hook" not in _state:
        _abort_on_uncaught_exception()
    return comm


# How long a failing rank waits between printing its traceback and aborting:
# the launcher (Hydra, mpirun) tears the job down on Abort and may drop output
# of that rank it has not read yet (seen under load: half a traceback).
LAUNCHER_DRAIN_S = 0.5


def _report_in_one_write(report, *exc_info):
    """Run the excepthook ``report`` into a buffer and hand its text to
    stderr in one write, so the launcher forwards all of it or nothing."""
    stderr = sys.stderr
    if stderr is None:
        report(*exc_info)
        return
    buffer = sys.stderr = io.StringIO()
    try:
        report(*exc_info)
    finally:
        sys.stderr = stderr
    stderr.write(buffer.getvalue())
    stderr.flush()


def _abort_on_uncaught_exception():
    """An exception that ends one rank aborts the whole job, so the other
    ranks do not wait forever in their next collective call (or in MPI's
    start-up, when a rank fails before its first call of this module)."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        _report_in_one_write(previous, kind, value, traceback)
        time.sleep(LAUNCHER_DRAIN_S)
        try:
            comm = _comm()
        except ImportError:
            return
        if comm is not None:
            comm.Abort(1)

    sys.excepthook = _state["hook"] = hook


if launched() > 1:          # started by mpiexec / srun: guard against hangs from import on
    _abort_on_uncaught_exception()


def rank():
    """This process's rank, 0 .. size() - 1 (0 without MPI)."""
    comm = _comm()
    return 0 if comm is None else comm.Get_rank()


def size():
    """The number of ranks in the job (1 without MPI)."""
    comm = _comm()
    return 1 if comm is None else comm.Get_size()


def local_rank():
    """This process's rank among the ranks on the same machine (0 without MPI)."""
    if "local_rank" not in _state:
        comm = _comm()
        if comm is None:
            _state["local_rank"] = 0
        else:
            from mpi4py import MPI
            node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
            _state["local_rank"] = node.Get_rank()
            node.Free()
    return _state["local_rank"]


def allreduce(array, op="mean"):
    """``array`` reduced element-wise over all ranks, returned on every rank.

    Args:
        array: a numeric array (or scalar) of the same shape and dtype on every rank.
        op: 'mean' (default), 'sum', 'max' or 'min'. 'mean' returns floats.

    Returns:
        a new numpy array of ``array``'s shape.

    Example:
        >>> distributed.allreduce(np.array([local_loss]))      # mean over ranks
    """
    if op not in _REDUCE_OPS:
        raise ValueError(f"op must be one of {list(_REDUCE_OPS)}. Received: op={op!r}")
    out = np.array(array, copy=True, order="C")
    if out.dtype.kind not in "fiu":
        raise TypeError(f"array must hold real numbers. Received: dtype={out.dtype}")
    if op == "mean" and out.dtype.kind != "f":
        out = out.astype(np.float64)
    comm = _comm()
    if comm is not None and comm.Get_size() > 1:
        from mpi4py import MPI
        mpi_op = {"mean": MPI.SUM, "sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]
        comm.Allreduce(MPI.IN_PLACE, out, op=mpi_op)
        if op == "mean":
            out /= comm.Get_size()
    return out


def broadcast_parameters(model, root=0):
    """Copy every parameter and buffer (running statistics) of ``model``
    from rank ``root`` to all ranks, in one broadcast of one packed buffer.

    Args:
        model: a model (Sequential, Module, Layer) of the same architecture on every rank.
        root: the rank whose values everyone takes. Default 0.
    """
    arrays = _state_arrays(model)
    root = _check_root(root)
    comm = _comm()
    if comm is None or comm.Get_size() == 1:
        return
    packed = _pack(arrays)
    comm.Bcast(packed, root=root)
    _unpack(packed, arrays)


def allreduce_buffers(model):
    """Average the floating-point buffers of ``model`` (BatchNorm's running
    mean and variance) over all ranks, in one all-reduce; integer buffers
    (``num_batches_tracked``) take rank 0's value. ``fit`` does this at the
    end of every epoch; call it in a hand-written loop before evaluating or
    saving a model with BatchNorm."""
    _state_arrays(model)
    comm = _comm()
    if comm is None or comm.Get_size() == 1:
        return
    buffers = [b for _, b in model.named_buffers()]
    floats = [b for b in buffers if b.dtype.kind == "f"]
    if floats:
        packed = _pack(floats)
        from mpi4py import MPI
        comm.Allreduce(MPI.IN_PLACE, packed, op=MPI.SUM)
        packed /= comm.Get_size()
        _unpack(packed, floats)
    others = [b for b in buffers if b.dtype.kind != "f"]
    if others:
        packed = _pack(others)
        comm.Bcast(packed, root=0)
        _unpack(packed, others)


def _check_root(root):
    root = as_int(root, "root")
    if not 0 <= root < size():
        raise ValueError(f"root must be a rank in [0, {size()}). Received: root={root}")
    return root


def _state_arrays(model):
    if not hasattr(model, "named_state"):
        raise TypeError(f"model must be a fastcnn model or layer. "
                        f"Received: {type(model).__name__}")
    return [a for _, a in model.named_state()]


def _pack(arrays):
    """One float64 buffer holding every array's values (float32 and int64 exactly)."""
    return np.concatenate([np.ravel(a).astype(np.float64) for a in arrays]) if arrays \
        else np.empty(0)


def _unpack(packed, arrays):
    offset = 0
    for a in arrays:
        a[...] = packed[offset:offset + a.size].reshape(a.shape)
        offset += a.size


class DistributedOptimizer(Optimizer):
    """Wraps a fastcnn optimizer for data-parallel training over MPI ranks.

    ``step()`` averages every parameter's gradient over the ranks in one
    in-place ``Allreduce`` of the optimizer's packed gradient buffer (never
    one call per parameter), then runs the wrapped optimizer's update, so
    every rank applies the same update. Building it broadcasts the
    parameters from rank 0 (one call), so the ranks start from the same
    weights. ``zero_grad``, ``lr`` (and so the learning-rate schedules),
    ``steps``, ``state_dict`` and ``load_state_dict`` are the wrapped
    optimizer's. With one rank it is the wrapped optimizer.

    Build it on every rank, in the same order: it is a collective call.

    Args:
        optimizer: a fastcnn Optimizer (SGD, Adam, AdamW, ...).

    Attributes:
        optimizer: the wrapped optimizer.
        allreduce_seconds: total time spent in the gradient all-reduce.
        allreduce_bytes: bytes of gradients each rank contributes per step.

    Example:
        >>> opt = distributed.DistributedOptimizer(fastcnn.Adam(model.parameters()))
        >>> model.fit(x, y, batch_size=256, optimizer=opt, seed=0)
    """

    def __init__(self, optimizer):
        if isinstance(optimizer, DistributedOptimizer):
            raise TypeError("optimizer is already a DistributedOptimizer; wrap the plain one")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastcnn Optimizer. "
                            f"Received: {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.allreduce_seconds = 0.0
        self._comm = _comm()
        self._size = 1 if self._comm is None else self._comm.Get_size()
        self._rank = 0 if self._comm is None else self._comm.Get_rank()
        self.data_parallel = _DataParallel(self._comm) if self._size > 1 else None
        if self._size > 1:
            self._comm.Bcast(optimizer._flat()[0], root=0)

    # delegation ---------------------------------------------------------------
    params = property(lambda self: self.optimizer.params)
    allreduce_bytes = property(lambda self: self.optimizer._flat()[1].nbytes)

    @property
    def lr(self):
        return self.optimizer.lr

    @lr.setter
    def lr(self, value):
        self.optimizer.lr = value

    @property
    def steps(self):
        return self.optimizer.steps

    @steps.setter
    def steps(self, value):
        self.optimizer.steps = value

    def _flat(self):
        return self.optimizer._flat()

    def zero_grad(self):
        self.optimizer.zero_grad()

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state)

    # the step -----------------------------------------------------------------
    def synchronize(self):
        """Average the gradients over the ranks (``step`` calls this first)."""
        if self._size == 1:
            return
        from mpi4py import MPI
        grad = self.optimizer._flat()[1]
        start = time.perf_counter()
        self._comm.Allreduce(MPI.IN_PLACE, grad, op=MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - start
        grad *= np.float32(1.0 / self._size)

    def step(self):
        """Average the gradients over the ranks, then update every parameter."""
        self.synchronize()
        self.optimizer.step()

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer!r}, ranks={self._size})"


class _DataParallel:
    """What fit / evaluate / predict do differently on more than one rank
    (fastcnn.training's _LocalData is the one-process twin)."""

    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def rows(self, n):
        """This rank's contiguous share of n rows: a slice."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def shard(self, idx):
        """This rank's slice of the indices of a global batch."""
        return idx[self.rows(len(idx))]

    def common_seed(self, seed):
        """The same seed on every rank: rank 0's (drawn there when None)."""
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        return self.comm.bcast(seed, root=0)

    def reduce_sums(self, *values):
        """Each value summed over the ranks (floats, one small all-reduce)."""
        from mpi4py import MPI
        buf = np.array(values, np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return tuple(buf.tolist())

    def loss_grad_scale(self, local, total):
        """Factor on this rank's loss gradient (of its slice's mean) so that
        the averaged gradients are those of the global batch's mean, also
        when the slices differ in size (the last batch)."""
        return local * self.size / total

    def end_epoch(self, model):
        allreduce_buffers(model)

    def gather_rows(self, part, n):
        """The row blocks of all ranks (rank order), concatenated on every rank."""
        from mpi4py import MPI
        counts = np.array(self.comm.allgather(part.shape[0]))
        row = int(np.prod(part.shape[1:], dtype=np.int64))
        out = np.empty((n,) + part.shape[1:], np.float32)
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]) * row
        self.comm.Allgatherv(np.ascontiguousarray(part, np.float32),
                             [out, counts * row, displs, MPI.FLOAT])
        return out
