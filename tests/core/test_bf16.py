"""bfloat16 (fastconv._core.bf16): precision='bf16' on float32 arrays, bfloat16 arrays, and the
paths that multiply bfloat16 (src/fc_bf16.h, src/conv_bf16.h).

Every path's result must lie within a float32 sum's rounding bound of the float64 reference
computed from the inputs rounded to bfloat16 (the products of bfloat16 values are exact in
float32), be the same for any thread count, and -- so that the mode cannot silently be the
exact float32 computation -- differ from it where rounding the inputs changes them."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
import fastconv._testing
from fastconv import _kernels, nn
from fastconv._core import bf16
from conv_helpers import (assert_same_bits, assert_unchanged, check_backward, check_forward,
                          cpu_bf16_paths, num_threads, snapshot, supported_bf16_paths,
                          using_isa)
from strategies import ConvCase, conv_cases, random_array

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F32 = st.just(np.float32)


PATHS = supported_bf16_paths()


# The AMX code also runs, on any CPU with AVX512-BF16, on its model of the tile instructions
# (src/conv_amx_tmpl.h): "amx_model" below.
MODEL = "avx512_bf16" in PATHS
RUNS = PATHS + (["amx_model"] if MODEL else [])


class using_bf16_path:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.previous = _kernels.get_bf16_path()
        model = self.name == "amx_model"
        path = "avx512_bf16" if model else self.name
        assert _kernels.set_bf16_path(path) == path
        assert fastconv._testing.set_bf16_amx_model(model) == model

    def __exit__(self, *exc):
        fastconv._testing.set_bf16_amx_model(False)
        _kernels.set_bf16_path(self.previous)


def rounded(a):
    """``a`` (float32) rounded to bfloat16, as float32, by ml_dtypes (the rounding's oracle)."""
    return None if a is None else np.asarray(a).astype(BF16).astype(np.float32)


def rounded_case(case):
    fields = dict(case.__dict__)
    fields.update(x=rounded(case.x), w=rounded(case.w))
    if getattr(case, "gy", None) is not None:
        fields["gy"] = rounded(case.gy)
    return ConvCase(**fields)


# ------------------------------------------------------------------------------ the paths
def test_every_bf16_path_of_this_cpu_is_selected():
    """fastconv selects every bfloat16 path the CPU has (so the tests below run each one), and
    by default the best. (AMX also needs Linux's grant of the tile state, which fastconv asks
    for; it is refused only to a process with a small signal stack.)"""
    cpu = cpu_bf16_paths()
    if cpu is not None:
        assert PATHS == cpu, (PATHS, cpu)
    assert PATHS[0] == "portable"
    assert _kernels.get_bf16_path() == PATHS[-1]


def test_a_path_is_capped_by_the_cpu_and_the_simd_path():
    for name in _kernels.BF16_PATHS:
        got = _kernels.set_bf16_path(name)
        assert got == (name if name in PATHS else PATHS[-1])
    assert fastconv._testing.set_bf16_amx_model(True) == MODEL
    assert fastconv._testing.set_bf16_amx_model(False) is False
    _kernels.set_bf16_path(None)
    with using_isa("generic"):  # AVX512-BF16 builds on AVX-512: forcing a lower path drops it
        assert _kernels.get_bf16_path() == "portable"
    assert _kernels.get_bf16_path() == PATHS[-1]
    with pytest.raises(ValueError, match="bf16 path"):
        _kernels.set_bf16_path("amx-ish")


# ------------------------------------------------------------------------------ the rounding
SPECIAL_BITS = np.array([0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001,
                         0x7f800001, 0x7f7fffff, 0x7f7f8000, 0x3f808000, 0x3f818000, 0x3f807fff,
                         0x00000001, 0x00008000, 0x00018000, 0x807fffff, 0x3f800000],
                        dtype=np.uint32)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=300))
def test_rounding_matches_ml_dtypes_bit_for_bit(bits):
    """round/narrow/widen against ml_dtypes: ties to even, overflow to inf, NaN to the quiet NaN
    of its sign, subnormals kept; on random bit patterns and the edge cases."""
    x = np.concatenate([SPECIAL_BITS, np.array(bits, np.uint32)]).view(np.float32)
    before = snapshot(x)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and overflow: ml_dtypes warns
        want = x.astype(BF16)
    got = bf16.narrow(x)
    assert got.dtype == BF16
    assert_same_bits(got.view(np.uint16), want.view(np.uint16), "narrow")
    assert_same_bits(bf16.round_float32(x), want.astype(np.float32), "round_float32")
    assert_same_bits(bf16.widen(want), want.astype(np.float32), "widen")
    assert_unchanged(before, x)


