"""Large outputs come from a handler that recycles freed blocks (src/fc_alloc.h): reuse must
never leak old values into a result."""
import numpy as np
import pytest

import fastconv
from fastconv import _kernels, reference
from conv_helpers import check_backward, conv_case

BIG = (4, 8, 256, 256)  # 8 MiB in float32: the smallest size the cache keeps


@pytest.fixture
def fresh_cache():
    _kernels.set_output_cache_limit(512 << 20)  # also empties it
    yield
    _kernels.set_output_cache_limit(512 << 20)


def test_freed_outputs_are_reused(fresh_cache):
    a = _kernels.empty(BIG, np.float32)
    address = a.ctypes.data
    del a
    assert _kernels.output_cache_bytes() == np.prod(BIG) * 4
    b = _kernels.empty(BIG, np.float32)
    assert b.ctypes.data == address
    assert _kernels.output_cache_bytes() == 0


def test_reused_blocks_never_leak_old_values(fresh_cache):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(BIG).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    dirty = _kernels.empty(BIG, np.float32)
    dirty.fill(np.nan)
    del dirty  # a NaN-filled block now waits in the cache
    # stride 2: grad_input positions that no tap reaches must come out as exact zeros
    y = fastconv.conv2d(x, w, stride=2, padding=0, dilation=1)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = fastconv.conv2d_backward(gy, x, w, stride=2, needs=(True, False, False))[0]
    check_backward(conv_case(x, w, gy=gy, stride=2, needs=(True, False, False)), (gx, None, None))
    dirty = _kernels.empty(BIG, np.float32)
    dirty.fill(np.nan)
    del dirty
    # max-pool backward writes only argmax positions into its (recycled) full-size gradient
    out, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    g = rng.standard_normal(out.shape).astype(np.float32)
    np.testing.assert_array_equal(fastconv.max_pool2d_backward(g, idx, x.shape),
                                  reference.max_pool2d_backward(g, idx, x.shape))


def test_zero_limit_disables_the_cache(fresh_cache):
    _kernels.set_output_cache_limit(0)
    a = _kernels.empty(BIG, np.float32)
    del a
    assert _kernels.output_cache_bytes() == 0


def test_small_outputs_bypass_the_cache(fresh_cache):
    a = _kernels.empty((64, 64), np.float64, zero=True)
    assert not a.any()
    del a
    assert _kernels.output_cache_bytes() == 0


def test_the_oldest_blocks_make_room_for_new_sizes(fresh_cache):
    """A cache full of blocks of sizes no longer in use must not keep out the sizes in use now."""
    old = [_kernels.empty((8 << 20) // 4 + 1024 * i, np.float32) for i in range(8)]
    del old  # eight kept blocks of other sizes
    new = _kernels.empty((12 << 20) // 4, np.float32)
    address = new.ctypes.data
    del new
    again = _kernels.empty((12 << 20) // 4, np.float32)
    assert again.ctypes.data == address
