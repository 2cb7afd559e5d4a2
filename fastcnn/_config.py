"""The library's one thread-count setting, passed to every kernel call."""
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
