# Bindings of csrc/cpu.c, csrc/threads.c and csrc/pool.c: what this build and this
# CPU run, and the worker threads.
from libc.stdint cimport int64_t

from . cimport _fastcnn as c


def isa():
    """The instruction set of the kernels in use: 'avx512', 'avx2' or 'generic'."""
    return c.fastcnn_isa_name(c.fastcnn_isa()).decode()


def cpu_isa():
    """The best instruction set this CPU supports (ignoring FASTCNN_ISA)."""
    return c.fastcnn_isa_name(c.fastcnn_cpu_isa()).decode()


def openmp_enabled():
    """True if the kernels were built with OpenMP."""
    return bool(c.fastcnn_openmp_enabled())


def forked_child():
    """True in a process forked after fastcnn loaded: its kernels run serially
    there (GNU libgomp cannot run parallel regions after fork)."""
    return bool(c.fastcnn_forked_child())


def _pool_check(int64_t chunks, int nthreads, int jobs):
    """Test hook: `jobs` parallel loops of `chunks` chunks on fastcnn's worker
    threads (csrc/pool.c); True if every chunk ran exactly once and no thread
    slot ran two chunks at once."""
    cdef int err
    with nogil:
        err = c.fastcnn_pool_check(chunks, nthreads, jobs)
    return err == 0
