"""The peak probe (csrc/peak.c): a finite positive figure, and its argument checks."""
import math

import pytest

from fastcnn._native import fma_peak_gflops
from subproc import run_python


@pytest.mark.parametrize("threads", [1, 2])
def test_peak_is_positive_and_finite(threads):
    gflops = fma_peak_gflops(threads)
    assert isinstance(gflops, float)
    assert math.isfinite(gflops) and gflops > 0.0


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_every_isa_loop_runs(isa, tmp_path):
    # FASTCNN_ISA is read once per process, so each ISA runs in a child.
    code = "from fastcnn._native import fma_peak_gflops; print(fma_peak_gflops(1))"
    out = run_python(code, cwd=tmp_path, FASTCNN_ISA=isa)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) > 0.0


def test_bad_threads():
    with pytest.raises(ValueError, match=r"threads must be positive. Received: threads=0"):
        fma_peak_gflops(0)
    with pytest.raises(TypeError, match=r"threads must be an integer"):
        fma_peak_gflops(1.5)
