"""Fork scenarios for tests/test_fork.py, run as a script in a subprocess:

    python fork_scenarios.py fork|fork-unused|pool-fork|pool-forkserver|pool-spawn

The parent first runs parallel kernels on 2 threads (which starts libgomp's
thread pool: the state that used to hang a forked child), then forks. Every
wait has its own deadline, and a child or pool that misses it is killed, so a
hang fails the scenario (exit status 1) instead of leaving stray processes.
Prints one line per check; exits 0 when all pass.
"""
import multiprocessing
import os
import signal
import sys
import time
import warnings

import numpy as np

import fastcnn
from fastcnn import cli
from fastcnn import functional as F

DEADLINE = 30.0


def lenet():
    return fastcnn.Sequential(
        fastcnn.Conv2d(1, 6, 5, padding=2), fastcnn.ReLU(), fastcnn.MaxPool2d(2),
        fastcnn.Conv2d(6, 16, 5), fastcnn.ReLU(), fastcnn.MaxPool2d(2), fastcnn.Flatten(),
        fastcnn.Linear(400, 120), fastcnn.ReLU(), fastcnn.Linear(120, 84), fastcnn.ReLU(),
        fastcnn.Linear(84, 10), seed=0)


def images(n=16):
    return np.random.default_rng(0).standard_normal((n, 1, 28, 28)).astype(np.float32)


def parallel_kernels():
    """Kernels big enough to run on 2 threads; returns conv2d's output."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    F.relu(rng.standard_normal(1 << 20).astype(np.float32))
    return x, w, F.conv2d(x, w, None, padding=1)


def predict_in_worker(_):
    """A pool task: the worker's thread count and a LeNet prediction."""
    return fastcnn.get_num_threads(), lenet().predict(images())


def child_work(x, w, expected):
    """Everything a forked child checks; raises on any failure."""
    assert fastcnn.get_num_threads() == 1, fastcnn.get_num_threads()
    np.testing.assert_allclose(F.conv2d(x, w, None, padding=1), expected, rtol=1e-4, atol=1e-4)
    model = lenet()
    assert model.predict(images()).shape == (16, 10)
    y = np.arange(16) % 10
    model.fit(images(), y, epochs=1, batch_size=8, verbose=0)
    lines = []
    cli.info(out=lines.append)
    openmp = [line for line in lines if line.startswith("OpenMP:")]
    print("child", openmp[0], flush=True)
    if fastcnn._native.openmp_enabled():
        assert "serial in this forked child" in openmp[0], openmp
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastcnn.set_num_threads(4)
    assert fastcnn.get_num_threads() == 1
    assert any("forked child" in str(c.message) for c in caught), caught
    print("child threads", fastcnn.get_num_threads(), flush=True)


def wait_child(pid):
    """The child's exit status; kills it and returns -1 past the deadline."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -1


def scenario_fork(warm):
    if warm:
        x, w, expected = parallel_kernels()
    else:
        rng = np.random.default_rng(1)
        x = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
        w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
        expected = None
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if expected is None:   # no kernel ran before the fork: the child's own result
                expected = F.conv2d(x, w, None, padding=1)
            child_work(x, w, expected)
            code = 0
        except BaseException as e:  # report, then exit non-zero
            print("child failed:", repr(e), flush=True)
        finally:
            os._exit(code)
    code = wait_child(pid)
    print(f"fork exit {code} in {time.perf_counter() - start:.2f} s", flush=True)
    assert fastcnn.get_num_threads() == 2   # the parent keeps its threads
    parallel_kernels()
    return code == 0


def scenario_pool(method):
    parallel_kernels()
    expected = lenet().predict(images())
    start = time.perf_counter()
    pool = multiprocessing.get_context(method).Pool(2)
    try:
        results = pool.map_async(predict_in_worker, range(4)).get(DEADLINE)
    except multiprocessing.TimeoutError:
        print(f"pool-{method} timed out", flush=True)
        pool.terminate()
        return False
    pool.close()
    pool.join()
    for _, out in results:
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    print(f"pool-{method} ok in {time.perf_counter() - start:.2f} s, worker threads "
          f"{[nt for nt, _ in results]}", flush=True)
    return True


def main(name):
    fastcnn.set_num_threads(2)
    if name == "fork":
        ok = scenario_fork(warm=True)
    elif name == "fork-unused":
        ok = scenario_fork(warm=False)
    else:
        ok = scenario_pool(name.split("-", 1)[1])
    print("PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
