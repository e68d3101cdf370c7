"""The memory the kernels keep: row bands bound every workspace for images of any size (with the
same results as the whole-image path), no thread keeps more than a small cap after a call, and
fastconv.release_memory() gives everything back."""
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _kernels, _testing
from conv_helpers import (
    SUPPORTED_ISAS,
    assert_same_bits,
    check_backward,
    check_forward,
    num_threads,
    run_isolated,
    using_isa,
    workspace_cap,
)
from strategies import conv_backward_cases
from bomb_helpers import linux_only


def engine_depthwise(case):
    """One input and one output channel per group: grad_weight's depthwise kernel, which sums a
    band in vector lanes before adding it (bands change its rounding)."""
    return case.w.shape[1] == 1 and case.w.shape[0] == case.groups


def run_all(case):
    out = fastconv.conv2d(case.x, case.w, case.b, **case.kwargs)
    grads = fastconv.conv2d_backward(case.gy, case.x, case.w, needs=case.needs, **case.kwargs)
    return out, grads


# Taller images than the default draw, so that a lowered cap cuts them into several bands; a cap
# of 1 byte makes every band one row.
TALL = dict(max_n=3, max_channels=5, max_groups=3, max_kernel=4, max_extra=14)
CAPS = st.sampled_from([1, 1500, 6000, 40000])


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@settings(max_examples=60)
@given(case=conv_backward_cases(**TALL), cap=CAPS, threads=st.sampled_from([1, 2, 3]))
def test_row_bands_give_the_whole_image_results(isa, case, cap, threads):
    """Forward and grad_input are the same sums in the same order with or without bands: the
    same bits. So is grad_weight, except the depthwise kernel's, which must still match the
    reference."""
    with using_isa(isa), num_threads(threads):
        out, grads = run_all(case)
        with workspace_cap(cap):
            band_out, band_grads = run_all(case)
    assert_same_bits(band_out, out, "conv2d in bands")
    check_forward(case, band_out)
    for name, got, want in zip(("grad_input", "grad_weight", "grad_bias"), band_grads, grads):
        if want is not None and not (name == "grad_weight" and engine_depthwise(case)):
            assert_same_bits(got, want, f"{name} in bands")
    check_backward(case, band_grads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups,cg,kg", [(1, 3, 5), (2, 4, 3), (4, 1, 1)])
def test_row_bands_do_not_depend_on_the_thread_count(dtype, groups, cg, kg):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, groups * cg, 23, 19)).astype(dtype)
    w = rng.standard_normal((groups * kg, cg, 3, 2)).astype(dtype)
    kw = dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=groups)
    results = []
    for threads in (1, 2, 3):
        with num_threads(threads), workspace_cap(3000):
            y = fastconv.conv2d(x, w, **kw)
            gy = np.cos(y)
            results.append((y, *fastconv.conv2d_backward(gy, x, w, **kw)))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert_same_bits(b, a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [600, 603])
def test_row_bands_of_an_output_written_with_streaming_stores(dtype, width):
    """Outputs of 8 MiB and more are written with non-temporal stores, straight into the output
    (bands whose pixels fill whole vectors) or through a scratch tile (the others)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 4, 600, width)).astype(dtype)
    w = rng.standard_normal((8, 4, 3, 3)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    want = fastconv.conv2d(x, w, b, padding=(0, 1))
    assert want.nbytes >= 8 << 20
    for cap in (1, 100_000):
        with workspace_cap(cap):
            assert_same_bits(fastconv.conv2d(x, w, b, padding=(0, 1)), want, f"cap {cap}")


def test_row_bands_bound_the_workspaces_during_a_call():
    """An image whose buffers exceed the cap is processed in bands: at no time does a thread
    hold more than the cap allows, whatever the image size (the whole-image path needed about
    11 MiB per thread here: the wide input and the transposed grad_output of one image)."""
    cap = 1 << 20
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 300, 300))
    w = rng.standard_normal((8, 4, 3, 3))
    with num_threads(2), workspace_cap(cap):
        fastconv.release_memory()
        _testing.workspace_peak(reset=True)
        y = fastconv.conv2d(x, w, padding=1)
        fastconv.conv2d_backward(np.sin(y), x, w, padding=1)
        peak = _testing.workspace_peak()
        keep = _testing.workspace_keep_bytes()
    assert keep == 3 * cap
    assert 0 < peak <= 2 * keep, peak


def test_no_thread_keeps_more_than_the_cap_after_a_call():
    """Buffers that do not grow with the image (the packing buffer, the output tile, the tap
    offsets) may exceed what a thread keeps between calls, here with the cap set very low: they
    are trimmed once the call is done."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 64, 14, 14)).astype(np.float32)
    w = rng.standard_normal((256, 64, 3, 3)).astype(np.float32)
    with num_threads(1), workspace_cap(4 << 10):  # below any SIMD path's packing buffer
        fastconv.release_memory()
        _testing.workspace_peak(reset=True)
        y = fastconv.conv2d(x, w, padding=1)
        keep = _testing.workspace_keep_bytes()
        assert _testing.workspace_peak() > keep  # the call did need more
        assert max(_testing.workspace_sizes()) <= keep
        assert_same_bits(fastconv.conv2d(x, w, padding=1), y)


