"""Fixtures shared by the interop tests (torch adapter, cs231n compatibility)."""
import sys

import pytest

import fastconv


@pytest.fixture(autouse=True)
def seed_torch():
    """Every test starts from torch's seed 0 where torch is in use (random weights of layers)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tests of hundreds of tiny kernel calls (gradcheck) run on one thread: on a loaded machine
    every multi-threaded region can stall on a descheduled worker, and the results are bitwise
    identical for any thread count."""
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    yield
    fastconv.set_num_threads(before)
