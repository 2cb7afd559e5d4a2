"""The library's one thread-count setting, passed to every kernel call, and
the OpenMP wait policy its kernels start with.

The setting is process-wide: fastcnn.set_num_threads and threadpoolctl's
limits (fastcnn/_threadpoolctl.py) both write it, the latest write wins.
In a process forked after fastcnn loaded, every kernel runs on one thread
(csrc/threads.c clamps the count passed to C; get_num_threads reports 1).
"""
import contextlib
import os
import warnings

from ._checks import as_int


# Variables by which MPI launchers announce how many ranks share this machine
# (MPICH and Intel MPI's hydra, Open MPI, Slurm's srun).
_LOCAL_RANKS_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_STEP_TASKS_PER_NODE")


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    if usable < cores:          # the launcher (or the user) pinned this process: use its cores
        return usable
    return max(1, usable // _local_ranks())


def _local_ranks():
    """Processes an MPI launcher started on this machine (1 without one), so
    that N ranks on one machine default to cores / N threads each."""
    for name in _LOCAL_RANKS_VARS:
        value = os.environ.get(name, "").split("(")[0].split(",")[0]
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


_num_threads = _default_threads()
_forked_child = False   # mirrors csrc/threads.c's flag, read on every kernel call

FORKED_CHILD_NOTE = "libgomp cannot run parallel regions after fork"


def _after_fork_in_child():
    global _forked_child
    from . import _native   # loaded before the fork: a dictionary look-up
    _forked_child = _native.forked_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _set(n, warn):
    global _num_threads
    n = as_int(n, "n")
    if n < 1:
        raise ValueError(f"n must be positive. Received: n={n}")
    if warn and n > 1 and _forked_child:
        warnings.warn(f"fastcnn runs its kernels on 1 thread in this forked child ({FORKED_CHILD_NOTE}); "
                      f"set_num_threads({n}) is recorded but has no effect here. Use the "
                      "'spawn' or 'forkserver' start method for parallel kernels in workers.",
                      RuntimeWarning, stacklevel=3)
    _num_threads = n


def set_num_threads(n):
    """Set the number of threads every kernel may use, in the whole process.

    threadpoolctl's threadpool_limits also sets it for its duration (see the
    README's Threads section); whichever was set last applies.

    In a child forked after fastcnn was loaded (os.fork, multiprocessing's
    'fork' start method), kernels always run on one thread: the value is
    recorded, a RuntimeWarning says so if n > 1, and get_num_threads()
    returns 1 there.

    Args:
        n: a positive integer.

    Raises:
        ValueError: if n < 1. TypeError: if n is not an integer.
    """
    _set(n, warn=True)


def get_num_threads():
    """The number of threads kernels may use (default: OMP_NUM_THREADS, else the
    cores, divided among the MPI ranks on this machine; 1 in a forked child)."""
    return 1 if _forked_child else _num_threads


@contextlib.contextmanager
def sleeping_idle_threads():
    """Load the kernels with OMP_WAIT_POLICY=PASSIVE unless the user set it.

    OpenMP threads that spin while idle keep a descheduled partner from
    running when the cores are busy with other work: 2-thread training steps
    measured up to 60x slower (132 ms instead of 2 ms). Sleeping waiters cost
    a few microseconds per kernel on an idle machine instead. libgomp reads the
    variable once, when it loads; it is removed again at once, so other
    OpenMP runtimes loaded later do not see it, but a library loaded later
    that shares fastcnn's libgomp (torch on Linux finds the one already
    loaded) runs with PASSIVE too; loaded before fastcnn, it decides the policy
    for both. Set OMP_WAIT_POLICY=ACTIVE yourself on a dedicated machine to spin.
    """
    user_set = "OMP_WAIT_POLICY" in os.environ
    if not user_set:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        if not user_set:
            os.environ.pop("OMP_WAIT_POLICY", None)
