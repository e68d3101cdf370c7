r"""Convolution by the convolution theorem: :func:`conv2d_fft` and :func:`conv2d_backward_fft`, the
same functions as :func:`fastconv.conv2d` and :func:`fastconv.conv2d_backward` computed in the
frequency domain with :mod:`numpy.fft` (how: ``fastconv._core.fft``), and :func:`prefer_fft`, a
cost model that predicts where that is faster than the direct kernels.

The FFT is opt-in (``algorithm='fft'``; ``'auto'`` runs the direct kernels) because it is not
always as exact. Every output of the FFT carries a rounding error of about
``eps * log(FH * FW)`` times the magnitudes of the *whole* image and kernel (``FH x FW``: the
padded input, rounded up to a fast FFT size), where the direct kernels' error is relative to the
values each output's window sees. On N(0, 1) data the two are alike, but one outlier (1e8 in
float32 data) puts errors in the tens on outputs far from it, and one inf or NaN makes every
output of its image non-finite (torch and the direct kernels: only the outputs whose window holds
it). No cheap test of the data rules this out (the magnitude each output sees is itself a
convolution), so the choice is left to the caller.
"""
from ._core.conv import conv2d_backward_fft, conv2d_fft
from ._core.fft import fft_size, prefer_fft

__all__ = ["conv2d_fft", "conv2d_backward_fft", "prefer_fft", "fft_size"]