def test_conversions_of_large_arrays_run_on_every_thread_alike():
    x = np.random.default_rng(0).standard_normal(1 << 19).astype(np.float32)
    with num_threads(1):
        one = bf16.round_float32(x), bf16.narrow(x)
    with num_threads(2):
        two = bf16.round_float32(x), bf16.narrow(x)
    assert_same_bits(one[0], two[0])
    assert_same_bits(one[1].view(np.uint16), two[1].view(np.uint16))
    assert_same_bits(one[0], rounded(x))


# ------------------------------------------------------------------------------ precision='bf16'
# Kg > 8 output channels per group takes the bfloat16 GEMM where the CPU has one; fewer, the
# rounded copies: both are drawn.
WIDE = dict(dtypes=F32, max_channels=20, max_groups=2, max_n=3, max_kernel=4)


@pytest.mark.parametrize("path", RUNS)
@settings(max_examples=40, deadline=None)
@given(case=conv_cases(**WIDE))
def test_forward_within_the_bound_of_the_rounded_inputs(path, case):
    before = snapshot(case.x, case.w, case.b)
    with using_bf16_path(path):
        out = fastconv.conv2d(case.x, case.w, case.b, **case.kwargs, precision="bf16")
    check_forward(rounded_case(case), out)
    assert_unchanged(before, case.x, case.w, case.b)


@pytest.mark.parametrize("path", RUNS)
@settings(max_examples=25, deadline=None)
@given(case=conv_cases(**WIDE), data=st.data())
def test_backward_within_the_bound_of_the_rounded_inputs(path, case, data):
    gy = random_array(data.draw, case.out_shape, np.float32)
    needs = data.draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    c = ConvCase(**dict(case.__dict__, gy=gy, needs=needs))
    before = snapshot(case.x, case.w, gy)
    with using_bf16_path(path):
        grads = fastconv.conv2d_backward(gy, case.x, case.w, **case.kwargs, needs=needs,
                                         precision="bf16")
    gx, gw, gb = grads
    products = rounded_case(c)
    products.needs = (needs[0], needs[1], False)
    check_backward(products, (gx, gw, None))
    c.needs = (False, False, needs[2])  # grad_bias multiplies nothing: grad_output as it is
    check_backward(c, (None, None, gb))
    assert_unchanged(before, case.x, case.w, gy)


