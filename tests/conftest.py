import os

import pytest
from hypothesis import HealthCheck, settings

# CI: a fixed sequence of examples (reproducible, no flaky shrinking runs); locally: random.
settings.register_profile(
    "ci", derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def _example_scale():
    """FASTCONV_TEST_EXAMPLES (a fraction, default 1) scales every property test's example count:
    CI's runs on further Pythons check that the package builds and behaves there, and use a
    fraction of the examples that the main run tries in full."""
    try:
        scale = float(os.environ.get("FASTCONV_TEST_EXAMPLES", "1"))
    except ValueError:
        raise pytest.UsageError("FASTCONV_TEST_EXAMPLES must be a number") from None
    if not 0 < scale <= 1:
        raise pytest.UsageError("FASTCONV_TEST_EXAMPLES must be in (0, 1]")
    return scale


def pytest_collection_modifyitems(config, items):
    scale = _example_scale()
    if scale == 1:
        return
    scaled = set()
    for item in items:
        test = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        current = getattr(test, "_hypothesis_internal_use_settings", None)
        if current is None or id(test) in scaled:  # a parametrised test shares one function
            continue
        scaled.add(id(test))
        test._hypothesis_internal_use_settings = settings(
            current, max_examples=max(3, round(current.max_examples * scale)))


# ---------------------------------------------------------------- which fastconv is under test
# `.ci/run` installs fastconv into a venv and sets FASTCONV_TEST_INSTALLED=1: the run must then
# test that installed copy, never the source folder next to tests/ (a file missing from the wheel
# would go unnoticed). The header of every run says which copy was imported.
def _fastconv_location():
    import pathlib

    import fastconv

    return pathlib.Path(fastconv.__file__).resolve().parent


def pytest_report_header(config):
    import fastconv
    from fastconv import _kernels

    return [f"fastconv {fastconv.__version__} from {_fastconv_location()} (OpenMP "
            f"{'on' if _kernels.openmp_enabled() else 'OFF'}, {fastconv.get_num_threads()} "
            f"threads, SIMD path {_kernels.get_isa()})"]


def pytest_configure(config):
    if os.environ.get("FASTCONV_TEST_INSTALLED") == "1":
        import pathlib

        import pytest

        source = pathlib.Path(__file__).resolve().parent.parent / "fastconv"
        loaded = _fastconv_location()
        if loaded == source.resolve() or "site-packages" not in loaded.parts:
            raise pytest.UsageError(
                f"FASTCONV_TEST_INSTALLED=1 but fastconv was imported from {loaded}, not from an "
                f"installed copy in site-packages: the source folder is on sys.path")


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread, for a module that compares with it: torch's own thread pool would
    compete with fastconv's for the cores."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
