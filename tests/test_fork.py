"""Fork safety (csrc/threads.c's fork handler, fastcnn/_config.py): a process
forked after fastcnn ran parallel kernels runs them serially instead of
hanging, and pools of every start method run fastcnn in their workers.

Each scenario runs in its own interpreter (tests/fork_scenarios.py) that does
the forking, with deadlines inside and a timeout outside, so a hang fails the
test instead of blocking the suite.
"""
import multiprocessing
import os

import pytest

from fastcnn import _native
from fastcnn._config import _default_threads
from subproc import run_python_args

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "fork_scenarios.py")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")


def run_scenario(name, tmp_path):
    done = run_python_args([SCRIPT, name], cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "PASS", done.stdout
    return done.stdout


@pytest.mark.parametrize("name", ["fork", "fork-unused"])
def test_forked_child_runs_serial_kernels(name, tmp_path):
    """conv2d, predict and a training step in an os.fork() child, after the
    parent ran 2-thread kernels ('fork') or none ('fork-unused')."""
    out = run_scenario(name, tmp_path)
    assert "fork exit 0" in out
    assert "child threads 1" in out
    if _native.openmp_enabled():
        assert ("child OpenMP: on (serial in this forked child: libgomp cannot run parallel "
                "regions after fork)") in out


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_pool_workers_predict(method, tmp_path):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"start method {method!r} not available here")
    out = run_scenario(f"pool-{method}", tmp_path)
    assert f"pool-{method} ok" in out
    # fork workers inherit the fork flag; forkserver and spawn workers load
    # fastcnn afresh, with the default thread count
    threads = out.split("worker threads ")[1].splitlines()[0]
    per_worker = 1 if method == "fork" else _default_threads()
    assert threads == str([per_worker] * 4)
