"""The thread-count setting and the OpenMP wait policy (fastcnn/_config.py, csrc/threads.c)."""
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
