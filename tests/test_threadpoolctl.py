"""threadpoolctl sees and limits fastcnn's threads (fastcnn/_threadpoolctl.py)."""
import sys

import numpy as np
import pytest

import fastcnn
from fastcnn import _native
from fastcnn import functional as F
from subproc import run_python

threadpoolctl = pytest.importorskip(
    "threadpoolctl", minversion="3.0",
    reason="threadpoolctl >= 3 (in the 'test' extra) is needed to test its control of fastcnn")


def fastcnn_pools():
    return [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "fastcnn"]


@pytest.fixture
def two_threads():
    old = fastcnn.get_num_threads()
    fastcnn.set_num_threads(2)
    yield
    fastcnn.set_num_threads(old)


def test_threadpool_info_reports_fastcnn_with_its_count(two_threads):
    pools = fastcnn_pools()
    assert len(pools) == 1, threadpoolctl.threadpool_info()
    pool = pools[0]
    assert pool["user_api"] == "openmp"
    assert pool["num_threads"] == 2
    assert pool["filepath"] == _native.__file__ or pool["filepath"].endswith(
        _native.__file__.rsplit("/", 1)[-1])
    assert pool["version"] == fastcnn.__version__
    fastcnn.set_num_threads(3)
    assert fastcnn_pools()[0]["num_threads"] == 3


@pytest.mark.parametrize("user_api", [None, "openmp"])
def test_limits_govern_fastcnn_and_are_restored(user_api, two_threads):
    x = np.random.default_rng(0).standard_normal(1 << 17).astype(np.float32)
    with threadpoolctl.threadpool_limits(1, user_api=user_api):
        assert fastcnn.get_num_threads() == 1
        assert fastcnn_pools()[0]["num_threads"] == 1
        np.testing.assert_array_equal(F.relu(x), np.maximum(x, 0))
    assert fastcnn.get_num_threads() == 2
    assert fastcnn_pools()[0]["num_threads"] == 2


def test_blas_limits_leave_fastcnn_alone(two_threads):
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert fastcnn.get_num_threads() == 2
    assert fastcnn.get_num_threads() == 2


def test_set_num_threads_keeps_working_inside_and_outside(two_threads):
    """The latest write wins; a block's exit restores the count from before it."""
    fastcnn.set_num_threads(3)
    with threadpoolctl.threadpool_limits(1):
        assert fastcnn.get_num_threads() == 1
        fastcnn.set_num_threads(2)
        assert fastcnn.get_num_threads() == 2
        with threadpoolctl.threadpool_limits(1, user_api="openmp"):
            assert fastcnn.get_num_threads() == 1
        assert fastcnn.get_num_threads() == 2
    assert fastcnn.get_num_threads() == 3
    fastcnn.set_num_threads(2)
    assert fastcnn.get_num_threads() == 2


def test_threadpool_limits_as_decorator(two_threads):
    @threadpoolctl.threadpool_limits.wrap(limits=1)
    def inside():
        return fastcnn.get_num_threads()

    assert inside() == 1
    assert fastcnn.get_num_threads() == 2


@pytest.mark.parametrize("imports", ["import fastcnn, threadpoolctl",
                                     "import threadpoolctl, fastcnn"])
def test_either_import_order_registers(imports, tmp_path):
    code = (f"{imports}; fastcnn.set_num_threads(2)\n"
            "from threadpoolctl import threadpool_info, threadpool_limits\n"
            "n = lambda: [i['num_threads'] for i in threadpool_info()"
            " if i['internal_api'] == 'fastcnn']\n"
            "with threadpool_limits(1): print(n(), fastcnn.get_num_threads())\n"
            "print(n(), fastcnn.get_num_threads())")
    done = run_python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[1] 1", "[2] 2"]


def test_import_fastcnn_does_not_import_threadpoolctl(tmp_path):
    code = ("import sys, fastcnn\nprint('threadpoolctl' in sys.modules)\n"
            "fastcnn.register_threadpoolctl(); fastcnn.register_threadpoolctl()\n"
            "import threadpoolctl\n"
            "print(sum(i['internal_api'] == 'fastcnn' for i in threadpoolctl.threadpool_info()))")
    done = run_python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "1"]


def test_registered_in_this_process():
    assert "threadpoolctl" in sys.modules
    assert fastcnn._threadpoolctl._registered
