"""Build fastcnn: the C kernels (csrc/) and their Cython bindings, linked into
one extension module, fastcnn._native (fastcnn/_native.pyx includes every op
family's binding, fastcnn/_<family>.pxi), so each kernel and each C static
exists once.

Kernels whose file name ends in ``_avx512.c`` or ``_avx2.c`` are compiled with
that instruction set's flags; everything else is portable (no -march=native).
The best compiled kernel is picked at run time (csrc/cpu.c).

OpenMP is probed: ``-fopenmp`` when the compiler takes it, else a serial build
with a printed notice.  ``FASTCNN_USE_OPENMP=0`` forces it off.

Speed: every C file is compiled as its own object by a pool of
os.cpu_count() workers (``FASTCNN_BUILD_JOBS`` overrides it). The kernels
start at once; the Cython translation runs meanwhile, and the generated C
file, the largest job, jumps the queue when it is ready. The generated glue
is compiled at -O2 (it validates arguments and calls C; the kernels carry
the work, at -O3). Nothing carries debug information unless CFLAGS has -g.
"""
import glob
import os
import platform
import queue
import subprocess
import sys
import sysconfig
import tempfile
import threading

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# No debug information (Python's CFLAGS often carry -g; it costs a fifth of
# the compile time and triples the module) unless CFLAGS asks for -g itself.
DEBUG_FLAGS = [] if "-g" in os.environ.get("CFLAGS", "").split() else ["-g0"]
OPT_FLAGS = ["-O3", "-fno-math-errno", "-std=gnu11"] + DEBUG_FLAGS
GLUE_FLAGS = ["-O2", "-fno-math-errno"] + DEBUG_FLAGS
ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mfma", "-mavx2"],
    "avx2": ["-mavx2", "-mfma"],
}
CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}


def compiler_takes_openmp():
    """True if the C compiler builds and links a program with -fopenmp."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        try:
            done = subprocess.run(cc + ["-fopenmp", src, "-o", os.path.join(tmp, "probe")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            return False
        return done.returncode == 0


def openmp_flags():
    if os.environ.get("FASTCNN_USE_OPENMP", "1") == "0":
        print("fastcnn: FASTCNN_USE_OPENMP=0, building without OpenMP (kernels run serially)",
              file=sys.stderr)
        return ["-Wno-unknown-pragmas"]
    if compiler_takes_openmp():
        return ["-fopenmp"]
    print("fastcnn: NOTICE: the C compiler does not support -fopenmp; building without "
          "OpenMP, so every kernel runs on one thread", file=sys.stderr)
    return ["-Wno-unknown-pragmas"]


X86 = platform.machine().lower() in ("x86_64", "amd64")
OMP = openmp_flags()
MACROS = [("FASTCNN_X86_KERNELS", "1")] if X86 else []
C_SOURCES = sorted(glob.glob("csrc/*.c") + glob.glob("csrc/*/*.c"))
HEADERS = sorted(glob.glob("csrc/*.h") + glob.glob("csrc/*/*.h"))
BINDINGS = sorted(glob.glob("fastcnn/_*.pxi")) + ["fastcnn/_fastcnn.pxd"]
INCLUDES = ["csrc", "csrc/gemm", numpy.get_include()]


def kernel_flags(source):
    """The flags of one kernel file: portable, or its instruction set's (x86-64 only)."""
    for isa, flags in ISA_FLAGS.items():
        if source.endswith("_" + isa + ".c"):
            return OPT_FLAGS + OMP + flags if X86 else None
    return OPT_FLAGS + OMP


# (source, flags) of every kernel this machine builds; per-ISA files are
# skipped off x86-64 (their entry points are only referenced under
# FASTCNN_X86_KERNELS).
KERNELS = [(s, kernel_flags(s)) for s in C_SOURCES if kernel_flags(s) is not None]


def jobs():
    return max(1, int(os.environ.get("FASTCNN_BUILD_JOBS") or 0) or os.cpu_count() or 1)


