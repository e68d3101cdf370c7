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


def _compiler_accepts(compiler, compile_args, link_args):
    """Compile and link a tiny OpenMP program with these flags; False if either step fails."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=compile_args)
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=link_args)
        except Exception:
            return False
    return True


def _macos_libomp_flags():
    """Apple clang has no -fopenmp driver flag: it compiles OpenMP with -Xpreprocessor -fopenmp
    and links LLVM's libomp (-lomp), from $OpenMP_ROOT or Homebrew's libomp, the way
    scikit-learn builds on macOS. (compile args, link args), or None without a libomp."""
    roots = [os.environ.get("OpenMP_ROOT"), "/opt/homebrew/opt/libomp", "/usr/local/opt/libomp"]
    for root in filter(None, roots):
        if os.path.exists(os.path.join(root, "include", "omp.h")):
            # libomp's install name is absolute: no rpath (delocate vendors it into a wheel)
            return (["-Xpreprocessor", "-fopenmp", f"-I{os.path.join(root, 'include')}"],
                    [f"-L{os.path.join(root, 'lib')}", "-lomp"])
    return None


def _openmp_flags(compiler):
    """The (compile, link) flags that give this compiler OpenMP, or None: -fopenmp (GCC, LLVM
    clang), else, on macOS only, Apple clang with libomp."""
    if _compiler_accepts(compiler, ["-fopenmp"], ["-fopenmp"]):
        return ["-fopenmp"], ["-fopenmp"]
    if sys.platform == "darwin":
        flags = _macos_libomp_flags()
        if flags and _compiler_accepts(compiler, *flags):
            return flags
    return None


def _symbol_flags(compiler):
    """(compile, link) flags for debug symbols. A release build has none: DWARF is most of an
    unstripped module's size (10 MB -> 2 MB) and -g never changes the generated code.
    FASTCONV_DEBUG=1 keeps them (gdb, perf annotate). The symbol table stays in both, so that
    backtraces and profiles name the kernels' functions."""
    if compiler.compiler_type == "msvc":
        return [], []
    if os.environ.get("FASTCONV_DEBUG") == "1":
        return ["-g"], []
    # -g0 overrides the -g of Python's own CFLAGS; the linker drops whatever debug sections the
    # objects it links in still carry (Apple's ld64 spells it -S)
    return ["-g0"], ["-Wl,-S" if sys.platform == "darwin" else "-Wl,--strip-debug"]


class BuildExt(build_ext):
    """Adds OpenMP when the compiler supports it (else builds serially with a warning), and leaves
    out debug symbols unless FASTCONV_DEBUG=1. On Windows it builds with MinGW-w64's GCC unless
    --compiler names another: the C engines need GCC's vector extensions and `target` attributes,
    which MSVC does not have."""

    def finalize_options(self):
        if sys.platform == "win32" and self.compiler is None:
            self.compiler = "mingw32"
        super().finalize_options()

    def build_extensions(self):
        disabled = os.environ.get("FASTCONV_NO_OPENMP") == "1"
        openmp = None if disabled else _openmp_flags(self.compiler)
        if openmp is None:
            reason = ("FASTCONV_NO_OPENMP=1 is set" if disabled
                      else "the C compiler does not support OpenMP (-fopenmp)")
            warnings.warn(
                f"fastconv: {reason}; building the kernels single-threaded. Use a compiler with "
                "OpenMP (e.g. gcc, or on macOS Homebrew's libomp) for parallel kernels.",
                stacklevel=1,
            )
        symbols_compile, symbols_link = _symbol_flags(self.compiler)
        for ext in self.extensions:
            if openmp is not None:
                ext.extra_compile_args.extend(openmp[0])
                ext.extra_link_args.extend(openmp[1])
            ext.extra_compile_args.extend(symbols_compile)
            ext.extra_link_args.extend(symbols_link)
        super().build_extensions()


# -O3 and no -march=native: the wheel must run on any x86-64. The AVX2/AVX-512 code paths are
# compiled with GCC `target` attributes and chosen at run time (see src/conv_engine.h).
# -ffp-contract=off: the kernels spell every fused multiply-add (src/fc_fma.h) and the compiler
# fuses nothing else, so that every SIMD path, CPU and compiler rounds alike.
COMPILE_ARGS = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-Wno-unused-function"]
# MinGW-w64: Python's headers size Py_ssize_t by MS_WIN64, which only MSVC defines by itself.
DEFINE_MACROS = [("MS_WIN64", None)] if sys.platform == "win32" else []


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
                       ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")] + DEFINE_MACROS,
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
