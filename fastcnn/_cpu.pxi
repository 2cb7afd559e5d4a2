# Bindings of csrc/cpu.c and csrc/threads.c: what this build and this CPU run.
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