class ParallelCompile:
    """A pool of worker threads that compile one C file each into an object
    (each worker waits on its compiler process, so threads suffice). Jobs with
    the lowest priority number run first."""

    def __init__(self, compiler, build_temp, workers):
        self.compiler, self.build_temp = compiler, build_temp
        self.compile = compiler.compile     # the serial one: build_extension replaces it
        self.queue = queue.PriorityQueue()
        self.errors, self.count = [], 0
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def submit(self, priority, source, macros, flags, depends, force):
        obj = self.compiler.object_filenames([source], output_dir=self.build_temp)[0]
        os.makedirs(os.path.dirname(obj), exist_ok=True)
        self.queue.put((priority, self.count, source, obj, macros, flags, depends, force))
        self.count += 1
        return obj

    def _work(self):
        while True:
            item = self.queue.get()
            if item[2] is None:         # wait()'s end marker
                return
            _, _, source, obj, macros, flags, depends, force = item
            try:
                if force or not _up_to_date(obj, [source] + depends):
                    self.compile([source], output_dir=self.build_temp, macros=macros,
                                 include_dirs=INCLUDES, extra_postargs=flags)
            except Exception as e:      # reported by wait(), in the main thread
                self.errors.append(e)

    def wait(self):
        """Run every submitted job to its end; raise the first failure."""
        for _ in self.threads:
            self.queue.put((float("inf"), self.count, None))
            self.count += 1
        for t in self.threads:
            t.join()
        if self.errors:
            raise self.errors[0]


def _up_to_date(obj, inputs):
    if not os.path.exists(obj):
        return False
    t = os.path.getmtime(obj)
    return all(os.path.getmtime(f) <= t for f in inputs)


class BuildNative(build_ext):
    """build_ext that compiles the kernels and the Cython glue in parallel and
    links them into one module (also in place, also from an sdist)."""

    def build_extension(self, ext):
        from Cython.Build import cythonize
        try:
            from setuptools.modified import newer_group
        except ImportError:             # setuptools < 69
            from distutils.dep_util import newer_group

        fullpath = self.get_ext_fullpath(ext.name)
        if not (self.force or newer_group(ext.sources + ext.depends, fullpath, "newer")):
            print(f"skipping '{ext.name}' extension (up-to-date)")
            return
        pool = ParallelCompile(self.compiler, self.build_temp, jobs())
        # biggest files first: they bound the wall time
        kernel_objs = [pool.submit(-os.path.getsize(src), src, MACROS, flags, HEADERS, self.force)
                       for src, flags in sorted(KERNELS, key=lambda k: -os.path.getsize(k[0]))]
        try:
            # the generated C file replaces the .pyx (the Extension keeps the
            # attributes build_ext gave it)
            ext.sources = cythonize([ext], compiler_directives=CYTHON_DIRECTIVES,
                                    force=self.force)[0].sources
        except BaseException:
            pool.wait()
            raise
        serial_compile = self.compiler.compile

        def compile_glue(sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                         extra_preargs=None, extra_postargs=None, depends=None):
            """build_ext's compile call: the glue joins the pool (first in line),
            then every object of the module is returned for the link."""
            objs = [pool.submit(-float("inf"), src, macros, extra_postargs, HEADERS, self.force)
                    for src in sources]
            pool.wait()
            return objs + kernel_objs

        self.compiler.compile = compile_glue
        try:
            super().build_extension(ext)
        finally:
            self.compiler.compile = serial_compile


setup(
    cmdclass={"build_ext": BuildNative},
    ext_modules=[Extension(
        "fastcnn._native",
        ["fastcnn/_native.pyx"],
        depends=C_SOURCES + HEADERS + BINDINGS,
        include_dirs=INCLUDES,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                       ("NPY_TARGET_VERSION", "NPY_1_25_API_VERSION")],
        extra_compile_args=GLUE_FLAGS + OMP,
        extra_link_args=OMP + ["-lm"],
    )],
)
