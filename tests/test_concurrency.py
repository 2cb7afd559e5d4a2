"""The functional API called from many Python threads at once.

Every kernel runs with the GIL released, so calls from different threads
overlap in native code and share its static state (the conv2d scratch cache,
the thread pools). Each of 8 threads calls an op a few times on its own random
input, all starting together at a Barrier; every result must be bit-identical
to the same call made sequentially, with 1 and with 2 OpenMP threads per call.
"""
import threading

import numpy as np
import pytest

import fastcnn.functional as F

THREADS = 8
ITERATIONS = 16


def _conv2d(rng):
    # Two shapes: stride 1 with C*R*S <= 75 (the direct kernel) and stride 2
    # with C*R*S = 144 (im2col + GEMM in the cached scratch buffer).
    small = (rng.standard_normal((2, 3, 12, 12)), rng.standard_normal((4, 3, 3, 3)),
             rng.standard_normal(4), 1, 1)
    large = (rng.standard_normal((2, 16, 11, 11)), rng.standard_normal((8, 16, 3, 3)),
             rng.standard_normal(8), 2, 0)
    inputs = []
    for x, w, b, stride, padding in (small, large):
        x, w, b = (a.astype(np.float32) for a in (x, w, b))
        y = F.conv2d(x, w, b, stride=stride, padding=padding)
        inputs.append((x, w, b, stride, padding, rng.standard_normal(y.shape).astype(np.float32)))

    def call():
        out = []
        for x, w, b, stride, padding, gy in inputs:
            out.append(F.conv2d(x, w, b, stride=stride, padding=padding))
            out.extend(F.conv2d_backward(gy, x, w, stride=stride, padding=padding))
        return out
    return call


def _max_pool2d(rng):
    x = rng.standard_normal((2, 4, 13, 13)).astype(np.float32)
    gy = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)

    def call():
        y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
        return [y, idx, F.max_pool2d_backward(gy, idx, x.shape)]
    return call


def _avg_pool2d(rng):
    x = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
    gy = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)

    def call():
        return [F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
                F.avg_pool2d_backward(gy, x.shape, 3, 2, 1, count_include_pad=False)]
    return call


def _linear(rng):
    x = rng.standard_normal((8, 40)).astype(np.float32)
    w = rng.standard_normal((24, 40)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    gy = rng.standard_normal((8, 24)).astype(np.float32)

    def call():
        return [F.linear(x, w, b), *F.linear_backward(gy, x, w)]
    return call


def _worker_pool(rng):
    # Large enough to run on fastcnn's worker threads (csrc/pool.c): a 1x1
    # convolution (GEMM or channel-vector kernel), a depthwise 3x3 one, both
    # backward, and a residual add.
    x = rng.standard_normal((2, 64, 16, 16)).astype(np.float32)
    w1 = rng.standard_normal((64, 64, 1, 1)).astype(np.float32)
    wd = rng.standard_normal((64, 1, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 64, 16, 16)).astype(np.float32)

    def call():
        y = F.conv2d(x, w1)
        z = F.conv2d(y, wd, padding=1, groups=64)
        return [y, z, F.add(y, z), *F.conv2d_backward(gy, x, w1),
                *F.conv2d_backward(gy, y, wd, padding=1, groups=64)]
    return call


OPS = {"conv2d": _conv2d, "max_pool2d": _max_pool2d, "avg_pool2d": _avg_pool2d,
       "linear": _linear, "worker_pool": _worker_pool}


def _run_together(calls):
    """Run calls[i] ITERATIONS times in thread i, all threads released at once;
    returns each thread's list of results (re-raising the first error)."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)
    errors = []

    def worker(i):
        try:
            barrier.wait(timeout=30)
            results[i] = [calls[i]() for _ in range(ITERATIONS)]
        except BaseException as e:     # reported by the main thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker thread did not finish"
    if errors:
        raise errors[0]
    return results


def _check(expected, results):
    for i, want in enumerate(expected):
        for it, got in enumerate(results[i]):
            assert len(got) == len(want)
            for k, (g, e) in enumerate(zip(got, want)):
                if e is None:
                    assert g is None
                    continue
                assert g.dtype == e.dtype and g.shape == e.shape
                assert np.array_equal(g, e), \
                    f"thread {i}, iteration {it}, output {k}: differs from the sequential call"


@pytest.mark.parametrize("op", sorted(OPS))
def test_functional_from_threads(op, num_threads, rng):
    calls = [OPS[op](np.random.default_rng(rng.integers(2**32))) for _ in range(THREADS)]
    expected = [call() for call in calls]      # the same calls, one after another
    _check(expected, _run_together(calls))


def test_mixed_ops_from_threads(num_threads, rng):
    """The 8 threads run different ops at once (conv2d, pooling and linear overlap)."""
    names = sorted(OPS)
    calls = [OPS[names[i % len(names)]](np.random.default_rng(rng.integers(2**32)))
             for i in range(THREADS)]
    expected = [call() for call in calls]
    _check(expected, _run_together(calls))
