"""Small decompression bombs for the readers' tests, a peak-memory probe, and the mark of the
tests that read memory as Linux reports it.

The bombs are written chunk by chunk, so building one costs the test a megabyte of memory and a
compressed file of a few hundred kilobytes, whatever size it expands to.
"""
import gzip
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

MB = 1 << 20
# Peak resident memory is ru_maxrss in KiB (macOS counts bytes; Windows has no `resource`), and
# address-space caps and /proc/self/statm are Linux's: the tests that read them run there only.
LINUX = sys.platform.startswith("linux")
linux_only = pytest.mark.skipif(not LINUX, reason="reads memory as Linux reports it")
_ZEROS = bytes(MB)


def write_gzip(path, head, zero_mb):
    """A gzip file of ``head`` followed by ``zero_mb`` MiB of zero bytes."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(head)
        for _ in range(zero_mb):
            f.write(_ZEROS)


def write_npz(path, arrays, bomb_key=None, bomb_shape=None, bomb_dtype="<f4"):
    """An .npz (deflated) holding ``arrays``, plus, under ``bomb_key``, a .npy member of
    ``bomb_shape`` zeros streamed into the archive (it is never held in memory)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, value in arrays.items():
            with zf.open(key + ".npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
        if bomb_key is not None:
            with zf.open(bomb_key + ".npy", "w", force_zip64=True) as f:
                header = {"descr": bomb_dtype, "fortran_order": False, "shape": bomb_shape}
                np.lib.format.write_array_header_1_0(f, header)
                left = int(np.prod(bomb_shape)) * np.dtype(bomb_dtype).itemsize
                while left:
                    f.write(_ZEROS[: min(left, MB)])
                    left -= min(left, MB)


def peak_memory_growth(setup, call):
    """Run ``call`` in a fresh interpreter after ``setup``; return (growth of the peak resident
    memory over its value before the call, in bytes; the text of the exception the call raised,
    or '' if none)."""
    if not LINUX:
        pytest.skip("reads the peak resident memory as Linux reports it")
    script = textwrap.dedent(
        """
        import resource
        {setup}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        message = ''
        try:
            {call}
        except Exception as exc:
            message = type(exc).__name__ + ': ' + str(exc)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) * 1024)
        print(message)
        """
    ).format(setup=setup, call=call)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env=dict(os.environ), cwd=os.path.dirname(os.path.abspath(__file__)),  # never the source
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    growth, message = proc.stdout.split("\n", 1)
    return int(growth), message.strip()
