"""The command line (fastcnn/cli.py): `python -m fastcnn info` and `demo`."""
import tempfile

import pytest

import fastcnn
from fastcnn import _native, cli
from subproc import run_python_args


def run(*args, threads=None, **env):
    """`python -m fastcnn *args` in a scratch directory (so the source tree is
    never imported in its place), on the fastcnn under test."""
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as scratch:
        return run_python_args(["-m", "fastcnn", *args], cwd=scratch, timeout=300, **env)


def test_info_reports_version_isa_openmp_and_threads():
    result = run("info", threads=1)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"fastcnn {fastcnn.__version__}" in out
    assert f"kernels: {_native.isa()}" in out
    assert f"OpenMP: {'on' if _native.openmp_enabled() else 'off'}" in out
    assert "threads: 1" in out


def test_info_follows_the_isa_override():
    result = run("info", FASTCNN_ISA="generic")
    assert "kernels: generic" in result.stdout


def test_demo_runs_and_reports_accuracy_and_throughput():
    # A short run (the default settings are checked by test_model's end-to-end test).
    result = run("demo", "--epochs", "2", "--batch-size", "64", "--threads", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "LeNet-5" in out and "2 threads" in out
    lines = out.splitlines()
    assert sum(line.startswith("Epoch ") for line in lines) == 2    # not a TTY: one per epoch
    acc_line = next(line for line in lines if line.startswith("Test accuracy:"))
    accuracy = float(acc_line.split()[2].rstrip("%"))
    assert accuracy > 80.0, out                   # two epochs: far above chance
    assert "images/s" in out and "total wall time" in out


def test_demo_quiet_prints_no_epoch_lines():
    result = run("demo", "--epochs", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Epoch" not in result.stdout and "Test accuracy" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["demo", "--epochs", "0"], "--epochs must be positive"),
    (["demo", "--threads", "0"], "--threads must be positive"),
    (["demo", "--lr", "-1"], "--lr > 0"),
    (["demo", "--weight-decay", "-1"], "--weight-decay must be >= 0"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_command_lines_exit_with_a_message(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.long
def test_demo_trains_the_residual_net():
    result = run("demo", "--model", "resnet", "--epochs", "1", "--threads", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ResNet-8" in out and "batch 64" in out
    acc_line = next(line for line in out.splitlines() if line.startswith("Test accuracy:"))
    assert float(acc_line.split()[2].rstrip("%")) > 50.0, out     # one epoch: far above chance