@pytest.mark.parametrize("path", RUNS)
def test_forward_is_the_same_for_any_thread_count(path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 24, 13, 11)).astype(np.float32)
    w = rng.standard_normal((40, 24, 3, 3)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    results = []
    with using_bf16_path(path):
        for n in (1, 2, 3):
            with num_threads(n):
                results.append(fastconv.conv2d(x, w, b, padding=1, precision="bf16",
                                               activation="relu"))
    for r in results[1:]:
        assert_same_bits(r, results[0])


@pytest.mark.parametrize("path", RUNS)
def test_bf16_is_not_the_float32_computation(path):
    """Inputs that bfloat16 cannot hold: the result is that of the rounded inputs, which the
    exact float32 convolution misses by far more than its rounding."""
    x = np.full((1, 16, 6, 6), 1 + 2**-10, np.float32)   # rounds to 1
    w = np.full((32, 16, 3, 3), 1 - 2**-12, np.float32)  # rounds to 1
    with using_bf16_path(path):
        out = fastconv.conv2d(x, w, precision="bf16")
    np.testing.assert_array_equal(out, np.float32(16 * 9))
    assert np.all(fastconv.conv2d(x, w) != np.float32(16 * 9))


@pytest.mark.parametrize("path", RUNS)
def test_the_bf16_gemm_runs_where_the_cpu_has_it(path):
    """The bfloat16 instructions treat subnormal inputs as zero (see fastconv._core.bf16): with
    enough output channels for a GEMM (more than one register block: 8 rows on avx512_bf16, 16
    on AMX), a subnormal input's product vanishes there and stays on the portable path -- so
    the GEMM is what ran."""
    x = np.full((1, 1, 4, 4), 2.0**-130, np.float32)  # subnormal, exact in bfloat16
    w = np.full((32, 1, 1, 1), 2.0**100, np.float32)
    rows = {"portable": None, "avx512_bf16": 8}.get(path, 16)
    with using_bf16_path(path):
        out = fastconv.conv2d(x, w, precision="bf16")
        np.testing.assert_array_equal(out, np.float32(2.0**-30 if rows is None else 0))
        if rows:  # one register block: the rounded copies serve, subnormals kept
            np.testing.assert_array_equal(fastconv.conv2d(x, w[:rows], precision="bf16"),
                                          np.float32(2.0**-30))


@pytest.mark.parametrize("path", RUNS)
def test_the_bf16_gemm_runs_in_grad_input(path):
    """As above, for grad_input, whose rows are the input channels: with more than one register
    block of them, a subnormal grad_output's products vanish on the bfloat16 GEMM."""
    x = np.zeros((1, 32, 4, 4), np.float32)
    w = np.full((1, 32, 1, 1), 2.0**100, np.float32)
    gy = np.full((1, 1, 4, 4), 2.0**-130, np.float32)
    rows = {"portable": None, "avx512_bf16": 8}.get(path, 16)
    with using_bf16_path(path):
        gx, = fastconv.conv2d_backward(gy, x, w, needs=(True, False, False), precision="bf16")[:1]
        np.testing.assert_array_equal(gx, np.float32(2.0**-30 if rows is None else 0))
        if rows:
            gx, = fastconv.conv2d_backward(gy, x[:, :rows], w[:, :rows], precision="bf16",
                                           needs=(True, False, False))[:1]
            np.testing.assert_array_equal(gx, np.float32(2.0**-30))


def test_precision_argument():
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    for bad in ("bfloat16", "BF16", 16, True):
        with pytest.raises(ValueError, match="precision"):
            fastconv.conv2d(x, w, precision=bad)
        with pytest.raises(ValueError, match="precision"):
            fastconv.conv2d_backward(np.ones((1, 3, 2, 2), np.float32), x, w, precision=bad)
        with pytest.raises(ValueError, match="precision"):
            nn.Conv2d(2, 3, 3, precision=bad)
        with pytest.raises(ValueError, match="precision"):
            fastconv.set_precision(bad)
    with pytest.raises(ValueError, match="float64"):
        fastconv.conv2d(x.astype(np.float64), w.astype(np.float64), precision="bf16")
    with pytest.raises(ValueError, match="float64"):
        nn.Conv2d(2, 3, 3, precision="bf16", dtype=np.float64)
    with pytest.raises(ValueError, match="fft"):
        fastconv.conv2d(x, w, precision="bf16", algorithm="fft")
    with pytest.raises(ValueError, match="fft"):
        fastconv.conv2d_backward(np.ones((1, 3, 2, 2), np.float32), x, w, precision="bf16",
                                 algorithm="fft")
    with pytest.raises(TypeError, match="float32"):
        _kernels.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None,
                                np.empty((1, 3, 2, 2)), fastconv._core.conv_geometry.conv_geometry(
                                    x.shape, w.shape, 1, 0, 1, 1), 0, 0.0, True)
    ieee = fastconv.conv2d(x + 2**-10, w, precision="ieee")
    assert np.all(ieee == fastconv.conv2d(x + 2**-10, w))


def test_process_wide_default():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 12, 7, 7)).astype(np.float32)
    w = rng.standard_normal((20, 12, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 20, 5, 5)).astype(np.float32)
    assert fastconv.get_precision() == "ieee"
    exact, low = fastconv.conv2d(x, w), fastconv.conv2d(x, w, precision="bf16")
    grads_low = fastconv.conv2d_backward(gy, x, w, precision="bf16")
    with fastconv.default_precision("bf16"):
        assert fastconv.get_precision() == "bf16"
        assert_same_bits(fastconv.conv2d(x, w), low)
        for got, want in zip(fastconv.conv2d_backward(gy, x, w), grads_low):
            assert_same_bits(got, want)
        assert_same_bits(fastconv.conv2d(x, w, precision="ieee"), exact)
        x64, w64 = x.astype(np.float64), w.astype(np.float64)  # float64 is left alone
        assert_same_bits(fastconv.conv2d(x64, w64), fastconv.conv2d(x64, w64, precision="ieee"))
        with pytest.raises(ValueError, match="fft"):
            fastconv.conv2d(x, w, algorithm="fft")
    assert fastconv.get_precision() == "ieee"
    assert_same_bits(fastconv.conv2d(x, w), exact)
    assert fastconv.set_precision("bf16") == "ieee"
    try:
        assert_same_bits(fastconv.conv2d(x, w), low)
    finally:
        assert fastconv.set_precision("ieee") == "bf16"


