"""sgemm (csrc/gemm) against numpy's matmul (OpenBLAS) on square matrices.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, set on this project's machines, slow
OpenBLAS; they are read when numpy loads, so the numpy side only runs with
them unset: compare.py runs these rows in a child process without them, and
under pytest the numpy side is skipped unless they are unset
(`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/bench_gemm.py`)."""
import numpy as np
import pytest

import harness
from harness import Case, Pair, assert_close, randn

SIZES = [256, 512, 1024, 2048]
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def square_case(n):
    def build(threads):
        sgemm = harness.fastcnn_attr("_native.sgemm", "GEMM family")
        r = harness.rng(0)
        a, b = randn(r, n, n), randn(r, n, n)

        def ours():
            return sgemm(a, b)

        def peer():
            return np.matmul(a, b)

        return Pair(ours, peer, lambda: assert_close(ours(), peer(), "c"))

    return Case("gemm", f"sgemm {n}x{n}x{n}", "numpy", build, flops=2.0 * n ** 3,
                target=1.0, large=n >= 1024, isolate=OPENBLAS_VARS)


CASES = [square_case(n) for n in SIZES]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_gemm(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)
