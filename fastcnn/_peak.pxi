# Binding of csrc/peak.c: the machine's measured FP32 FMA peak, for the benchmarks.
from . cimport _fastcnn as c
from ._checks import as_int


def fma_peak_gflops(threads=1):
    """Measure FP32 FMA throughput, in GFLOP/s, of the instruction set in use.

    Each of ``threads`` threads runs a register-only loop of independent
    fused multiply-adds (AVX-512, AVX2+FMA, or plain multiply + add for the
    generic build, whichever ``fastcnn._native.isa()`` reports); the best of ten
    runs of about 10 ms is returned (the best, so that other work on a shared
    machine lowers it as little as possible). Takes about a tenth of a second. The
    benchmarks divide by it to report percent of peak.

    Args:
        threads: positive integer, the threads to measure together
            (without OpenMP, one thread runs whatever is asked).

    Returns:
        float: GFLOP/s of all threads together (an FMA counts as 2 flops).

    Raises:
        ValueError: if threads < 1. TypeError: if threads is not an integer.

    Example:
        >>> from fastcnn._native import fma_peak_gflops
        >>> fma_peak_gflops(1)      # doctest: +SKIP
        268.9
    """
    n = as_int(threads, "threads")
    if n < 1:
        raise ValueError(f"threads must be positive. Received: threads={n}")
    cdef int nt = n, ran = 0
    cdef double gflops
    with nogil:
        gflops = c.fastcnn_fma_peak_gflops(nt, &ran)
    return gflops
