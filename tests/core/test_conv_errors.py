"""Every argument error of conv2d / conv2d_backward: TypeError for a wrong dtype or a non-int
where an int is expected, ValueError for a wrong shape or value; each message names the argument.
"""
import numpy as np
import pytest

import fastconv
from fastconv import reference
from conv_helpers import assert_same_bits

F32 = np.float32


def good():
    """A valid call: input (2, 4, 8, 8), weight (6, 2, 3, 3) with groups=2, bias (6,)."""
    return dict(input=np.zeros((2, 4, 8, 8), F32), weight=np.zeros((6, 2, 3, 3), F32),
                bias=np.zeros(6, F32), stride=1, padding=0, dilation=1, groups=2)


def call_forward(fn=fastconv.conv2d, **changes):
    kw = good()
    kw.update(changes)
    return fn(kw.pop("input"), kw.pop("weight"), **kw)


def call_backward(fn=fastconv.conv2d_backward, **changes):
    kw = good()
    del kw["bias"]
    kw["grad_output"] = np.zeros((2, 6, 6, 6), F32)
    kw.update(changes)
    kw.pop("bias", None)  # conv2d_backward has no bias argument
    return fn(kw.pop("grad_output"), kw.pop("input"), kw.pop("weight"), **kw)


def test_the_base_calls_are_valid():
    assert call_forward().shape == (2, 6, 6, 6)
    assert call_backward()[0].shape == (2, 4, 8, 8)


# (argument changes, message must match) -- the same for conv2d and conv2d_backward
TYPE_ERRORS = [
    (dict(input=np.zeros((2, 4, 8, 8), np.int32)), "input"),
    (dict(input=np.zeros((2, 4, 8, 8), np.int64)), "input"),
    (dict(input=np.zeros((2, 4, 8, 8), bool)), "input"),
    (dict(input=np.zeros((2, 4, 8, 8), np.float16)), "input"),
    (dict(input=np.zeros((2, 4, 8, 8), np.complex64)), "input"),
    (dict(input=np.zeros((2, 4, 8, 8), np.longdouble)), "input"),
    (dict(input=None), "input"),
    (dict(input="abc"), "input"),
    (dict(weight=np.zeros((6, 2, 3, 3), np.float64)), "weight"),
    (dict(weight=np.zeros((6, 2, 3, 3), np.int32)), "weight"),
    (dict(weight=np.zeros((6, 2, 3, 3), bool)), "weight"),
    (dict(weight=np.zeros((6, 2, 3, 3), np.float16)), "weight"),
    (dict(stride=1.0), "stride"),
    (dict(stride=True), "stride"),
    (dict(stride=(1, 2.0)), "stride"),
    (dict(stride=(np.True_, 1)), "stride"),
    (dict(stride="1"), "stride"),
    (dict(stride=None), "stride"),
    (dict(padding=1.0), "padding"),
    (dict(padding=False), "padding"),
    (dict(padding=(0, 1.5)), "padding"),
    (dict(padding=None), "padding"),
    (dict(dilation=np.float64(1)), "dilation"),
    (dict(dilation=(1, True)), "dilation"),
    (dict(groups=2.0), "groups"),
    (dict(groups=True), "groups"),
    (dict(groups="2"), "groups"),
    (dict(groups=None), "groups"),
]

