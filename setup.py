"""Build fastcnn: C kernels (csrc/) as static libraries, linked into one Cython module.

Kernels whose file name ends in ``_avx512.c`` or ``_avx2.c`` are compiled with
that instruction set's flags; everything else is portable (no -march=native).
The best compiled kernel is picked at run time (csrc/cpu.c).

OpenMP is probed: ``-fopenmp`` when the compiler takes it, else a serial build
with a printed notice.  ``FASTCNN_USE_OPENMP=0`` forces it off.
"""
import glob
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPT_FLAGS = ["-O3", "-fno-math-errno", "-std=gnu11"]
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


ISA_SUFFIXES = tuple("_" + isa + ".c" for isa in ISA_FLAGS)
X86 = platform.machine().lower() in ("x86_64", "amd64")
OMP = openmp_flags()
MACROS = [("FASTCNN_X86_KERNELS", "1")] if X86 else []
C_SOURCES = sorted(glob.glob("csrc/*.c") + glob.glob("csrc/*/*.c"))
HEADERS = glob.glob("csrc/*.h") + glob.glob("csrc/*/*.h")
INCLUDES = ["csrc", "csrc/gemm", numpy.get_include()]


def static_library(name, sources, flags):
    return (name, {"sources": sources, "include_dirs": INCLUDES, "macros": MACROS,
                   "cflags": OPT_FLAGS + OMP + flags, "obj_deps": {"": HEADERS}})


# Portable code in one library; per-ISA kernels (x86-64 only) in their own.
libraries = [static_library(
    "fastcnn_core", [s for s in C_SOURCES if not s.endswith(ISA_SUFFIXES)], [])]
if X86:
    for isa, flags in ISA_FLAGS.items():
        sources = [s for s in C_SOURCES if s.endswith("_" + isa + ".c")]
        if sources:
            libraries.append(static_library("fastcnn_" + isa, sources, flags))

# One extension module: fastcnn/_native.pyx includes every family's binding
# (fastcnn/_<family>.pxi), so the kernels are linked, and their statics exist, once.
BINDINGS = sorted(glob.glob("fastcnn/_*.pxi")) + ["fastcnn/_fastcnn.pxd"]
extensions = [
    Extension(
        "fastcnn._native",
        ["fastcnn/_native.pyx"],
        depends=C_SOURCES + HEADERS + BINDINGS,
        include_dirs=INCLUDES,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=OPT_FLAGS[:2] + OMP,
        extra_link_args=OMP + ["-lm"],
    )
]


class BuildExtAfterLibraries(build_ext):
    """build_ext that always builds the static kernel libraries first (also in-place)."""

    def run(self):
        self.run_command("build_clib")
        super().run()


setup(
    cmdclass={"build_ext": BuildExtAfterLibraries},
    libraries=libraries,
    ext_modules=cythonize(extensions, compiler_directives=CYTHON_DIRECTIVES),
)
