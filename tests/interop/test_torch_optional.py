"""torch stays optional: fastconv never imports it, and fastconv.torch says clearly what is missing."""
import os
import subprocess
import sys
import textwrap

import fastconv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))  # the copy under test
# a neutral working directory: "-c" scripts put it first on sys.path, and the source folder
# (without compiled kernels) must not shadow the package under test
HERE = os.path.dirname(os.path.abspath(__file__))


def test_fastconv_torch_without_torch_raises_a_clear_import_error():
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # as if torch were not installed
        import fastconv, fastconv.compat.cs231n, fastconv.functional
        try:
            import fastconv.torch
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("no ImportError")
    """)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=HERE,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fastconv.torch needs PyTorch" in proc.stdout


def test_importing_fastconv_does_not_import_torch():
    code = "import sys, fastconv, fastconv.compat.cs231n; print('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=HERE,
                          timeout=60)
    assert proc.stdout.strip() == "False", proc.stdout + proc.stderr
