"""The thread-count setting and the OpenMP wait policy (fastcnn/_config.py, csrc/threads.c)."""
import sys

import numpy as np
import pytest

import fastcnn
from fastcnn import _native
from subproc import run_python


def test_set_and_get_num_threads():
    old = fastcnn.get_num_threads()
    try:
        fastcnn.set_num_threads(3)
        assert fastcnn.get_num_threads() == 3
        fastcnn.set_num_threads(np.int64(1))
        assert fastcnn.get_num_threads() == 1
    finally:
        fastcnn.set_num_threads(old)


@pytest.mark.parametrize("bad, error, match", [
    (0, ValueError, "n must be positive. Received: n=0"),
    (-2, ValueError, "n must be positive. Received: n=-2"),
    (1.5, TypeError, "n must be an integer. Received: n=1.5"),
    (True, TypeError, "n must be an integer. Received: n=True"),
    ("2", TypeError, "n must be an integer. Received: n='2'"),
])
def test_bad_thread_counts_are_rejected(bad, error, match):
    old = fastcnn.get_num_threads()
    with pytest.raises(error, match=match):
        fastcnn.set_num_threads(bad)
    assert fastcnn.get_num_threads() == old


@pytest.mark.parametrize("env, expected", [("4", 4), ("2,1", 2)])
def test_default_comes_from_omp_num_threads(env, expected, tmp_path):
    done = run_python("import fastcnn; print(fastcnn.get_num_threads())", cwd=tmp_path,
                      OMP_NUM_THREADS=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(expected)]


@pytest.mark.skipif(not _native.openmp_enabled(), reason="built without OpenMP")
@pytest.mark.parametrize("user, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_idle_threads_sleep_unless_the_user_chose(user, expected, tmp_path):
    """OpenMP loads with OMP_WAIT_POLICY=PASSIVE unless set; the variable is
    then removed so libraries loaded later never see it."""
    code = "import os, fastcnn; print('after', os.environ.get('OMP_WAIT_POLICY'))"
    done = run_python(code, cwd=tmp_path, OMP_DISPLAY_ENV="TRUE", OMP_WAIT_POLICY=user)
    assert done.returncode == 0, done.stderr
    assert f"OMP_WAIT_POLICY = '{expected}'" in done.stderr
    assert done.stdout.split() == ["after", str(user)]


@pytest.mark.parametrize("chunks, nthreads", [(64, 16), (5, 8), (1, 2), (2, 2), (3, 2), (97, 2),
                                              (1000, 3), (200, 1)])
def test_worker_pool_runs_every_chunk_once_in_distinct_slots(chunks, nthreads):
    """fastcnn's own worker threads (csrc/pool.c): in each of many loops, every
    chunk runs exactly once and a thread slot (per-thread scratch) never runs
    two chunks at once, whether the workers join early, late or not at all,
    and a loop on fewer threads than the pool has (16 started first) uses no
    more slots than its threads."""
    assert _native._pool_check(chunks, nthreads, 300)


def test_worker_pool_from_many_python_threads_at_once():
    """Callers that find the pool taken run their loops serially, correctly."""
    import threading
    results = []
    start = threading.Barrier(6)

    def worker(nthreads):
        start.wait()
        results.append(_native._pool_check(50, nthreads, 200))

    threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 2, 2, 3, 4, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 6


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names: Linux only")
def test_every_loop_runs_on_the_pool_not_on_openmp_threads(tmp_path):
    """The loops of the ops that pack GEMM operands ahead (Winograd in
    training, the backward data's blocks, a frozen model's weights) and batch
    norm's few channels run on fastcnn's named pool workers: an OpenMP region
    would start libgomp threads, whose spinning after each region takes the
    core the pool's worker needs (csrc/pool.c)."""
    code = """if True:
    import os
    import numpy as np
    import fastcnn
    from fastcnn import _native, functional as F
    def names():
        out = {}
        for t in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{t}/comm") as f:
                out[t] = f.read().strip()
        return out
    before = names()
    fastcnn.set_num_threads(2)
    _native._set_winograd(1)
    r = np.random.default_rng(0)
    x = r.standard_normal((4, 64, 28, 28), dtype=np.float32)
    w = r.standard_normal((64, 64, 3, 3), dtype=np.float32)
    F.conv2d_backward(F.conv2d(x, w, None, 1, 1), x, w, 1, 1)
    _native._set_winograd(0)
    y = F.conv2d(x, w, None, 2, 1)
    F.conv2d_backward(np.ones_like(y), x, w, 2, 1)
    model = fastcnn.Sequential([fastcnn.Conv2d(64, 64, 3, padding=1), fastcnn.ReLU()])
    fastcnn.freeze(model.eval())(x)
    xb = r.standard_normal((8, 3, 64, 64), dtype=np.float32)
    F.batch_norm2d(xb, np.zeros(3, np.float32), np.ones(3, np.float32), training=True)
    new = sorted(n for t, n in names().items() if t not in before)
    print(new)
    assert new and set(new) == {"fastcnn-worker"}, new
"""
    done = run_python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
