"""The package's shape: every public import path works, the layers depend on each other in one
direction only, the NumPy oracle loads no compiled code, and one dispatcher picks a convolution's
backend."""
import ast
import importlib
import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv
from fastconv._core import conv_geometry, direct, dispatch
from fastconv._core import fft as fft_backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))  # the copy under test
PACKAGE = pathlib.Path(fastconv.__file__).resolve().parent
HERE = os.path.dirname(os.path.abspath(__file__))  # child interpreters start here (see conftest)

# The import paths users write, and names each must provide.
PUBLIC = {
    "fastconv": ["conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
                 "avg_pool2d_backward", "set_num_threads", "get_num_threads", "max_num_threads",
                 "set_flush_denormal", "get_flush_denormal", "release_memory", "__version__"],
    "fastconv.functional": ["conv2d", "conv2d_backward", "max_pool2d", "avg_pool2d", "softmax",
                            "log_softmax", "release_memory"],
    "fastconv.reference": ["conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
                           "avg_pool2d", "avg_pool2d_backward"],
    "fastconv.fft": ["conv2d_fft", "conv2d_backward_fft", "prefer_fft", "fft_size"],
    "fastconv.nn": ["Module", "Parameter", "Sequential", "Conv2d", "MaxPool2d", "AvgPool2d",
                    "ReLU", "Flatten", "Linear", "Dropout", "CrossEntropyLoss"],
    "fastconv.optim": ["Optimizer", "SGD", "Adam"],
    "fastconv.nn.optim": ["Optimizer", "SGD", "Adam"],
    "fastconv.filters": ["filter2d"],
    "fastconv.stats": ["dead_leaves"],
    "fastconv.datasets": ["load_digits", "read_idx"],
    "fastconv.compat.cs231n": ["conv_forward_fast", "conv_backward_fast"],
    "fastconv.cli": ["main"],
}


def _run(code):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=HERE,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_import_paths(module):
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lacks {missing}"
    exported = getattr(mod, "__all__", [])
    assert all(hasattr(mod, name) for name in exported), f"{module}.__all__ names a missing object"


def test_import_path_aliases_are_the_same_objects():
    from fastconv import compat, interop, nn, optim  # noqa: F401
    import fastconv.compat.cs231n
    import fastconv.interop.cs231n

    assert optim.SGD is nn.optim.SGD and optim.Adam is nn.optim.Adam
    assert fastconv.compat.cs231n.conv_forward_fast is fastconv.interop.cs231n.conv_forward_fast
    assert fastconv.conv2d is fastconv.functional.conv2d
    assert fastconv.fft.conv2d_fft is fastconv._core.conv.conv2d_fft


def test_torch_adapter_import_path():
    pytest.importorskip("torch")
    import fastconv.interop.torch
    import fastconv.torch

    for name in fastconv.interop.torch.__all__:
        assert getattr(fastconv.torch, name) is getattr(fastconv.interop.torch, name)


def test_star_import_and_dir_list_the_kernel_api():
    namespace = {}
    exec("from fastconv import *", namespace)
    assert set(fastconv.__all__) <= set(namespace)
    assert set(fastconv.__all__) <= set(dir(fastconv))
    with pytest.raises(AttributeError, match="no_such_name"):
        fastconv.no_such_name


def test_reference_loads_no_compiled_code():
    # the oracle must not share code with what it checks: with the compiled module unavailable,
    # it imports and computes
    proc = _run("""
        import sys
        sys.modules["fastconv._kernels"] = None  # importing it now raises ImportError
        import numpy as np
        import fastconv, fastconv.reference as ref
        x = np.arange(2 * 5 * 5, dtype=np.float64).reshape(1, 2, 5, 5)
        w = np.ones((3, 2, 3, 3))
        print(ref.conv2d(x, w, padding="same").shape, ref.max_pool2d(x, 2, ceil_mode=True).shape,
              ref.avg_pool2d(x, 3, 2, 1).shape)
        try:
            fastconv.conv2d(x, w)
        except ImportError:
            print("kernels unavailable")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["(1, 3, 5, 5) (1, 2, 3, 3) (1, 2, 3, 3)",
                                           "kernels unavailable"], proc.stdout


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent is a module, not a package: name is an attribute
        return False


def _imported_modules(path):
    """The modules a source file imports, relative imports resolved: for ``from X import a``, X
    and, when it is a module, X.a."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names
                         if _is_module(f"{module}.{a.name}"))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


