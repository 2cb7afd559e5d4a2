"""The benchmark harness shared by the pytest-benchmark files (bench_*.py) and
the report (compare.py).

A benchmark is a :class:`Case`: one piece of work done by fastcnn and by a
peer (torch, onnxruntime, numpy). ``case.build(threads)`` prepares the inputs
once and returns a :class:`Pair` of zero-argument callables doing that work,
plus a ``check`` that compares fastcnn's result with the peer's. Both sides
get the same arrays (torch tensors share the numpy buffers) and allocate their
outputs on every call; nothing is cached across calls.

``build`` raises :class:`Pending` when the fastcnn side is not in this build
yet (a family not merged), and :class:`MissingPeer` when the peer is not
installed. Reports show those as such; nothing is faked.
"""
import contextlib
import importlib
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

import _path
_path.prefer_checkout()  # this checkout's in-place build first
import fastcnn


class Pending(Exception):
    """The fastcnn side of a benchmark is not in this build yet."""


class MissingPeer(Exception):
    """The peer library of a benchmark is not installed."""


@dataclass
class Pair:
    fastcnn: Callable[[], object]
    peer: Callable[[], object]
    check: Callable[[], None]


@dataclass
class Case:
    """One row of the report.

    group: summary group ("conv fwd", "pooling", "gemm", "train step", ...).
    name: the row's name, unique in the suite.
    peer: "torch", "onnxruntime" or "numpy".
    build: threads -> Pair (the thread count is already set everywhere).
    flops: floating-point operations of one call (compute-bound rows only).
    items: images per call (model rows: shown as images per second).
    target: the ratio (peer time / fastcnn time) BENCHMARKS.md asks for.
    large: a large shape, where 2 threads must be >= 1.85x one thread.
    isolate: environment variables to unset for this row's process (the
        report then runs the row in a child process).
    heavy: one call takes a large part of a second (224x224 CNNs): the
        report times it with fewer warm-up calls and rounds (compare.HEAVY).
    """
    group: str
    name: str
    peer: str
    build: Callable[[int], Pair]
    flops: Optional[float] = None
    items: Optional[int] = None
    target: Optional[float] = None
    large: bool = False
    isolate: tuple = field(default_factory=tuple)
    heavy: bool = False

    @property
    def key(self):
        """Unique per row: the same work may be timed against two peers."""
        return f"{self.name} vs {self.peer}"


# --- availability -------------------------------------------------------------

def fastcnn_attr(path, what):
    """fastcnn object at dotted ``path`` (e.g. "functional.conv2d"), or Pending."""
    obj = fastcnn
    parts = path.split(".")
    for i, part in enumerate(parts):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            try:
                obj = importlib.import_module("fastcnn." + ".".join(parts[:i + 1]))
            except ImportError:
                raise Pending(f"fastcnn.{path} is not in this build yet ({what})") from None
    return obj


def peer_module(name):
    """Import a peer library, or raise MissingPeer."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingPeer(f"{name} is not installed") from None


def peer_version(name):
    try:
        return importlib.import_module(name).__version__
    except ImportError:
        return "missing (not installed)"


# --- threads --------------------------------------------------------------------

@contextlib.contextmanager
def use_threads(n):
    """Run fastcnn, torch, numpy's BLAS (threadpoolctl) with n threads; restore after.
    onnxruntime sessions take n at creation (intra_op_num_threads)."""
    old_fc = fastcnn.get_num_threads()
    fastcnn.set_num_threads(n)
    torch = _maybe("torch")
    old_torch = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(n)
    tpc = _maybe("threadpoolctl")
    limits = tpc.threadpool_limits(limits=n, user_api="blas") if tpc else contextlib.nullcontext()
    try:
        with limits:
            yield n
    finally:
        fastcnn.set_num_threads(old_fc)
        if torch:
            torch.set_num_threads(old_torch)


def _maybe(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# --- correctness ------------------------------------------------------------------

def assert_close(ours, theirs, name, tol=1e-3, mean=False):
    """Max abs difference, relative to the peer's largest magnitude, within tol;
    with ``mean``, the mean abs difference relative to the peer's mean magnitude
    (for Adam, whose update has the size of lr even where the gradient is only
    rounding noise, so single entries may differ by ~lr)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise AssertionError(f"{name}: shape {ours.shape} != peer's {theirs.shape}")
    if not np.all(np.isfinite(ours)):
        raise AssertionError(f"{name}: fastcnn's result is not finite")
    if not ours.size:
        return
    reduce, what = (np.mean, "mean") if mean else (np.max, "max")
    scale = max(float(reduce(np.abs(theirs))), 1e-6)
    err = float(reduce(np.abs(ours - theirs))) / scale
    if err > tol:
        raise AssertionError(f"{name}: {what} |fastcnn - peer| / {what} |peer| = {err:.2e} "
                             f"> {tol:.0e}")