BIG = (4, 8, 256, 256)  # an 8 MiB float32 output: the output cache keeps it once freed


def test_release_memory_frees_every_workspace_and_the_output_cache():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(BIG).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    with num_threads(2):  # a worker thread's workspace too
        y = fastconv.conv2d(x, w, padding=1)
        fastconv.conv2d_backward(y, x, w, padding=1)
        fastconv.max_pool2d(x, 3, stride=1)
    del y  # into the output cache
    held = _kernels.workspace_bytes()[0] + _kernels.output_cache_bytes()
    assert _kernels.output_cache_bytes() > 0 and len(_testing.workspace_sizes()) >= 2
    assert fastconv.release_memory() == held
    assert _kernels.workspace_bytes()[0] == 0
    assert _kernels.output_cache_bytes() == 0
    assert fastconv.release_memory() == 0
    assert fastconv.functional.release_memory is fastconv.release_memory
    # the cache is emptied, not switched off
    del x
    assert _kernels.output_cache_bytes() == 0
    z = _kernels.empty(BIG, np.float32)
    del z
    assert _kernels.output_cache_bytes() == np.prod(BIG) * 4


def test_release_memory_while_other_threads_compute():
    """A release from one Python thread never frees a workspace under a call running in another:
    those calls still return the right bits."""
    proc = run_isolated(textwrap.dedent("""
        import threading, numpy as np, fastconv
        from fastconv import _kernels, _testing
        _testing.set_parallel_grain(0)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 6, 40, 40))
        w = rng.standard_normal((8, 6, 3, 3))
        want = fastconv.conv2d(x, w, padding=1)
        gy = np.cos(want)
        want_g = fastconv.conv2d_backward(gy, x, w, padding=1)
        bad = []
        def work():
            for _ in range(40):
                if not np.array_equal(fastconv.conv2d(x, w, padding=1), want):
                    bad.append("forward")
                got = fastconv.conv2d_backward(gy, x, w, padding=1)
                if not all(np.array_equal(a, b) for a, b in zip(got, want_g)):
                    bad.append("backward")
        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            fastconv.release_memory()
        for t in threads:
            t.join()
        assert not bad, bad
        fastconv.release_memory()
        assert _kernels.workspace_bytes()[0] == 0
        print("ok")
    """))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@linux_only
@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_a_large_image_leaves_little_memory_behind():
    """One forward and backward of a 4096 x 4096 float64 image: the workspaces stay small during
    and after the call (they used to grow to gigabytes, kept for the life of each thread), and
    release_memory() gives the process back its size before the call."""
    proc = run_isolated(textwrap.dedent("""
        import os, resource, numpy as np, fastconv
        from fastconv import _kernels, _testing

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

        x = np.ones((1, 3, 4096, 4096))
        w = np.ones((4, 3, 3, 3))  # the buffers grow with the image, not the channels
        start = rss()
        gy = fastconv.conv2d(x, w)
        assert (gy == 27).all()
        gy.fill(1.0)  # the output's own memory serves as grad_output
        grads = fastconv.conv2d_backward(gy, x, w)
        arrays = gy.nbytes + sum(g.nbytes for g in grads)
        # grad_input: 4 channels x the taps that reach each pixel (fewer near the edges)
        taps = np.minimum(np.minimum(np.arange(4096), 4095 - np.arange(4096)), 2) + 1
        assert (grads[0] == 4.0 * np.multiply.outer(taps, taps)).all()
        assert (grads[1] == 4094.0 ** 2).all() and (grads[2] == 4094.0 ** 2).all()
        threads = fastconv.get_num_threads()
        held = _kernels.workspace_bytes()[0]
        assert held <= threads * _testing.workspace_keep_bytes(), held
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        assert peak - start <= arrays + (512 << 20), (peak - start, arrays)
        del gy, grads
        fastconv.release_memory()
        assert _kernels.workspace_bytes()[0] == 0
        assert rss() - start <= 64 << 20, rss() - start
        print("ok")
    """))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
