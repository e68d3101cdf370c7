"""What a published wheel carries: the metadata that `pip show` and the package index display
(URLs, author, licence, classifiers), the licence texts, and a compiled module without debug
symbols. The metadata checks run on an installed copy (as CI's and `pip install` give) and skip on
a source checkout that was never installed."""
import importlib.metadata as md
import os
import pathlib
import shutil
import subprocess
import sys
from importlib import resources

import pytest

import fastconv
from fastconv import _kernels

PACKAGE = pathlib.Path(fastconv.__file__).resolve().parent
REPOSITORY = "https://github.com/fastconv/fastconv"


@pytest.fixture(scope="module")
def distribution():
    """The installed distribution of the fastconv under test, or a skip (a source checkout on
    sys.path, or metadata of another copy of fastconv or of no installed wheel)."""
    try:
        dist = md.distribution("fastconv")
    except md.PackageNotFoundError:
        pytest.skip("fastconv is not installed (a source checkout): no metadata to check")
    if dist.read_text("WHEEL") is None:  # e.g. the egg-info that building an sdist leaves
        pytest.skip("the fastconv metadata found is not that of a wheel's installation")
    init = [f for f in dist.files or () if f.as_posix() == "fastconv/__init__.py"]
    if not init or pathlib.Path(init[0].locate()).resolve() != PACKAGE / "__init__.py":
        pytest.skip("the installed fastconv metadata belongs to another copy than the one tested")
    return dist


def test_metadata_names_the_project_urls(distribution):
    urls = dict(u.split(", ", 1) for u in distribution.metadata.get_all("Project-URL") or ())
    assert set(urls) >= {"Homepage", "Source", "Issues", "Documentation"}, urls
    # one repository for all of them, so that none points to a stale place
    assert all(url.startswith(REPOSITORY) for url in urls.values()), urls


def test_metadata_names_author_and_licence(distribution):
    meta = distribution.metadata
    assert meta["Author"] == "fastconv developers"
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert meta["Name"] == "fastconv" and meta["Version"] == fastconv.__version__


def test_classifiers_declare_the_running_python(distribution):
    # the Python running these tests is one the package supports: it must be declared, and
    # requires-python must admit it
    classifiers = distribution.metadata.get_all("Classifier")
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"Programming Language :: Python :: {minor}" in classifiers
    assert {"Programming Language :: Cython", "Programming Language :: C",
            "Topic :: Scientific/Engineering :: Artificial Intelligence",
            "Topic :: Scientific/Engineering :: Image Processing"} <= set(classifiers)
    declared = [c.rsplit(" ", 1)[1] for c in classifiers
                if c.startswith("Programming Language :: Python :: 3.")]
    oldest = min(declared, key=lambda v: tuple(map(int, v.split("."))))
    assert distribution.metadata["Requires-Python"] == f">={oldest}"


def test_licence_is_installed(distribution):
    licences = [f for f in distribution.files if f.name == "LICENSE" and "licenses" in f.parts]
    assert licences, "the LICENSE file is not in the installed distribution"
    text = licences[0].read_text()
    assert "Copyright (c) 2026, fastconv developers" in text and "BSD 3-Clause" in text


def test_the_data_ships_with_its_licence():
    # the digits are CC BY 4.0, not BSD: their attribution travels with them
    data = resources.files("fastconv").joinpath("data")
    assert data.joinpath("digits.npz").is_file()
    text = data.joinpath("LICENSE-DATA").read_text()
    assert "CC BY 4.0" in text and "Alpaydin" in text and "digits.npz" in text


def _section_names(path):
    proc = subprocess.run(["readelf", "-S", "-W", path], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [word for line in proc.stdout.splitlines() for word in line.replace("]", "] ").split()
            if word.startswith(".")]


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf is not installed")
@pytest.mark.skipif(os.environ.get("FASTCONV_DEBUG") == "1",
                    reason="FASTCONV_DEBUG=1: a build that keeps its debug symbols")
def test_the_compiled_module_has_no_debug_sections():
    path = _kernels.__file__
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            pytest.skip("not an ELF shared object")
    sections = _section_names(path)
    assert ".text" in sections  # readelf's table was read
    debug = [s for s in sections if s.startswith((".debug", ".zdebug"))]
    assert not debug, (f"{path} carries debug sections {debug}: a release build strips them "
                       "(rebuild, or set FASTCONV_DEBUG=1 to keep them)")
    # the symbol table stays: backtraces and profiles name the kernels' functions
    assert ".symtab" in sections