def rng(seed=0):
    return np.random.default_rng(seed)


def randn(r, *shape, scale=1.0):
    x = r.standard_normal(shape, dtype=np.float32)
    if scale != 1.0:
        x *= np.float32(scale)
    return x


# --- timing -------------------------------------------------------------------------

@dataclass
class Timing:
    fastcnn: float      # median seconds per call
    peer: float
    rounds: int


def median_ms(fn, n, warmup=3):
    """Median of n timed calls of fn, in ms, after `warmup` untimed calls (the
    probe scripts' quick timing; reports use :func:`measure`)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _time_calls(fn, n):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def measure(pair, *, warmup=2, min_rounds=5, max_rounds=21, budget=4.0, min_sample=2e-3,
            floor_rounds=3):
    """Median time per call of each side, runs interleaved A B A B ... after warm-up.

    Call pair.check() first: it runs each side at least once, so it is a
    warm-up too; ``warmup`` more untimed calls per side follow. A sample
    repeats a call enough times to last about ``min_sample`` seconds (so
    microsecond calls are not timer noise); the first round has one call per
    side and sizes the others. Rounds stop after ``max_rounds``, or once
    ``min_rounds`` are done and ``budget`` seconds have passed; rows so slow
    that ``min_rounds`` would overrun the budget get fewer, but never below
    ``floor_rounds`` (the report shows how many).
    """
    for _ in range(warmup):
        pair.fastcnn()
        pair.peer()
    a, b = [_time_calls(pair.fastcnn, 1)], [_time_calls(pair.peer, 1)]
    min_rounds = max(floor_rounds, min(min_rounds, int(budget / max(a[0] + b[0], 1e-9))))
    na = max(1, math.ceil(min_sample / max(a[0], 1e-9)))
    nb = max(1, math.ceil(min_sample / max(b[0], 1e-9)))
    start = time.perf_counter()
    while len(a) < max_rounds and (len(a) < min_rounds or time.perf_counter() - start < budget):
        a.append(_time_calls(pair.fastcnn, na))
        b.append(_time_calls(pair.peer, nb))
    return Timing(statistics.median(a), statistics.median(b), len(a))


def conv_out(h, r, stride, pad):
    return (h + 2 * pad - r) // stride + 1


# --- pytest-benchmark --------------------------------------------------------------

def run_pytest_case(benchmark, case, side, threads):
    """pytest-benchmark: build, check, then time one side of ``case`` at
    ``threads`` threads; pending and missing rows are skipped with the reason."""
    import pytest
    slowed = [v for v in case.isolate if v in os.environ]
    if side == "peer" and slowed:
        pytest.skip(f"{' and '.join(slowed)} set, which slows the peer: run "
                    f"`env {' '.join('-u ' + v for v in slowed)} pytest bench/...` "
                    f"(compare.py does this by itself)")
    with use_threads(threads):
        try:
            pair = case.build(threads)
        except Pending as e:
            pytest.skip(f"pending: {e}")
        except MissingPeer as e:
            pytest.skip(f"missing peer: {e}")
        pair.check()
        benchmark.group = f"{case.group} | {case.name} | {threads}T"
        benchmark.extra_info["threads"] = threads
        if case.flops:
            benchmark.extra_info["gflop"] = case.flops / 1e9
        benchmark(pair.fastcnn if side == "fastcnn" else pair.peer)