VALUE_ERRORS = [
    (dict(input=np.zeros((4, 8), F32)), "input"),
    (dict(input=np.zeros((1, 2, 4, 8, 8), F32)), "input"),
    (dict(input=np.zeros((2, 3, 8, 8), F32)), "input|groups"),  # channel mismatch (groups=2)
    (dict(input=np.zeros((2, 6, 8, 8), F32)), "weight"),  # 6 channels, weight expects 2*2
    (dict(weight=np.zeros((6, 3, 3), F32)), "weight"),
    (dict(weight=np.zeros((1, 6, 2, 3, 3), F32)), "weight"),
    (dict(weight=np.zeros((6, 4, 3, 3), F32)), "weight"),  # C // groups mismatch
    (dict(weight=np.zeros((5, 2, 3, 3), F32), bias=None), "groups"),  # does not divide K
    (dict(weight=np.zeros((6, 2, 0, 3), F32)), "weight"),  # empty kernel
    (dict(groups=3), "groups"),  # does not divide C=4
    (dict(groups=0), "groups"),
    (dict(groups=-2), "groups"),
    (dict(stride=0), "stride"),
    (dict(stride=-1), "stride"),
    (dict(stride=(1, 0)), "stride"),
    (dict(stride=(1, 1, 1)), "stride"),
    (dict(stride=()), "stride"),
    (dict(dilation=0), "dilation"),
    (dict(dilation=(2, -1)), "dilation"),
    (dict(padding=-1), "padding"),
    (dict(padding=(0, -2)), "padding"),
    (dict(padding=(1, 1, 1, 1)), "padding"),
    (dict(padding="same", stride=2), "padding"),
    (dict(padding="same", stride=(1, 2)), "padding"),
    (dict(padding="full"), "padding"),
    (dict(padding="SAME"), "padding"),
    (dict(padding=""), "padding"),
    (dict(input=np.zeros((2, 4, 2, 8), F32)), "output size"),  # 2 rows < 3x3 kernel
    (dict(input=np.zeros((2, 4, 8, 8), F32), dilation=4), "output size"),  # 9 > 8
    (dict(input=np.zeros((2, 4, 1, 1), F32), stride=3), "output size"),
    (dict(input=np.zeros((2, 4, 0, 8), F32), padding=2), "input"),  # torch: only N or C may be 0
    (dict(input=np.zeros((2, 4, 8, 0), F32), padding=2), "input"),
]

BIAS_TYPE_ERRORS = [
    (np.zeros(6, np.float64), "bias"),
    (np.zeros(6, np.int64), "bias"),
    (np.zeros(6, bool), "bias"),
]
BIAS_VALUE_ERRORS = [np.zeros(5, F32), np.zeros((6, 1), F32), np.zeros((1, 6), F32),
                     np.zeros((), F32), np.zeros(0, F32)]


def _ids(cases):
    return [", ".join(f"{k}={v.dtype}{v.shape}" if isinstance(v, np.ndarray) else f"{k}={v!r}"
                      for k, v in changes.items()) for changes, _ in cases]


@pytest.mark.parametrize("fn", [fastconv.conv2d, reference.conv2d], ids=["fastconv", "reference"])
@pytest.mark.parametrize("changes,match", TYPE_ERRORS, ids=_ids(TYPE_ERRORS))
def test_forward_type_errors(fn, changes, match):
    with pytest.raises(TypeError, match=match):
        call_forward(fn, **changes)


@pytest.mark.parametrize("fn", [fastconv.conv2d, reference.conv2d], ids=["fastconv", "reference"])
@pytest.mark.parametrize("changes,match", VALUE_ERRORS, ids=_ids(VALUE_ERRORS))
def test_forward_value_errors(fn, changes, match):
    with pytest.raises(ValueError, match=match):
        call_forward(fn, **changes)


@pytest.mark.parametrize("changes,match", TYPE_ERRORS, ids=_ids(TYPE_ERRORS))
def test_backward_type_errors(changes, match):
    with pytest.raises(TypeError, match=match):
        call_backward(**changes)


@pytest.mark.parametrize("changes,match", VALUE_ERRORS, ids=_ids(VALUE_ERRORS))
def test_backward_value_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        call_backward(**changes)


@pytest.mark.parametrize("bias,match", BIAS_TYPE_ERRORS, ids=lambda v: str(getattr(v, "dtype", v)))
def test_bias_type_errors(bias, match):
    with pytest.raises(TypeError, match=match):
        call_forward(bias=bias)


@pytest.mark.parametrize("bias", BIAS_VALUE_ERRORS, ids=lambda b: str(b.shape))
def test_bias_shape_errors(bias):
    with pytest.raises(ValueError, match="bias"):
        call_forward(bias=bias)


@pytest.mark.parametrize("grad_output,exc", [
    (np.zeros((2, 6, 6, 6), np.float64), TypeError),  # dtype differs from input
    (np.zeros((2, 6, 6, 6), np.int32), TypeError),
    (np.zeros((2, 6, 6, 6), np.float16), TypeError),
    (np.zeros((2, 6, 6, 5), F32), ValueError),  # wrong output size
    (np.zeros((2, 5, 6, 6), F32), ValueError),  # wrong channels
    (np.zeros((3, 6, 6, 6), F32), ValueError),  # wrong batch
    (np.zeros((6, 6, 6), F32), ValueError),  # unbatched grad for a batched input
    (np.zeros((1, 2, 6, 6, 6), F32), ValueError),
    (np.zeros((6, 6), F32), ValueError),
], ids=lambda v: f"{v.dtype}{v.shape}" if isinstance(v, np.ndarray) else v.__name__)
def test_grad_output_errors(grad_output, exc):
    with pytest.raises(exc, match="grad_output"):
        call_backward(grad_output=grad_output)


