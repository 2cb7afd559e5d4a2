"""fastcnn.distributed: data-parallel training on MPI ranks equals one process.

The equivalence tests launch ``mpiexec -n 2 python tests/mpi_scenarios.py``
(a timeout kills the whole job: a hang fails the test) and run the same
scenario in one process without fastcnn.distributed, then compare every
weight: max abs difference <= 1e-5. They skip, saying why, without mpi4py
or an ``mpiexec`` (``pip install "fastcnn[mpi]"`` brings both).

The environment of the launched job (MPI_ENV) makes ``mpiexec -n 2``
reliable in containers and CI: hydra (MPICH, Intel MPI) starts local ranks
by fork instead of ssh; Open MPI is allowed to run as root and to place 2
ranks on fewer cores; each rank computes on one thread. Every process
(ranks and reference) picks its convolution paths by shape, not by timing
(FASTCNN_CONV_TUNE=0): timed choices may differ between processes on a busy
machine, and another path rounds otherwise (a 2-rank Adam run once ended
1.2e-5 from its reference, against 4.5e-7 with the same paths).
"""
import importlib.util
import os
import re
import shutil
import sys

import numpy as np
import pytest

from subproc import run_command, run_python

SCENARIOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi_scenarios.py")
TIMEOUT = 240
TOLERANCE = 1e-5
SAME_PATHS = {"OMP_NUM_THREADS": "1", "FASTCNN_CONV_TUNE": "0"}
MPI_ENV = {"HYDRA_LAUNCHER": "fork", "OMPI_ALLOW_RUN_AS_ROOT": "1",
           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1",
           **SAME_PATHS}


def find_mpiexec():
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")


def mpi_missing():
    if importlib.util.find_spec("mpi4py") is None:
        return 'mpi4py is not installed (pip install "fastcnn[mpi]")'
    if find_mpiexec() is None:
        return 'no mpiexec beside Python or on PATH (pip install "fastcnn[mpi]" brings mpich\'s)'
    return None


needs_mpi = pytest.mark.skipif(mpi_missing() is not None, reason=str(mpi_missing()))


def mpiexec(args, tmp_path, ranks=2):
    return run_command([find_mpiexec(), "-n", str(ranks), sys.executable, *args], tmp_path,
                       timeout=TIMEOUT, **MPI_ENV)