# The layers of the package's design (fastconv/__init__.py), lowest first: a module may import
# from its own layer and the layers before it, never from a later one.
LAYERS = [
    ("fastconv._core", "fastconv._kernels", "fastconv._testing"),
    ("fastconv.functional", "fastconv.fft", "fastconv.reference"),
    ("fastconv.filters", "fastconv.stats", "fastconv.datasets", "fastconv.data"),
    ("fastconv.nn", "fastconv.optim"),
    ("fastconv.interop", "fastconv.torch", "fastconv.compat", "fastconv.dask"),
    ("fastconv.cli", "fastconv.__main__"),
]


def _layer(module):
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return None


def test_each_layer_imports_only_from_the_layers_before_it():
    sources = [p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE]
    checked = 0
    for path in sources:
        own = _layer(_module_name(path))
        assert own is not None, f"{path} belongs to no layer of the design"
        for module in _imported_modules(path):
            other = _layer(module)
            assert other is None or other <= own, f"{_module_name(path)} imports {module}"
            checked += other is not None
    assert checked > 50  # the walk did see the package's imports


def _core_imports(module):
    """The fastconv modules that fastconv._core.<module> imports."""
    imported = _imported_modules(PACKAGE / "_core" / f"{module}.py")
    return {m for m in imported if m.startswith("fastconv.")}


def test_backends_import_only_the_shared_rules():
    shared = {"fastconv._core.args", "fastconv._core.geometry", "fastconv._core.conv_geometry",
              "fastconv._core.epilogue", "fastconv._core.threads", "fastconv._kernels"}
    for backend in ("direct", "fft"):
        internal = _core_imports(backend)
        assert internal <= shared, f"{backend} imports {sorted(internal - shared)}"


def test_argument_rules_load_no_compiled_code():
    for module in ("args", "geometry", "conv_geometry", "pool_geometry"):
        assert not {m for m in _core_imports(module) if m.startswith("fastconv._kernels")}, module


# ---- the dispatcher ---------------------------------------------------------------------------
def _geometry(x_shape, w_shape, padding, stride=1):
    return conv_geometry.conv_geometry(x_shape, w_shape, stride, padding, 1, 1)


@pytest.mark.parametrize("algorithm", ["auto", "direct"])
def test_dispatch_runs_the_direct_kernels_unless_asked(algorithm):
    g = _geometry((1, 2, 40, 40), (3, 2, 25, 25), 12)
    assert dispatch.backend_for(algorithm, (1, 2, 40, 40), (3, 2, 25, 25), g) is direct


def test_dispatch_fft_when_asked_and_usable():
    g = _geometry((1, 2, 40, 40), (3, 2, 25, 25), 12)
    assert dispatch.backend_for("fft", (1, 2, 40, 40), (3, 2, 25, 25), g) is fft_backend


def test_dispatch_hands_an_unusable_fft_problem_to_the_direct_kernels(monkeypatch):
    # a padding far beyond what the windows read (with a stride as large) would make the FFT's
    # grid huge for three outputs per axis
    x_shape, w_shape = (1, 1, 4, 4), (1, 1, 3, 3)
    g = _geometry(x_shape, w_shape, 10_000, stride=10_000)
    assert not fft_backend.is_usable_for(x_shape, w_shape, g)
    assert dispatch.backend_for("fft", x_shape, w_shape, g) is direct
    monkeypatch.setattr(fft_backend, "forward", lambda *a: pytest.fail("the FFT ran"))
    x, w = np.ones(x_shape), np.ones(w_shape)
    kw = dict(padding=10_000, stride=10_000)
    out = fastconv.conv2d(x, w, algorithm="fft", **kw)
    assert out.tobytes() == fastconv.conv2d(x, w, algorithm="direct", **kw).tobytes()