def test_conv2d_layer_precision():
    rng = np.random.default_rng(2)
    layer = nn.Conv2d(6, 16, 3, padding=1, precision="bf16", rng=0)
    assert "precision='bf16'" in repr(layer)
    x = rng.standard_normal((2, 6, 5, 5)).astype(np.float32)
    out = layer(x)
    assert_same_bits(out, fastconv.conv2d(x, layer.weight.data, layer.bias.data, padding=1,
                                          precision="bf16"))
    gy = rng.standard_normal(out.shape).astype(np.float32)
    gx = layer.backward(gy)
    want = fastconv.conv2d_backward(gy, x, layer.weight.data, padding=1, precision="bf16")
    assert_same_bits(gx, want[0])
    assert_same_bits(layer.weight.grad, want[1])
    default = nn.Conv2d(6, 16, 3, padding=1, rng=0)
    assert default.precision is None and "precision" not in repr(default)
    with fastconv.default_precision("bf16"):
        assert_same_bits(default(x), out)


# ------------------------------------------------------------------------------ bfloat16 arrays
def as_bf16(a):
    return None if a is None else np.asarray(a).astype(BF16)


@pytest.mark.parametrize("path", RUNS)
@settings(max_examples=20, deadline=None)
@given(case=conv_cases(**WIDE), activation=st.sampled_from([None, "relu"]))
def test_conv2d_of_bfloat16_arrays(path, case, activation):
    """bfloat16 in, bfloat16 out: the float32 computation of the widened arrays with bfloat16
    products, rounded once; the backward likewise."""
    x, w, b = as_bf16(case.x), as_bf16(case.w), as_bf16(case.b)
    before = snapshot(x, w, b)
    with using_bf16_path(path):
        check(case, x, w, b, activation)
    assert_unchanged(before, x, w, b)


def check(case, x, w, b, activation):
    out = fastconv.conv2d(x, w, b, **case.kwargs, activation=activation)
    assert out.dtype == BF16 and out.shape == case.out_shape
    f32 = lambda a: None if a is None else a.astype(np.float32)
    want = fastconv.conv2d(f32(x), f32(w), f32(b), **case.kwargs, activation=activation,
                           precision="bf16")
    assert_same_bits(out.view(np.uint16), want.astype(BF16).view(np.uint16))
    gy = as_bf16(np.random.default_rng(0).standard_normal(case.out_shape))
    grads = fastconv.conv2d_backward(gy, x, w, **case.kwargs, activation=activation,
                                     output=out if activation else None)
    want = fastconv.conv2d_backward(f32(gy), f32(x), f32(w), **case.kwargs,
                                    activation=activation,
                                    output=f32(out) if activation else None, precision="bf16")
    for got, exp in zip(grads, want):
        assert got.dtype == BF16
        assert_same_bits(got.view(np.uint16), exp.astype(BF16).view(np.uint16))