def run_scenario(name, tmp_path):
    """(2-rank result, one-process reference result): dicts of arrays."""
    mpi_out, ref_out = tmp_path / "mpi.npz", tmp_path / "ref.npz"
    done = mpiexec([SCENARIOS, name, str(mpi_out)], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    ref = run_command([sys.executable, SCENARIOS, name, str(ref_out), "--reference"], tmp_path,
                      timeout=TIMEOUT, **SAME_PATHS)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    with np.load(mpi_out) as a, np.load(ref_out) as b:
        return dict(a), dict(b)


def run_on_two_ranks(name, tmp_path):
    done = mpiexec([SCENARIOS, name, str(tmp_path / (name + ".npz"))], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def assert_same_training(mpi, ref):
    assert mpi.pop("ranks").tolist() == [2]
    assert set(mpi) == set(ref)
    for key in ref:
        diff = np.max(np.abs(mpi[key].astype(np.float64) - ref[key].astype(np.float64)))
        assert diff <= TOLERANCE, f"{key}: max abs difference {diff}"


def assert_trained(state, model):
    """The weights moved away from their initial values (the runs did train)."""
    init = {k: v for k, v in model.state_dict().items()}
    moved = [k for k in init if not np.array_equal(state["state." + k], init[k])]
    assert any(k.endswith("weight") for k in moved), moved


@needs_mpi
def test_lenet_fit_sgd_momentum_equals_one_process(tmp_path):
    import mpi_scenarios
    mpi, ref = run_scenario("lenet_fit", tmp_path)
    assert_same_training(mpi, ref)
    assert_trained(ref, mpi_scenarios.lenet())
    assert len(ref["loss"]) == 3 and ref["predict"].shape == (301, 10)


@needs_mpi
def test_hand_written_loop_with_adam_equals_one_process(tmp_path):
    import mpi_scenarios
    mpi, ref = run_scenario("adam_loop", tmp_path)
    assert_same_training(mpi, ref)
    assert ref["steps"].tolist() == [8]
    assert_trained(ref, mpi_scenarios.lenet())


@needs_mpi
def test_batchnorm_per_rank_statistics_equal_the_emulation(tmp_path):
    import mpi_scenarios
    mpi, ref = run_scenario("batchnorm_fit", tmp_path)
    assert_same_training(mpi, ref)
    assert_trained(ref, mpi_scenarios.bn_net())
    assert not np.allclose(ref["state.1.running_mean"], 0)


@needs_mpi
def test_a_checkpoint_of_rank_0_resumes_on_one_rank_or_two(tmp_path):
    import mpi_scenarios
    run_on_two_ranks("checkpoint", tmp_path)
    assert (tmp_path / "checkpoint.fcnn").exists()
    mpi, ref = run_scenario("resume", tmp_path)
    assert_same_training(mpi, ref)
    assert ref["steps"].tolist() == [8]                 # 4 steps before the checkpoint
    with np.load(tmp_path / "mpi.npz") as resumed:
        assert_trained(dict(resumed), mpi_scenarios.lenet())


@needs_mpi
@pytest.mark.parametrize("scenario", ["fails_on_one_rank", "fails_before_mpi_starts"])
def test_an_exception_on_one_rank_ends_the_job(tmp_path, scenario):
    done = mpiexec([SCENARIOS, scenario, str(tmp_path / "x.npz")], tmp_path)
    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stderr


@needs_mpi
def test_demo_on_two_ranks_reports_the_accuracy_of_one_process(tmp_path):
    args = ["-m", "fastcnn", "demo", "--epochs", "2", "--quiet"]
    two = mpiexec(args, tmp_path)
    one = run_command([sys.executable, *args], tmp_path, timeout=TIMEOUT, **SAME_PATHS)
    assert two.returncode == 0 and one.returncode == 0, two.stderr + one.stderr
    assert two.stdout.count("Test accuracy") == 1          # rank 0 alone prints
    # the same training within rounding (module docstring): a digit or two on
    # the edge may flip, so the correct counts agree within 5 of 1,000
    correct = [int(re.search(r"Test accuracy: [0-9.]+% \((\d+)/1000\)", out.stdout).group(1))
               for out in (one, two)]
    assert abs(correct[0] - correct[1]) <= 5, correct
    assert "data-parallel on 2 MPI ranks" in two.stdout


# one process: no launcher, or no mpi4py -------------------------------------------

def test_importing_fastcnn_never_imports_mpi4py(tmp_path):
    done = run_python("import sys, fastcnn, fastcnn.distributed\n"
                      "print('mpi4py' in sys.modules)", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_one_process_behaves_as_without_distributed(tmp_path):
    code = """
import numpy as np, fastcnn
from fastcnn import distributed
import mpi_scenarios as s
assert (distributed.rank(), distributed.size(), distributed.local_rank()) == (0, 1, 0)
x, y = s.data(100, (1, 28, 28))
results = []
for wrap in (False, True):
    model = s.lenet()
    opt = fastcnn.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt = distributed.DistributedOptimizer(opt) if wrap else opt
    h = model.fit(x, y, epochs=2, batch_size=32, optimizer=opt, seed=1, verbose=0)
    results.append((h["loss"], model.predict(x), model.evaluate(x, y)))
assert results[0][0] == results[1][0] and results[0][2] == results[1][2]
assert np.array_equal(results[0][1], results[1][1])
a = np.arange(6.0).reshape(2, 3)
assert np.array_equal(distributed.allreduce(a), a) and distributed.allreduce(a) is not a
print("ok")
"""
    done = run_python(code, tmp_path, PYTHONPATH=os.path.dirname(SCENARIOS))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_bad_arguments_are_named(tmp_path):
    code = """
import numpy as np, fastcnn
from fastcnn import distributed
model = fastcnn.Sequential(fastcnn.Linear(2, 2))
for call, kind, text in [
        (lambda: distributed.DistributedOptimizer("sgd"), TypeError, "Received: str"),
        (lambda: distributed.allreduce(np.ones(2), op="avg"), ValueError, "op='avg'"),
        (lambda: distributed.allreduce(np.array(["a"])), TypeError, "dtype=<U1"),
        (lambda: distributed.broadcast_parameters(model, root=3), ValueError, "root=3"),
        (lambda: distributed.broadcast_parameters(object()), TypeError, "object")]:
    try:
        call()
    except kind as exc:
        assert text in str(exc), (text, str(exc))
    else:
        raise AssertionError(text)
opt = distributed.DistributedOptimizer(fastcnn.SGD(model.parameters(), lr=0.1))
try:
    distributed.DistributedOptimizer(opt)
except TypeError as exc:
    assert "already" in str(exc)
print("ok")
"""
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_launched_by_mpi_without_mpi4py_says_what_to_install(tmp_path):
    code = """
import sys
sys.modules["mpi4py"] = None           # as if not installed
from fastcnn import distributed
assert distributed.launched() == 2
try:
    distributed.size()
except ImportError as exc:
    print(exc)
"""
    done = run_python(code, tmp_path, PMI_SIZE="2")
    assert done.returncode == 0, done.stderr
    assert "one of 2 started by an MPI launcher" in done.stdout
    assert "fastcnn[mpi]" in done.stdout


@pytest.mark.parametrize("local_ranks", ["1", "2", "64"])
def test_ranks_on_one_machine_share_its_cores(tmp_path, local_ranks):
    code = ("import os, fastcnn\n"
            "print(fastcnn.get_num_threads(), len(os.sched_getaffinity(0)), os.cpu_count())")
    done = run_python(code, tmp_path, OMP_NUM_THREADS=None, MPI_LOCALNRANKS=local_ranks)
    assert done.returncode == 0, done.stderr
    threads, usable, cores = map(int, done.stdout.split())
    expected = usable if usable < cores else max(1, usable // int(local_ranks))
    assert threads == expected
