"""The C engines compile with each C compiler on the machine, not just the one that built the
extension here: GCC builds the Linux wheels, clang builds from the sdist on macOS and wherever CC
names it (the convolution engine once used a GCC-only builtin and did not compile with clang).
One translation unit includes src/fc_kernels.h, as the extension does, and calls every entry point
the extension calls, so that every (dtype, ISA) instantiation is compiled, with and without
OpenMP; warnings are errors, except unused code. At -O0: the front end, the `target` attributes'
checks and the forced inlining of the intrinsics all run there, and a compile takes a third of
-O1's time (the release build itself, at -O3, is the extension's, built and tested in full);
without OpenMP, the code differs only in its _OPENMP branches: the front end checks it.

The core also runs as a program of its own (tests/engine_smoke.c), natively and, built as the
Windows wheels build it, under Wine; and it allocates through one platform layer only."""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
ENGINE_SMOKE = pathlib.Path(__file__).resolve().parent / "engine_smoke.c"
needs_source = pytest.mark.skipif(not (SRC / "fc_kernels.h").exists(),
                                  reason="no source tree next to tests/")

CHECK = r"""
#include "fc_kernels.h"
static int fc_no_signal(void) { return 0; }
int fc_compile_check(fc_job *j, fc_pool_job *p, long n) {
    fc_run run;
    fc_schedule s;
    fc_threads_init();
    fc_set_isa(-1);
    fc_run_init(&run, fc_flush_supported(), 1, fc_no_signal);
    unsigned mode = fc_run_enter(&run);
    int r = fc_conv_task.prepare(j, 1, &s) + fc_conv_task.pre_item(j, 0) +
            fc_conv_task.item(j, 0) + fc_conv_task.reduce_item(j, 0) + fc_set_bf16(-1);
    fc_run_done(&run, r);
    fc_run_leave(mode);
    r += fc_run_stopped(&run) + (int)fc_isas[fc_isa_supported()].features[0];
    fc_conv_task.finish(j);
    r += fc_pool_task.prepare(p, 1, &s) + fc_pool_task.item(p, 0);
    fc_pool_task.finish(p);
    fc_handler_free(NULL, fc_handler_malloc(NULL, (size_t)n), (size_t)n);
    r += (int)fc_kernels.probe.run(n) + (int)fc_probe_flops_per_iter(&fc_kernels.probe);
    return r + fc_get_max_threads();
}
"""

def _compilers():
    found, seen = [], set()
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path and pathlib.Path(path).resolve() not in seen:
            seen.add(pathlib.Path(path).resolve())
            found.append(name)
    return found or ["no C compiler"]


@needs_source
@pytest.mark.parametrize("openmp", [False, True], ids=["serial", "openmp"])
@pytest.mark.parametrize("compiler", _compilers())
def test_the_engines_compile(compiler, openmp, tmp_path):
    if not shutil.which(compiler):
        pytest.skip("no C compiler on PATH")
    (tmp_path / "check.c").write_text(CHECK)
    cmd = [compiler, "-std=gnu11", "-O0", "-Wall", "-Werror", "-Wno-unused-function",
           "-Wno-unused-variable", f"-I{SRC}", "-c", "check.c", "-o", "check.o"]
    if not openmp:  # the same code but for the _OPENMP branches: the front end's checks suffice
        cmd.insert(1, "-fsyntax-only")
        cmd = [a for a in cmd if a not in ("-c", "-o", "check.o")]
    if openmp:
        probe = subprocess.run([compiler, "-fopenmp", "-x", "c", "-", "-c", "-o", "omp.o"],
                               input="#include <omp.h>\nint f(void){return omp_get_max_threads();}\n",
                               cwd=tmp_path, capture_output=True, text=True)
        if probe.returncode:
            pytest.skip(f"{compiler} has no OpenMP here")
        cmd.insert(1, "-fopenmp")
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


# Calls of an allocator other than fc_platform.h's: Windows frees an aligned block only with
# _aligned_free, so every block of the core comes from, and goes back through, fc_platform.h.
ALLOCATOR_CALL = re.compile(
    r"(?<![\w.>])(malloc|calloc|realloc|free|posix_memalign|aligned_alloc)\s*\(")


@needs_source
def test_the_core_allocates_only_through_its_platform_layer():
    sources = sorted(SRC.glob("*.h")) + sorted(SRC.glob("*.pxi")) + sorted(SRC.glob("*.pyx"))
    calls = []
    for path in sources:
        if path.name == "fc_platform.h":
            continue
        text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)  # C comments
        for line in text.splitlines():
            code = line.split("#", 1)[0] if path.suffix in (".pyx", ".pxi") else line
            if ALLOCATOR_CALL.search(code):
                calls.append(f"{path.name}: {line.strip()}")
    assert len(sources) > 10 and not calls, calls


def _run_engine_smoke(compile_cmd, run_cmd, tmp_path, env=None):
    build = subprocess.run(compile_cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    proc = subprocess.run(run_cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0 and "\n0 failures" in proc.stdout, (
        proc.stdout[-4000:] + proc.stderr[-2000:])


@needs_source
@pytest.mark.skipif(os.name != "posix", reason="builds and runs ./smoke")
@pytest.mark.slow  # a compile of the whole core: the main CI run only (see pyproject.toml)
def test_the_core_computes_right_as_a_program(tmp_path):
    """tests/engine_smoke.c natively: every convolution pass on every SIMD path of this CPU and
    on 1 and 2 threads against a direct sum and bitwise against one another, the software fma
    against the C library's, the output allocator and the workspaces' release."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        pytest.skip("no C compiler on PATH")
    _run_engine_smoke([compiler, "-std=gnu11", "-O0", "-fopenmp", "-Wall", "-Werror",
                       "-Wno-unused-function", f"-I{SRC}", str(ENGINE_SMOKE), "-o", "smoke",
                       "-lm"], ["./smoke"], tmp_path)


MINGW_GCC = "x86_64-w64-mingw32-gcc-posix"


@needs_source
@pytest.mark.slow  # a cross-compile and Wine's start: the main CI run only (see pyproject.toml)
def test_the_core_computes_right_on_windows(tmp_path):
    """The same program built as Windows wheels build the core (MinGW-w64's GCC with its
    winpthreads and libgomp; statically here, so that Wine needs no DLLs beside it) and run
    under Wine: what differs there (the C runtime's heap and fma, LLP64's 32-bit long, the
    Windows x64 calling convention and stack) is exercised on a machine without Windows. .ci/run
    installs MinGW-w64 and Wine; without them the test is skipped."""
    if not (shutil.which(MINGW_GCC) and shutil.which("wine")):
        pytest.skip(f"needs {MINGW_GCC} and wine (Debian: gcc-mingw-w64-x86-64-posix, wine64)")
    env = dict(os.environ, WINEPREFIX=str(tmp_path / "wine"), WINEDEBUG="-all")
    _run_engine_smoke([MINGW_GCC, "-std=gnu11", "-O0", "-fopenmp", "-static", "-Wall", "-Werror",
                       "-Wno-unused-function", f"-I{SRC}", str(ENGINE_SMOKE), "-o", "smoke.exe"],
                      ["wine", "smoke.exe"], tmp_path, env)