def test_batched_grad_output_for_unbatched_input():
    x = np.zeros((4, 8, 8), F32)
    with pytest.raises(ValueError, match="grad_output"):
        call_backward(input=x, grad_output=np.zeros((1, 6, 6, 6), F32))
    assert call_backward(input=x, grad_output=np.zeros((6, 6, 6), F32))[0].shape == x.shape


@pytest.mark.parametrize("needs", [(True, True), (True,) * 4, ()])
def test_needs_must_have_three_entries(needs):
    with pytest.raises(ValueError, match="needs"):
        call_backward(needs=needs)


def test_set_num_threads_errors():
    with pytest.raises(ValueError, match="n must be"):
        fastconv.set_num_threads(0)
    with pytest.raises(ValueError, match="n must be"):
        fastconv.set_num_threads(-3)
    for bad in (1.0, True, "2", None):
        with pytest.raises(TypeError, match="n must be an int"):
            fastconv.set_num_threads(bad)


def test_integer_like_arguments_are_accepted():
    """NumPy integers are ints: np.int64 strides etc. must work like Python ints."""
    out = call_forward(stride=np.int64(1), padding=np.int32(1), dilation=(np.uint8(1), 1),
                       groups=np.int16(2))
    assert out.shape == (2, 6, 8, 8)


def test_errors_leave_nothing_half_done():
    """A failing call raises before any kernel runs: the inputs are untouched."""
    kw = good()
    x = np.arange(2 * 4 * 8 * 8, dtype=F32).reshape(2, 4, 8, 8)
    x0 = x.copy()
    with pytest.raises(ValueError):
        fastconv.conv2d(x, kw["weight"], np.zeros(5, F32), groups=2)
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
def test_a_one_int_sequence_counts_as_that_int(name):
    # torch.nn.functional.conv2d expands stride=(2,) to (2, 2), as the pooling functions do
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 9, 9)), rng.standard_normal((3, 2, 3, 3))
    want = fastconv.conv2d(x, w, **{name: 2})
    for value in [(2,), [2], np.array([2])]:
        assert_same_bits(fastconv.conv2d(x, w, **{name: value}), want)
        grads = fastconv.conv2d_backward(np.ones_like(want), x, w, **{name: value})
        for got, expected in zip(grads, fastconv.conv2d_backward(np.ones_like(want), x, w,
                                                                 **{name: 2})):
            assert_same_bits(got, expected)
    with pytest.raises(ValueError, match=name):
        fastconv.conv2d(x, w, **{name: (2, 2, 2)})


def test_kept_geometries_do_not_let_bad_arguments_through(monkeypatch):
    # conv_geometry keeps the geometry of plain int arguments: a bool (equal to 1 and hashing
    # as 1) or a float must still be refused after the same call with ints, and an invalid
    # call is never kept
    from fastconv._core import conv_geometry

    # an empty store: the tests run before may have filled it to its limit
    monkeypatch.setattr(conv_geometry, "_GEOMETRIES", {})
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    for _ in range(2):
        fastconv.conv2d(x, w, None, (1, 1), (1, 1), (1, 1), 1)
        fastconv.conv2d(x, w, None, 1, 1, 1, 1)
    with pytest.raises(TypeError, match="stride"):
        fastconv.conv2d(x, w, None, (True, True), (1, 1), (1, 1), 1)
    with pytest.raises(TypeError, match="groups"):
        fastconv.conv2d(x, w, None, 1, 1, 1, True)
    with pytest.raises(TypeError, match="dilation"):
        fastconv.conv2d(x, w, None, 1, 1, 1.0, 1)
    for _ in range(2):
        with pytest.raises(ValueError, match="output size"):
            fastconv.conv2d(x, w, None, 1, 0, 3, 1)
    key_shapes = {key[:2] for key in conv_geometry._GEOMETRIES}
    assert ((1, 2, 5, 5), (3, 2, 3, 3)) in key_shapes
    assert all(isinstance(g, conv_geometry.ConvGeometry)
               for g in conv_geometry._GEOMETRIES.values())
