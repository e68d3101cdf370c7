"""How exact float32 convolutions are: each output sums its taps in fixed blocks (one chain of
fused multiply-adds per block, then the block sums in order), so the rounding error of a long
reduction (C * R * S taps) stays near that of a short one. A single chain over every tap is
several times less exact at the sizes of deep layers; these bounds fail for it. grad_weight sums
every pixel of the batch for each weight, thousands of terms on a large image: it sums blocks of
whole rows of an image (at least 64 pixels) in one chain each, then the blocks in order.

The error of a float32 result y32 is max |y32 - y64| / max |y64|, y64 the float64 result of the
same float32 operands (float64 sums of float32 products are exact to far below these bounds).
"""
import numpy as np
import pytest

import fastconv

# (input shape, output channels, kernel, conv2d's keyword arguments): the shapes of common layers
# (a deep 3x3, a ResNet stage, a strided and a dilated one, a long 1x1 and a large kernel on RGB)
CASES = {
    "deep 3x3": ((2, 256, 14, 14), 64, 3, dict(padding=1)),
    "resnet 3x3": ((2, 64, 24, 24), 64, 3, dict(padding=1)),
    "strided 3x3": ((2, 64, 24, 24), 64, 3, dict(stride=2, padding=1)),
    "dilated 3x3": ((2, 64, 24, 24), 64, 3, dict(padding=2, dilation=2)),
    "pointwise": ((2, 1024, 8, 8), 64, 1, {}),
    "11x11 on RGB": ((2, 3, 64, 64), 48, 11, dict(stride=4, padding=2)),
}
# About 4 units in the last place of float32 at the largest output: measured errors are 1.3e-7
# to 3.5e-7 here (the last for the 64-term sums of the 1x1 grad_input: a short chain rounds so
# much); one chain over all taps gives 6e-7 to 2e-6.
BOUND = 5e-7


def _operands(shape, k, r, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    fan_in = shape[1] * r * r
    w = (rng.standard_normal((k, shape[1], r, r)) / np.sqrt(fan_in)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    return x, w, b


def _error(y32, y64):
    return float(np.abs(y32.astype(np.float64) - y64).max() / np.abs(y64).max())


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_forward_and_grad_input_round_like_short_sums(name):
    shape, k, r, kwargs = CASES[name]
    x, w, b = _operands(shape, k, r, seed=len(name))
    y32 = fastconv.conv2d(x, w, b, **kwargs)
    y64 = fastconv.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                          **kwargs)
    assert _error(y32, y64) <= BOUND, "forward"
    gy = np.random.default_rng(1).standard_normal(y32.shape).astype(np.float32)
    gx32 = fastconv.conv2d_backward(gy, x, w, needs=(True, False, False), **kwargs)[0]
    gx64 = fastconv.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                    w.astype(np.float64), needs=(True, False, False),
                                    **kwargs)[0]
    assert _error(gx32, gx64) <= BOUND, "grad_input"


# and images of thousands of pixels, whose grad_weight sums one chain per image would round
# to 1.6e-6 (dilated) and 2.9e-6 (96 x 96); the same sums in blocks of rows give 2.5e-7, 4.3e-7
GRAD_WEIGHT_CASES = dict(CASES, **{
    "dilated 3x3 on 64x64": ((2, 16, 64, 64), 16, 3, dict(padding=2, dilation=2)),
    "3x3 on 96x96": ((1, 8, 96, 96), 8, 3, dict(padding=1)),
})


@pytest.mark.parametrize("name", sorted(GRAD_WEIGHT_CASES))
def test_float32_grad_weight_rounds_like_short_sums(name):
    shape, k, r, kwargs = GRAD_WEIGHT_CASES[name]
    x, w, _ = _operands(shape, k, r, seed=len(name))
    y32 = fastconv.conv2d(x, w, **kwargs)
    gy = np.random.default_rng(1).standard_normal(y32.shape).astype(np.float32)
    gw32 = fastconv.conv2d_backward(gy, x, w, needs=(False, True, False), **kwargs)[1]
    gw64 = fastconv.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                    w.astype(np.float64), needs=(False, True, False),
                                    **kwargs)[1]
    assert _error(gw32, gw64) <= BOUND


def test_block_sums_do_not_depend_on_the_thread_count():
    # the blocks are fixed by the tap count alone (not by threads, tiles or the SIMD path)
    x, w, b = _operands((3, 200, 9, 11), 24, 3, seed=7)
    threads = fastconv.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            fastconv.set_num_threads(n)
            outs.append(fastconv.conv2d(x, w, b, padding=1))
    finally:
        fastconv.set_num_threads(threads)
    for y in outs[1:]:
        assert y.tobytes() == outs[0].tobytes()
