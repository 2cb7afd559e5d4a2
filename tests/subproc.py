"""Run Python code in a fresh interpreter that imports the same fastcnn as the tests.

The instruction set is resolved once per process, so tests of a forced
FASTCNN_ISA run in a subprocess. That process must import the fastcnn under
test (installed, or built in place), never a source tree without extensions.
"""
import os
import signal
import subprocess
import sys

import fastcnn

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastcnn.__file__)))


def supported_isas():
    """The instruction sets FASTCNN_ISA can force on this CPU, narrowest first."""
    order = ["generic", "avx2", "avx512"]
    return order[: order.index(fastcnn._native.cpu_isa()) + 1]


def run_python(code, cwd, timeout=120, **env_overrides):
    """Run `code` with env_overrides set; returns the CompletedProcess (text mode)."""
    return run_python_args(["-c", code], cwd, timeout, **env_overrides)


def run_python_args(args, cwd, timeout=120, **env_overrides):
    """Run `python *args` with env_overrides set (None: unset); returns the CompletedProcess."""
    return subprocess.run([sys.executable, *args], env=child_env(env_overrides), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def run_command(args, cwd, timeout=120, **env_overrides):
    """Run a command line (e.g. ``mpiexec -n 2 python script.py``) whose Python
    children import the fastcnn under test, in a process group of its own:
    on timeout the whole group is killed (no stray children left waiting)
    and subprocess.TimeoutExpired is raised. Returns the CompletedProcess."""
    with subprocess.Popen(args, env=child_env(env_overrides), cwd=cwd, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def child_env(env_overrides):
    """os.environ with env_overrides set (None: unset) and PYTHONPATH leading
    to the fastcnn under test."""
    env = dict(os.environ, **env_overrides)
    for name in [k for k, v in env.items() if v is None]:
        del env[name]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    return env
