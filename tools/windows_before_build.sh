#!/usr/bin/env bash
# Before each Windows wheel (cibuildwheel's before-build, in MSYS2's bash): MinGW-w64's linker
# takes an import library in its own format, so libpythonXY.a is made from the DLL of the Python
# being built for, in that Python's libs/ folder, where setuptools' mingw32 compiler looks; and
# delvewheel, which the repair step runs, is installed.
set -euo pipefail
base="$(python -c 'import sys; print(sys.base_prefix)')"
ver="$(python -c 'import sys; print("%d%d" % sys.version_info[:2])')"
cd "$(cygpath -u "$base")"
gendef "python$ver.dll"
dlltool --dllname "python$ver.dll" --def "python$ver.def" --output-lib "libs/libpython$ver.a"
rm "python$ver.def"
python -m pip install delvewheel
