r"""The FFT backend of a convolution: the convolution theorem with :mod:`numpy.fft`.

A CNN layer is a cross-correlation, ``out[i] = sum_u x[i + u] w[u]``; its Fourier transform is
``X(f) * conj(W(f))`` (the convolution theorem with the kernel flipped). So the forward pass is:

1. real FFTs (``rfft2``) of the input and of the (dilated) kernel, both zero-extended to an
   ``FH x FW`` grid at least as large as the *padded* input, so that the circular correlation
   the DFT computes equals the linear one on every output position that is kept;
2. per frequency, a product summed over the input channels of a group -- a small complex matrix
   product ``(N, C/g) @ (C/g, K/g)`` at each of the ``FH * (FW/2 + 1)`` frequencies;
3. an inverse real FFT (``irfft2``), then the stride and the crop, read off in one gather (the
   zero padding of the input is never materialised: it is the zero extension of step 1, read
   at a shifted index).

The backward pass is the same three steps twice: ``grad_input`` is the *full* convolution of
the (stride-upsampled) ``grad_output`` with the kernel, ``X_grad = GO(f) * W(f)`` summed over
output channels, and ``grad_weight`` the correlation of the input with ``grad_output``,
``W_grad = X(f) * conj(GO(f))`` summed over the batch.

The cost hardly depends on the kernel size, while the direct kernels' grows as ``R * S``;
:func:`prefer_fft` is a cost model (calibrated with ``bench/fft_crossover.py``) that predicts where
the FFT is faster. float32 inputs are transformed in single precision (NumPy >= 2) and the results
are float32. Why this backend is opt-in is said in :mod:`fastconv.fft`.
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from .epilogue import NONE, activate_
from .threads import get_num_threads

if TYPE_CHECKING:
    from numpy.typing import DTypeLike, NDArray

    from .args import FloatArray, Grads, Needs
    from .conv_geometry import ConvGeometry
    from .epilogue import Epilogue


# ----------------------------------------------------------------------------------------------
# sizes and threads
# ----------------------------------------------------------------------------------------------
def fft_size(n: int) -> int:
    """The smallest ``m >= n`` whose only prime factors are 2, 3, 5 and 7 (fast for pocketfft)."""
    n = int(n)
    if n <= 1:
        return 1
    best = 1 << (n - 1).bit_length()  # a power of two always qualifies
    p7 = 1
    while p7 < best:
        p5 = p7
        while p5 < best:
            p3 = p5
            while p3 < best:
                m = p3
                while m < n:
                    m *= 2
                best = min(best, m)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


# Below this much work (in rough flops: about a millisecond of one core) handing slices to pool
# threads costs more than it saves.
MIN_PARALLEL_WORK = 2e6

_pool: Optional[ThreadPoolExecutor] = None
_pool_size = 0
_pool_lock = threading.Lock()


def _forget_pool() -> None:  # a forked child inherits the pool object but not its threads
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="fastconv-fft")
            _pool_size = n
        return _pool


def _chunks(total: int, parts: int) -> List[slice]:
    """``parts`` contiguous ``slice``s covering ``range(total)``."""
    bounds = np.linspace(0, total, parts + 1).round().astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _parallel(func: Callable[[slice], None], total: int, work: float) -> None:
    """Run ``func(slice)`` over ``range(total)`` split across fastconv's thread count (numpy.fft
    and matmul release the GIL). Serial when the work (in rough flops) is too small to share."""
    threads = min(get_num_threads(), total)
    if threads <= 1 or work < MIN_PARALLEL_WORK:
        func(slice(0, total))
        return
    slices = _chunks(total, threads)
    if threading.current_thread().name.startswith("fastconv-fft"):  # no nested pools
        for sl in slices:
            func(sl)
        return
    for f in [_executor(threads).submit(func, sl) for sl in slices]:
        f.result()


def _rfft2(a: NDArray[Any], shape: Tuple[int, int]) -> NDArray[Any]:
    """``rfft2`` over the last two axes of the real ``(M, h, w)`` array ``a``, zero-extended to
    ``shape``; returns ``(M, FH, FW // 2 + 1)`` complex (complex64 for float32 on NumPy >= 2)."""
    m = a.shape[0]
    out = np.empty((m, shape[0], shape[1] // 2 + 1), dtype=np.result_type(a.dtype, np.complex64))

    def run(sl: slice) -> None:
        out[sl] = np.fft.rfft2(a[sl], s=shape)

    _parallel(run, m, m * shape[0] * shape[1] * 8)
    return out


def _irfft2_gather(spec: NDArray[Any], shape: Tuple[int, int], rows: NDArray[Any],
                   cols: NDArray[Any], dtype: DTypeLike) -> NDArray[Any]:
    """``irfft2(spec)`` to a real ``shape`` grid, then ``[..., rows, cols]`` (the stride, crop and
    padding shift in one gather), as ``dtype``."""
    m = spec.shape[0]
    out = np.empty((m, len(rows), len(cols)), dtype=dtype)
    ix = np.ix_(rows, cols)

    def run(sl: slice) -> None:
        full = np.fft.irfft2(spec[sl], s=shape)
        out[sl] = full[(slice(None),) + ix]

    _parallel(run, m, m * shape[0] * shape[1] * 8)
    return out


def _product(a: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
    """Per-frequency matrix product of two spectra with a frequency-last layout.

    ``a`` is ``(G, P, Q, F)`` and ``b`` is ``(G, Q, R, F)`` (any strides), the result
    ``(G, P, R, F)`` with
    ``out[g, p, r, f] = sum_q a[g, p, q, f] * b[g, q, r, f]``.
    """
    g, p, q, nf = a.shape
    r = b.shape[2]
    dtype = np.result_type(a.dtype, b.dtype)
    out = np.empty((g, p, r, nf), dtype=dtype)
    if q <= 4 or p * r <= 4:
        # few terms (or tiny matrices, e.g. depthwise): a broadcast multiply-add per term
        def run(sl: slice) -> None:
            acc = a[:, :, 0, None, sl] * b[:, None, 0, :, sl]
            for i in range(1, q):
                acc += a[:, :, i, None, sl] * b[:, None, i, :, sl]
            out[..., sl] = acc
    else:
        # frequency-major copies, then one stacked BLAS matmul (G, F, P, Q) @ (G, F, Q, R)
        def run(sl: slice) -> None:
            at = np.ascontiguousarray(a[..., sl].transpose(0, 3, 1, 2))
            bt = np.ascontiguousarray(b[..., sl].transpose(0, 3, 1, 2))
            out[..., sl] = np.matmul(at, bt).transpose(0, 2, 3, 1)
    _parallel(run, nf, g * p * q * r * nf * 8)
    return out


# ----------------------------------------------------------------------------------------------
# the geometry of the frequency grid
# ----------------------------------------------------------------------------------------------
class _Plan:
    """Sizes shared by the forward and backward passes of one convolution."""

    def __init__(self, x_shape: Sequence[int], w_shape: Sequence[int], g: ConvGeometry) -> None:
        n, c, h, w = x_shape
        k, cg, r, s = w_shape
        self.n, self.c, self.h, self.w = n, c, h, w
        self.k, self.cg, self.r, self.s = k, cg, r, s
        self.groups, self.kg = g.groups, k // g.groups
        (self.sh, self.sw), (self.dh, self.dw) = g.stride, g.dilation
        self.rd, self.sd = self.dh * (r - 1) + 1, self.dw * (s - 1) + 1  # dilated extent
        self.hp = h + g.pad_top + g.pad_bottom
        self.wp = w + g.pad_left + g.pad_right
        self.shape = (fft_size(self.hp), fft_size(self.wp))
        self.g = g
        # output (i, j) of the padded correlation reads x at row i*sh + u*dh - pad_top: the
        # padding is the zero extension, so output row i sits at index (i*sh - pad_top) mod FH.
        fh, fw = self.shape
        self.out_rows = (np.arange(g.out_h) * self.sh - g.pad_top) % fh
        self.out_cols = (np.arange(g.out_w) * self.sw - g.pad_left) % fw

    def dilated_weight(self, weight: FloatArray) -> FloatArray:
        if self.dh == self.dw == 1:
            return weight
        wd = np.zeros((self.k, self.cg, self.rd, self.sd), dtype=weight.dtype)
        wd[:, :, ::self.dh, ::self.dw] = weight
        return wd

    def spectrum(self, a: NDArray[Any]) -> NDArray[Any]:
        """rfft2 of an ``(A, B, h, w)`` array -> ``(A, B, FH, FW//2+1)``."""
        a0, a1 = a.shape[:2]
        spec = _rfft2(a.reshape((a0 * a1,) + a.shape[2:]), self.shape)
        return spec.reshape((a0, a1) + spec.shape[1:])


def _flat(spec: NDArray[Any]) -> NDArray[Any]:
    return spec.reshape(spec.shape[:-2] + (-1,))


# ----------------------------------------------------------------------------------------------
# the backend's entry points
# ----------------------------------------------------------------------------------------------
def is_usable_for(input_shape: Sequence[int], weight_shape: Sequence[int], g: ConvGeometry
                  ) -> bool:
    """Whether the FFT's grid (the whole padded input) stays near the size of the problem: not
    so with paddings far beyond what the windows read, where the FFT path hands the call to the
    direct kernels (same result, without a grid of the padding's size)."""
    for n, lo, hi, taps, out in ((input_shape[2], g.pad_top, g.pad_bottom, weight_shape[2], g.out_h),
                                 (input_shape[3], g.pad_left, g.pad_right, weight_shape[3], g.out_w)):
        if n + lo + hi > 2 * (n + out * taps) + 64:
            return False
    return True


def forward(x4: FloatArray, weight: FloatArray, bias: Optional[FloatArray], g: ConvGeometry,
            epilogue: Epilogue = NONE) -> FloatArray:
    """conv2d of the 4-D ``x4`` by FFTs: an ``(N, K, OH, OW)`` array, activated by
    ``epilogue`` (a pass over the fresh output: the FFT has no epilogue to fuse it into)."""
    dtype = x4.dtype
    p = _Plan(x4.shape, weight.shape, g)
    out = np.zeros((p.n, p.k, g.out_h, g.out_w), dtype=dtype)
    if out.size and p.cg:
        xs = _flat(p.spectrum(x4))                                   # (N, C, F)
        ws = np.conj(_flat(p.spectrum(p.dilated_weight(weight))))    # (K, C/g, F)
        nf = xs.shape[-1]
        # (G, N, C/g, F) @ (G, C/g, K/g, F) -> (G, N, K/g, F)
        a = xs.reshape(p.n, p.groups, p.cg, nf).transpose(1, 0, 2, 3)
        b = ws.reshape(p.groups, p.kg, p.cg, nf).transpose(0, 2, 1, 3)
        ys = _product(a, b)                                          # (G, N, K/g, F)
        ys = ys.transpose(1, 0, 2, 3).reshape((p.n * p.k,) + p.shape[:1] + (p.shape[1] // 2 + 1,))
        out = _irfft2_gather(ys, p.shape, p.out_rows, p.out_cols, dtype)
        out = out.reshape(p.n, p.k, g.out_h, g.out_w)
    if bias is not None:
        out += bias.astype(dtype, copy=False)[None, :, None, None]
    return activate_(out, epilogue)


def backward(go4: FloatArray, x4: FloatArray, weight: FloatArray, g: ConvGeometry, needs: Needs
             ) -> Grads:
    """``(grad_input, grad_weight, grad_bias)`` of conv2d by FFTs for the 4-D ``go4`` and ``x4``;
    an entry whose ``needs`` flag is False is None."""
    need_input, need_weight, need_bias = needs
    dtype = x4.dtype
    p = _Plan(x4.shape, weight.shape, g)
    grad_input = np.zeros(x4.shape, dtype=dtype) if need_input else None
    grad_weight = np.zeros(weight.shape, dtype=dtype) if need_weight else None
    grad_bias = go4.sum(axis=(0, 2, 3), dtype=dtype) if need_bias else None
    work = go4.size and p.cg and (need_input or need_weight)
    if not work:
        return grad_input, grad_weight, grad_bias
    # grad_output on the stride-1 grid of the padded input (zeros between strided samples)
    if p.sh == p.sw == 1:
        go_up = go4
    else:
        go_up = np.zeros((p.n, p.k, (g.out_h - 1) * p.sh + 1, (g.out_w - 1) * p.sw + 1), dtype)
        go_up[:, :, ::p.sh, ::p.sw] = go4
    gs = _flat(p.spectrum(go_up))                                    # (N, K, F)
    nf = gs.shape[-1]
    fh, fw = p.shape
    gs_g = gs.reshape(p.n, p.groups, p.kg, nf)
    if need_input:
        # full convolution of go_up with the kernel: GX = sum_k GO(f) * W(f); padded row q sits
        # at index q, so input row i (padded row i + pad_top) is read at i + pad_top
        ws = _flat(p.spectrum(p.dilated_weight(weight)))            # (K, C/g, F)
        a = gs_g.transpose(1, 0, 2, 3)                               # (G, N, K/g, F)
        b = ws.reshape(p.groups, p.kg, p.cg, nf)                     # (G, K/g, C/g, F)
        gxs = _product(a, b)                                         # (G, N, C/g, F)
        gxs = gxs.transpose(1, 0, 2, 3).reshape(p.n * p.c, fh, fw // 2 + 1)
        rows = np.arange(p.h) + g.pad_top
        cols = np.arange(p.w) + g.pad_left
        grad_input = _irfft2_gather(gxs, p.shape, rows, cols, dtype).reshape(x4.shape)
    if need_weight:
        # correlation of the input with go_up: GW = sum_n conj(GO(f)) * X(f); tap u reads the
        # input at row i + u*dh - pad_top, i.e. index (u*dh - pad_top) mod FH
        xs = _flat(p.spectrum(x4))                                   # (N, C, F)
        a = np.conj(gs_g).transpose(1, 2, 0, 3)                      # (G, K/g, N, F)
        b = xs.reshape(p.n, p.groups, p.cg, nf).transpose(1, 0, 2, 3)  # (G, N, C/g, F)
        gws = _product(a, b)                                         # (G, K/g, C/g, F)
        gws = gws.reshape(p.k * p.cg, fh, fw // 2 + 1)
        rows = (np.arange(p.r) * p.dh - g.pad_top) % fh
        cols = (np.arange(p.s) * p.dw - g.pad_left) % fw
        grad_weight = _irfft2_gather(gws, p.shape, rows, cols, dtype).reshape(weight.shape)
    return grad_input, grad_weight, grad_bias


# ----------------------------------------------------------------------------------------------
# a cost model: where the FFT pays off
# ----------------------------------------------------------------------------------------------
# Seconds per unit of work of one thread, fitted by ``bench/fft_crossover.py --calibrate
# --threads 1`` (the fastest of 7 runs per shape, AMD EPYC with AVX2/AVX-512, NumPy 2.4's
# pocketfft); both paths scale alike with threads, so only the ratios matter. Direct: per
# multiply-add of the convolution (the compiled kernels run at ~100 GMAC/s per core when they can
# block over channels, ~27 GMAC/s for a depthwise layer: DEPTHWISE_PENALTY / (C/g * K/g)). FFT:
# per transform unit ``FH*FW*log2(FH*FW)`` (0.33 ns fitted on 40..128-point grids, 0.5-0.65 ns
# measured on 512-point ones: rounded up) and per complex multiply-add of the frequency product.
DIRECT_SECONDS_PER_MAC = 1.0 / 95e9
DEPTHWISE_PENALTY = 2.5
FFT_SECONDS_PER_UNIT = 4e-10
PRODUCT_SECONDS_PER_CMAC = 1.0e-9
FFT_OVERHEAD_SECONDS = 2e-4
# prefer_fft says yes only when the FFT is predicted this many times faster: the direct kernels'
# cost is the better known (and their results bitwise reproducible).
SAFETY_MARGIN = 1.5
# Per output, the frequency product alone costs more than the direct kernels' R*S multiply-adds
# below ~71 taps (1 ns vs R*S / 95 ns, with the grid at most twice the output): so under the
# model the FFT cannot win there, which gives prefer_fft a cheap early exit.
MIN_FFT_TAPS = 64


def _costs(input_shape: Sequence[int], weight_shape: Sequence[int], geometry: ConvGeometry,
           backward: bool = False) -> Tuple[float, float]:
    """(direct, fft) predicted seconds."""
    n, c, h, w = input_shape
    k, cg, r, s = weight_shape
    g = geometry
    hp = h + g.pad_top + g.pad_bottom
    wp = w + g.pad_left + g.pad_right
    fh, fw = fft_size(hp), fft_size(wp)
    grid = fh * fw
    unit = grid * math.log2(max(grid, 2))
    nf = fh * (fw // 2 + 1)
    macs: float = n * k * cg * g.out_h * g.out_w * r * s
    macs *= 1.0 + DEPTHWISE_PENALTY / max(cg * (k // g.groups), 1)
    if not backward:
        direct = macs * DIRECT_SECONDS_PER_MAC
        transforms = n * c + k * cg + n * k
        products = n * k * cg * nf
    else:
        direct = 2 * macs * DIRECT_SECONDS_PER_MAC
        transforms = n * k + k * cg + n * c + n * c + k * cg
        products = 2 * n * k * cg * nf
    fft = transforms * unit * FFT_SECONDS_PER_UNIT + products * PRODUCT_SECONDS_PER_CMAC
    return direct, fft + FFT_OVERHEAD_SECONDS


def prefer_fft(input_shape: Sequence[int], weight_shape: Sequence[int], geometry: ConvGeometry,
               backward: bool = False) -> bool:
    """Whether the FFT path (``algorithm='fft'``) is predicted clearly faster than the direct
    kernels for this convolution.

    ``algorithm='auto'`` does not consult it: it runs the direct kernels, because the FFT can be
    less exact (see the module docstring). Use it to opt in where the data are finite and of
    moderate dynamic range.

    Args:
        input_shape: ``(N, C, H, W)``.
        weight_shape: ``(K, C // groups, R, S)``.
        geometry: the :class:`~fastconv._core.conv_geometry.ConvGeometry` from
            ``fastconv._core.conv_geometry.conv_geometry``.
        backward: decide for :func:`conv2d_backward` instead of :func:`conv2d`. Default: False.

    Returns:
        True when the predicted FFT time, times ``SAFETY_MARGIN``, is below the predicted time
        of the direct kernels. Conservative: never for kernels of fewer than ``MIN_FFT_TAPS``
        taps, and a stride counts against the FFT (it computes every position, then subsamples).
        On the benchmark's ``(8, 16, 64, 64) -> 16`` layer (``bench/fft_crossover.py``) the two
        break even near 15x15, and this says yes from about 21x21 up.
    """
    r, s = weight_shape[2], weight_shape[3]
    if r * s < MIN_FFT_TAPS:
        return False
    if any(d == 0 for d in tuple(input_shape) + tuple(weight_shape[:2])):
        return False
    direct, fft = _costs(input_shape, weight_shape, geometry, backward)
    return fft * SAFETY_MARGIN < direct

