"""Sphinx configuration of fastconv's documentation.

Build from the repository root, with fastconv importable (installed, or the source tree on
PYTHONPATH after ``python setup.py build_ext --inplace``)::

    pip install ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html
"""
import importlib
import inspect
import os
import re

from sphinx.util import logging

import fastconv

logger = logging.getLogger(__name__)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

project = "fastconv"
author = "the fastconv authors"
copyright = "the fastconv authors"
release = version = fastconv.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "demo"]

# The docstrings are torch's style: "Args:" / "Returns:" / "Raises:" sections (Google style).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_preserve_defaults = True  # signatures show defaults as written (dtype=np.float32)

# fastconv.torch needs PyTorch, an optional dependency, and registers its operators with torch on
# import, so it cannot be documented from a mock (autodoc_mock_imports): without torch, its page
# says so instead of failing the build (CI installs torch, so its pages are complete).
try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False

# README.md is the front page; its headings get anchors (index.html#pooling, ...).
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"fastconv {release}"

# README.md links to the package's source files (it is read on GitHub too); in these pages such a
# link goes to the module's API page instead, whose text is that file's docstring. A link that
# matches no page is left alone, so the build reports it.
_SOURCE_LINK = re.compile(r"\]\(fastconv/((?:\w+/)*\w+)\.py\)")


def _api_page(match):
    parts = [p for p in match.group(1).split("/") if p != "__init__"]
    page = parts[-1] if parts else "fastconv"
    if os.path.exists(os.path.join(ROOT, "docs", "api", page + ".rst")):
        return f"](api/{page}.rst)"
    return match.group(0)


def _link_readme_sources_to_api(app, relative_path, parent_docname, content):
    if os.path.basename(str(relative_path)) == "README.md":
        content[0] = _SOURCE_LINK.sub(_api_page, content[0])


def _torch_page_without_torch(app, docname, source):
    if docname == "api/torch" and not HAVE_TORCH:
        logger.info("fastconv.torch: PyTorch is not installed; its page is built without its API")
        source[0] = source[0].split(".. automodule::")[0] + (
            ".. note::\n\n   This copy of the documentation was built without PyTorch: install\n"
            "   torch and build it again to see this module's API.\n"
        )


# fastconv.torch and fastconv.optim are import paths for fastconv.interop.torch and
# fastconv.nn.optim, whose docstrings hold the overview: their pages show it too.
_REEXPORTED = {"fastconv.torch": "fastconv.interop.torch", "fastconv.optim": "fastconv.nn.optim"}


def _add_reexported_overview(app, what, name, obj, options, lines):
    if what == "module" and name in _REEXPORTED:
        source = importlib.import_module(_REEXPORTED[name])
        lines.extend([""] + inspect.cleandoc(source.__doc__).splitlines())


def setup(app):
    app.connect("autodoc-process-docstring", _add_reexported_overview)
    app.connect("include-read", _link_readme_sources_to_api)
    app.connect("source-read", _torch_page_without_torch)
