"""The source checkout stays pyflakes-clean: `python -m pyflakes fastcnn tests bench`
prints nothing (no unused imports or variables, no undefined names).

pyflakes reads .py files only; the Cython sources (.pyx) are not checked."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRS = ("fastcnn", "tests", "bench")


def test_pyflakes_clean():
    if importlib.util.find_spec("pyflakes") is None:
        pytest.skip("pyflakes is not installed (pip install '.[test]' brings it)")
    missing = [d for d in DIRS if not os.path.isdir(os.path.join(ROOT, d))]
    if missing:
        pytest.skip(f"not a source checkout: {', '.join(missing)} not found next to tests/ "
                    f"(tests run from an installed copy)")
    done = subprocess.run([sys.executable, "-m", "pyflakes", *DIRS], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    output = (done.stdout + done.stderr).strip()
    assert output == "" and done.returncode == 0, \
        f"python -m pyflakes {' '.join(DIRS)} reported (exit {done.returncode}):\n{output}"