def test_bfloat16_arrays_must_all_be_bfloat16():
    x = np.ones((1, 2, 4, 4), BF16)
    w = np.ones((3, 2, 3, 3), BF16)
    with pytest.raises(TypeError, match="weight has dtype float32"):
        fastconv.conv2d(x, w.astype(np.float32))
    with pytest.raises(TypeError, match="bias has dtype float32"):
        fastconv.conv2d(x, w, np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="input has dtype float64"):
        fastconv.conv2d(x.astype(np.float64), w)
    with pytest.raises(TypeError, match="grad_output has dtype float32"):
        fastconv.conv2d_backward(np.ones((1, 3, 2, 2), np.float32), x, w)
    with pytest.raises(ValueError, match="fft"):
        fastconv.conv2d(x, w, algorithm="fft", precision="bf16")
    for path in supported_bf16_paths():
        with using_bf16_path(path):
            if path != "portable":  # bfloat16 arrays multiply in bfloat16 here: no FFT
                with pytest.raises(ValueError, match="fft"):
                    fastconv.conv2d(x, w, algorithm="fft")
            else:  # they multiply exactly in float32, as the FFT may
                fft = fastconv.conv2d(x, w, algorithm="fft")
                assert fft.dtype == BF16 and np.all(fft.astype(np.float32) == 18)
    exact = fastconv.conv2d(x, w, precision="ieee")  # 'ieee': exact float32 on the widened values
    assert exact.dtype == BF16 and np.all(exact.astype(np.float32) == 18)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), op=st.sampled_from(["max", "avg", "adaptive_avg", "adaptive_max"]))
def test_pooling_of_bfloat16_arrays(data, op):
    """Pooling of bfloat16 arrays is the float32 pooling of the widened values, rounded once
    (exact for max pooling, whose results are inputs), gradients likewise."""
    n, c = data.draw(st.integers(0, 2)), data.draw(st.integers(1, 3))
    h, w = data.draw(st.integers(2, 9)), data.draw(st.integers(2, 9))
    x = as_bf16(random_array(data.draw, (n, c, h, w), np.float32))
    xf = x.astype(np.float32)
    if op in ("max", "avg"):
        k = data.draw(st.integers(1, min(h, w, 3)))
        run = getattr(fastconv, f"{op}_pool2d")
        run_back = getattr(fastconv, f"{op}_pool2d_backward")
        args = (k,)
    else:
        size = (data.draw(st.integers(1, h)), data.draw(st.integers(1, w)))
        run = getattr(fastconv, f"{op}_pool2d")
        run_back = getattr(fastconv, f"{op}_pool2d_backward")
        args = (size,)
    if "max" in op:
        out, idx = run(x, *args, return_indices=True)
        want, want_idx = run(xf, *args, return_indices=True)
        assert_same_bits(idx, want_idx)
        assert_same_bits(out.astype(np.float32), want)  # max pooling is exact
        gy = as_bf16(np.ones(out.shape, np.float32) * 0.3)
        g = run_back(gy, idx, x.shape)
        g_want = run_back(gy.astype(np.float32), idx, x.shape)
    else:
        out = run(x, *args)
        want = run(xf, *args)
        gy = as_bf16(np.ones(out.shape, np.float32) * 0.3)
        back_args = args if op == "avg" else ()
        g = run_back(gy, x.shape, *back_args)
        g_want = run_back(gy.astype(np.float32), x.shape, *back_args)
    assert out.dtype == BF16 and g.dtype == BF16
    assert_same_bits(out.view(np.uint16), want.astype(BF16).view(np.uint16))
    assert_same_bits(g.view(np.uint16), g_want.astype(BF16).view(np.uint16))


def test_conv_transpose2d_of_bfloat16_arrays():
    """The transposed convolution (the layer of decoders) takes bfloat16 arrays too: float32 on
    the widened values, rounded once; its gradients likewise."""
    rng = np.random.default_rng(4)
    x = as_bf16(rng.standard_normal((2, 6, 5, 4)))
    w = as_bf16(rng.standard_normal((6, 4, 3, 3)))
    b = as_bf16(rng.standard_normal(4))
    kw = dict(stride=2, padding=1, output_padding=1)
    out = fastconv.conv_transpose2d(x, w, b, **kw)
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    want = fastconv.conv_transpose2d(f32(x), f32(w), f32(b), **kw)
    assert out.dtype == BF16
    assert_same_bits(out.view(np.uint16), want.astype(BF16).view(np.uint16))
    gy = as_bf16(rng.standard_normal(out.shape))
    grads = fastconv.conv_transpose2d_backward(gy, x, w, **kw)
    wants = fastconv.conv_transpose2d_backward(f32(gy), f32(x), f32(w), **kw)
    for got, exp in zip(grads, wants):
        assert got.dtype == BF16
        assert_same_bits(got.view(np.uint16), exp.astype(BF16).view(np.uint16))
    with pytest.raises(TypeError, match="weight has dtype float32"):
        fastconv.conv_transpose2d(x, f32(w))
