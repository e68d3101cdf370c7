"""Build the compiled kernels: only the Extension list and the OpenMP flags live here."""
import glob
import os
import sys
import tempfile
import textwrap
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
    """
)


def _compiler_has_openmp(compiler):
    """Compile and link a tiny program with -fopenmp; False if either step fails."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=["-fopenmp"])
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    """Adds -fopenmp when the compiler supports it, else builds serially with a warning."""

    def build_extensions(self):
        disabled = os.environ.get("FASTCONV_NO_OPENMP") == "1"
        use_openmp = not disabled and _compiler_has_openmp(self.compiler)
        if not use_openmp:
            reason = ("FASTCONV_NO_OPENMP=1 is set" if disabled
                      else "the C compiler does not support OpenMP (-fopenmp)")
            warnings.warn(
                f"fastconv: {reason}; building the kernels single-threaded. Use a compiler with "
                "OpenMP (e.g. gcc) for parallel kernels.",
                stacklevel=1,
            )
        for ext in self.extensions:
            if use_openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        super().build_extensions()


# -O3 and no -march=native: the wheel must run on any x86-64. The AVX2/AVX-512 code paths are
# compiled with GCC `target` attributes and chosen at run time (see src/conv_engine.h).
# -ffp-contract=off: the kernels spell every fused multiply-add (src/fc_fma.h) and the compiler
# fuses nothing else, so that every SIMD path, CPU and compiler rounds alike.
COMPILE_ARGS = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-Wno-unused-function"]
if sys.platform == "win32":
    COMPILE_ARGS = ["/O2"]


def extension(name):
    """The compiled module fastconv.<name> from src/<name>.pyx (which includes src/*.pxi)."""
    return Extension(
        f"fastconv.{name}",
        [f"src/{name}.pyx"],
        depends=sorted(glob.glob("src/*.h") + glob.glob("src/*.pxi")),
        include_dirs=[np.get_include(), "src"],
        # Compile against the C API of the oldest NumPy the package declares (numpy>=1.23), not
        # the build-time NumPy's default: older defaults (NumPy 2.0-2.2 builds, e.g. on Python
        # 3.9 and 3.10) leave out PyDataMem_SetHandler, which the output handler needs.
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                       ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")],
        extra_compile_args=list(COMPILE_ARGS),
        extra_link_args=[],
    )


setup(
    ext_modules=cythonize(
        [extension("_kernels")],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
