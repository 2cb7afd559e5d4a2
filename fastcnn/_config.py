"""The library's one thread-count setting, passed to every kernel call, and
the OpenMP wait policy its kernels start with."""
import contextlib
import os

from ._checks import as_int


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_num_threads = _default_threads()


def set_num_threads(n):
    """Set the number of threads every kernel may use.

    Args:
        n: a positive integer.

    Raises:
        ValueError: if n < 1. TypeError: if n is not an integer.
    """
    global _num_threads
    n = as_int(n, "n")
    if n < 1:
        raise ValueError(f"n must be positive. Received: n={n}")
    _num_threads = n


def get_num_threads():
    """The number of threads kernels may use (default: OMP_NUM_THREADS, else the cores)."""
    return _num_threads


@contextlib.contextmanager
def sleeping_idle_threads():
    """Load the kernels with OMP_WAIT_POLICY=PASSIVE unless the user set it.

    OpenMP threads that spin while idle keep a descheduled partner from
    running when the cores are busy with other work: 2-thread training steps
    measured up to 60x slower (132 ms instead of 2 ms). Sleeping waiters cost
    a few microseconds per kernel on an idle machine instead. libgomp reads the
    variable once, when it loads; it is removed again at once, so libraries
    loaded later (torch bundles its own OpenMP) never see it. Set
    OMP_WAIT_POLICY=ACTIVE yourself on a dedicated machine to spin.
    """
    user_set = "OMP_WAIT_POLICY" in os.environ
    if not user_set:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        if not user_set:
            os.environ.pop("OMP_WAIT_POLICY", None)
