"""Property-based fuzzing of every function of fastcnn.functional, forward and backward.

For each op, hypothesis draws shapes (empty and 1-element ones too), strides,
paddings, kernel sizes (dilations and groups where the function takes them),
dtypes (float16/32/64, ints; bool, complex, object and strings, which must be
refused), memory layouts (Fortran order, strided and reversed views, zero-stride
broadcasts, read-only arrays, nested lists), NaN and Inf, and 1 or 2 threads.
The property (tests/fuzz_ops.py `check`): the result equals a plain-numpy
float64 reference within float32 tolerance (NaN where the reference has NaN),
or, exactly where the reference finds the arguments invalid, the call raises a
ValueError/TypeError that names the received value; inputs are not modified.

Each op family is fuzzed in a child process (tests/subproc.py), so a segfault
or an abort fails its test with the child's output and the example under way
instead of killing pytest. The run is derandomized (reproducible), with a fixed
budget of examples per op:

    FASTCNN_FUZZ_EXAMPLES   examples per op (default 40: 15 to 45 s on 2 shared cores)
    FASTCNN_FUZZ_SEED       an integer: a seeded random run instead of the fixed one

The longer run (400 per op: 17,600 examples over 44 ops in about 7 minutes on
2 shared cores; run it after changing a binding or a kernel):

    FASTCNN_FUZZ_EXAMPLES=400 python -m pytest tests/test_fuzz.py -q -p no:cacheprovider -rP

(-rP prints each op's example counts: computed, refused.)
"""
import os
import signal

import pytest

pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install '.[test]' "
                                         "brings it); the fuzz tests need it")

import fuzz_ops  # noqa: E402  (after the skip: it imports hypothesis)
from subproc import run_python  # noqa: E402

import fastcnn.functional as F  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))
FAMILIES = sorted({spec["family"] for spec in fuzz_ops.OPS.values()})
CHILD_TIMEOUT = 600


def fuzz_in_child(code, tmp_path, timeout=CHILD_TIMEOUT, **env):
    """Run `code` (with tests/ importable and faulthandler on) in a child; returns
    (its output, a failure report or None)."""
    last = tmp_path / "last-example.txt"
    prelude = f"import faulthandler, sys; faulthandler.enable(); sys.path.insert(0, {TESTS!r})\n"
    try:
        done = run_python(prelude + code, tmp_path, timeout=timeout,
                          FASTCNN_FUZZ_LAST=str(last), **env)
    except Exception as error:      # subprocess.TimeoutExpired: a hang
        return "", f"the child did not finish: {error}\n{_last_example(last)}"
    output = done.stdout + done.stderr
    if done.returncode == 0:
        return output, None
    how = f"exit status {done.returncode}"
    if done.returncode < 0:
        how = f"killed by {signal.Signals(-done.returncode).name}"
    return output, f"the fuzz child failed ({how}):\n{output[-8000:]}\n{_last_example(last)}"


def _last_example(path):
    if not path.exists():
        return "(no example had started)"
    return "the example under way when it stopped: " + path.read_text()


@pytest.mark.parametrize("family", FAMILIES)
def test_fuzz(family, tmp_path):
    output, failure = fuzz_in_child(f"import fuzz_ops; fuzz_ops.main({family!r})", tmp_path)
    print(output)
    assert failure is None, failure


def test_every_functional_op_is_fuzzed():
    missing = sorted(set(F.__all__) - set(fuzz_ops.OPS))
    stale = sorted(set(fuzz_ops.OPS) - set(F.__all__))
    assert not missing, f"fastcnn.functional ops without a fuzz entry in tests/fuzz_ops.py: {missing}"
    assert not stale, f"tests/fuzz_ops.py fuzzes names fastcnn.functional lacks: {stale}"


# ---- the property and the child can fail --------------------------------------------------

def test_check_catches_a_wrong_result():
    x = [[1.0, -2.0]]
    assert fuzz_ops.check("relu", {"x": x}) == "computed"
    with pytest.raises(AssertionError, match="differ from the float64 reference"):
        fuzz_ops.check("relu", {"x": x}, function=lambda x: F.relu(x) + 1e-3)


def test_check_catches_accepted_invalid_and_refused_valid_arguments():
    import numpy as np
    z = np.zeros((2, 2), np.complex64)
    with pytest.raises(AssertionError, match="accepted invalid arguments"):
        fuzz_ops.check("relu", {"x": z}, function=lambda x: np.zeros(x.shape, np.float32))
    with pytest.raises(AssertionError, match="refused valid arguments"):
        fuzz_ops.check("relu", {"x": np.ones(3)}, function=lambda x: F.relu(np.zeros(0)))


def test_check_catches_a_modified_input_and_other_exceptions():
    import numpy as np

    def scribble(x):
        y = F.relu(x)
        x[...] = 0
        return y

    def explode(x):
        raise RuntimeError("neither ValueError nor TypeError")

    with pytest.raises(AssertionError, match="modified its input"):
        fuzz_ops.check("relu", {"x": np.ones(3, np.float32)}, function=scribble)
    with pytest.raises(RuntimeError):
        fuzz_ops.check("relu", {"x": np.ones(3)}, function=explode)


def test_a_crashing_child_fails_with_the_example(tmp_path):
    code = ("import ctypes, os\n"
            "open(os.environ['FASTCNN_FUZZ_LAST'], 'w').write('relu(x=[1.0])')\n"
            "ctypes.string_at(0)\n")
    # under .ci/asan (libasan preloaded) the child must die of the signal itself,
    # leaving no sanitizer report of this deliberate crash: handle_segv=0
    _, failure = fuzz_in_child(code, tmp_path, timeout=60,
                               ASAN_OPTIONS="handle_segv=0:detect_leaks=0")
    assert failure is not None and "SIGSEGV" in failure and "relu(x=[1.0])" in failure
    assert "Fatal Python error" in failure     # faulthandler's traceback of the crash
