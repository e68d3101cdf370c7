r"""The classic image-processing kernels (sharpen, blur, edge detection, emboss) as image filters,
and padding modes.

Kernels (read-only float64 arrays; :func:`get_kernel` returns a fresh copy by name):

=================  ============================================================================
``identity``       the image unchanged
``sharpen``        ``[[0,-1,0],[-1,5,-1],[0,-1,0]]``: the image plus its negative Laplacian
``box_blur``       ``ones((3, 3)) / 9``: the local mean
``gaussian_blur``  ``[[1,2,1],[2,4,2],[1,2,1]] / 16``: a 3x3 (binomial) approximation of a Gaussian
``sobel_x``        ``[[-1,0,1],[-2,0,2],[-1,0,1]]``: horizontal derivative (edges across x)
``sobel_y``        ``[[-1,-2,-1],[0,0,0],[1,2,1]]``: vertical derivative (edges across y)
``laplacian``      ``[[0,1,0],[1,-4,1],[0,1,0]]``: second derivative, zero on any linear ramp
``emboss``         ``[[-2,-1,0],[-1,1,1],[0,1,2]]``: a diagonal derivative plus the image
``gaussian``       :func:`gaussian` ``(sigma, size=None)``, a sampled, normalised Gaussian
=================  ============================================================================

**Correlate or convolve?** The mathematical convolution
``F(x, y) = sum_{u,v} f(x - u, y - v) g(u, v)`` flips the kernel. CNN layers (and
:func:`fastconv.conv2d`, and ``torch.nn.functional.conv2d``) compute the cross-correlation
``F(x, y) = sum_{u,v} f(x + u, y + v) g(u, v)``. :func:`filter2d` does either
(``mode='correlate'``, the default, or ``mode='convolve'``); they differ only for kernels that are
not symmetric under a half-turn: ``sobel_x``, ``sobel_y`` and ``emboss`` (the others are
symmetric). With ``'correlate'``, ``sobel_x`` is positive where the image gets brighter towards
larger column indices (to the right) and ``sobel_y`` where it gets brighter towards larger row
indices (downwards); with ``'convolve'`` the signs flip.

**Padding modes** (:func:`pad2d`, the names and results of ``torch.nn.functional.pad`` and of
``torch.nn.Conv2d(padding_mode=...)``), for the row ``a b c d`` padded by 2 on each side:

=============  =======================  =======================================================
``zeros``      ``0 0 | a b c d | 0 0``  (``'constant'`` in ``F.pad``; any ``value``)
``reflect``    ``c b | a b c d | c b``  mirror without repeating the edge (pad < size)
``replicate``  ``a a | a b c d | d d``  repeat the edge
``circular``   ``c d | a b c d | a b``  wrap around, periodic (pad <= size)
=============  =======================  =======================================================
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _kernels
from ._core.args import as_int
from ._core.conv import conv2d
from ._core.conv_geometry import conv_padding
from ._core.dispatch import check_algorithm

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike, NDArray

    from ._core.args import FloatArray

    # a kernel: a 2-D array or a name; a bank: an (F, R, S) array or a sequence of kernels
    KernelLike = Union[str, ArrayLike, Sequence[Union[str, ArrayLike]]]
    Factors = Optional[Tuple[NDArray[np.float64], NDArray[np.float64]]]

__all__ = [
    "identity", "sharpen", "box_blur", "gaussian_blur", "sobel_x", "sobel_y", "laplacian",
    "emboss", "gaussian", "get_kernel", "KERNEL_NAMES", "filter2d", "pad2d", "pad2d_backward",
    "PADDING_MODES", "IMAGE_DTYPES",
]


def _kernel(rows: ArrayLike, scale: float = 1) -> NDArray[np.float64]:
    k = np.array(rows, dtype=np.float64) / scale
    k.setflags(write=False)
    return k


identity = _kernel([[0, 0, 0], [0, 1, 0], [0, 0, 0]])
sharpen = _kernel([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
box_blur = _kernel(np.ones((3, 3)), 9)
gaussian_blur = _kernel([[1, 2, 1], [2, 4, 2], [1, 2, 1]], 16)
sobel_x = _kernel([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
sobel_y = _kernel([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
laplacian = _kernel([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
emboss = _kernel([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])

_FIXED = {
    "identity": identity, "sharpen": sharpen, "box_blur": box_blur,
    "gaussian_blur": gaussian_blur, "sobel_x": sobel_x, "sobel_y": sobel_y,
    "laplacian": laplacian, "emboss": emboss,
}
#: Every name :func:`get_kernel` (and ``fastconv filter --kernel``) accepts.
KERNEL_NAMES = tuple(_FIXED) + ("gaussian",)


#: The largest side :func:`gaussian` builds (a 4097x4097 float64 kernel is 134 MB; a sigma of a
#: million pixels would ask for 36 TB).
GAUSSIAN_MAX_SIZE = 4097
# The default Gaussian reaches this many sigmas from its centre, where it has fallen to 1% of its
# peak (exp(-4.5)).
_GAUSSIAN_RADIUS_SIGMAS = 3


def gaussian(sigma: float, size: Optional[int] = None) -> NDArray[np.float64]:
    r"""A 2-D Gaussian kernel ``exp(-(u^2 + v^2) / (2 sigma^2))`` sampled at integer offsets from
    the centre and normalised to sum 1 (so it keeps the mean of an image).

    Args:
        sigma: standard deviation in pixels, > 0.
        size: odd side length, at most :data:`GAUSSIAN_MAX_SIZE`; default
            ``2 * ceil(3 * sigma) + 1`` (covers +-3 sigma), so sigma is at most 682 without it.

    Returns:
        a ``(size, size)`` float64 array.

    Raises:
        ValueError: naming ``sigma`` or ``size`` when out of range, before anything is
            allocated.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not sigma > 0 \
            or not math.isfinite(sigma):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if size is None:
        size = 2 * math.ceil(_GAUSSIAN_RADIUS_SIGMAS * sigma) + 1
        if size > GAUSSIAN_MAX_SIZE:
            raise ValueError(
                f"sigma={sigma!r} asks for a {size}x{size} kernel (+-{_GAUSSIAN_RADIUS_SIGMAS} "
                f"sigma), larger than the largest of {GAUSSIAN_MAX_SIZE}x{GAUSSIAN_MAX_SIZE}; "
                f"sigma must be at most "
                f"{(GAUSSIAN_MAX_SIZE - 1) // (2 * _GAUSSIAN_RADIUS_SIGMAS)}, or give a smaller size"
            )
    size = as_int(size, "size")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be an odd positive int, got {size}")
    if size > GAUSSIAN_MAX_SIZE:
        raise ValueError(f"size must be at most {GAUSSIAN_MAX_SIZE}, got {size}")
    u = np.arange(size) - size // 2
    g1 = np.exp(-0.5 * (u / float(sigma)) ** 2)
    k = np.outer(g1, g1)
    return k / k.sum()


def get_kernel(name: str, sigma: Optional[float] = None, size: Optional[int] = None
               ) -> NDArray[np.float64]:
    """The kernel called ``name`` (one of :data:`KERNEL_NAMES`) as a new float64 array.

    ``sigma`` (default 1.0) and ``size`` apply to ``'gaussian'`` only; ValueError for an unknown
    name (listing the names) or for ``sigma``/``size`` given with another kernel.
    """
    if name == "gaussian":
        return gaussian(1.0 if sigma is None else sigma, size)
    if name not in _FIXED:
        raise ValueError(f"unknown kernel {name!r}; the kernels are: {', '.join(KERNEL_NAMES)}")
    if sigma is not None or size is not None:
        raise ValueError(f"sigma and size apply to the 'gaussian' kernel only, not to {name!r}")
    return np.array(_FIXED[name])


# ----------------------------------------------------------------------------------------------
# padding
# ----------------------------------------------------------------------------------------------
#: The padding modes of ``torch.nn.Conv2d`` (``'constant'`` is accepted as ``F.pad``'s name for
#: ``'zeros'``).
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NUMPY_MODE: Dict[str, Any] = {"zeros": "constant", "constant": "constant",
                               "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def check_padding_mode(padding_mode: object) -> str:
    """``padding_mode`` if it is one of :data:`PADDING_MODES`, else ValueError naming it."""
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {', '.join(map(repr, PADDING_MODES))}, "
                         f"got {padding_mode!r}")
    return padding_mode


def _check_pad(x: NDArray[Any], pad: object, mode: object
               ) -> Tuple[Tuple[int, ...], List[Tuple[int, int, int]]]:
    if not isinstance(mode, str) or mode not in _NUMPY_MODE:
        raise ValueError(f"mode must be one of {', '.join(map(repr, PADDING_MODES))} "
                         f"(or 'constant'), got {mode!r}")
    if not isinstance(pad, (tuple, list)) or len(pad) not in (2, 4):
        raise ValueError("pad must be a tuple (left, right) or (left, right, top, bottom), "
                         f"got {pad!r}")
    pad = tuple(as_int(p, "pad") for p in pad)
    if min(pad) < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if x.ndim < len(pad) // 2:
        raise ValueError(f"a {len(pad)}-element pad needs at least {len(pad) // 2} dimensions, "
                         f"got an array of shape {x.shape}")
    # per padded axis, last axis first (torch's order): ((axis, lo, hi), ...)
    axes = [(x.ndim - 1 - i, pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)]
    return pad, axes


def _check_size(mode: str, size: int, lo: int, hi: int, axis: int, shape: object) -> None:
    if mode == "reflect" and max(lo, hi) >= size:
        raise ValueError(f"reflect padding of {max(lo, hi)} must be < the size {size} of axis "
                         f"{axis} (input shape {shape})")
    if mode == "circular" and max(lo, hi) > size:
        raise ValueError(f"circular padding of {max(lo, hi)} must be <= the size {size} of axis "
                         f"{axis} (input shape {shape})")
    if mode == "replicate" and size == 0 and lo + hi:
        raise ValueError(f"replicate padding needs a non-empty axis {axis} (input shape {shape})")


def pad2d(x: ArrayLike, pad: Sequence[int], mode: str = "constant", value: float = 0.0
          ) -> NDArray[Any]:
    r"""Pad the last two axes of ``x`` as ``torch.nn.functional.pad(x, pad, mode, value)``.

    Args:
        x: array, usually ``(N, C, H, W)`` or ``(C, H, W)`` (any dtype; the last ``len(pad)//2``
            axes are padded).
        pad: ``(left, right)`` (the last axis only) or ``(left, right, top, bottom)``, ints >= 0:
            torch's order, last axis first.
        mode: ``'constant'``/``'zeros'``, ``'reflect'`` (mirror without repeating the edge,
            pad < size), ``'replicate'`` (repeat the edge) or ``'circular'`` (wrap around,
            pad <= size). Default: ``'constant'``.
        value: the fill value of ``'constant'``/``'zeros'``. Default: 0.

    Returns:
        a new C-contiguous array of the dtype of ``x``, each padded axis longer by its two pads.
    """
    x = np.asarray(x)
    pad, axes = _check_pad(x, pad, mode)
    widths = [(0, 0)] * x.ndim
    for axis, lo, hi in axes:
        _check_size(mode, x.shape[axis], lo, hi, axis, x.shape)
        widths[axis] = (lo, hi)
    if _NUMPY_MODE[mode] == "constant":
        return np.pad(x, widths, mode="constant", constant_values=value)
    return np.pad(x, widths, mode=_NUMPY_MODE[mode])


def pad2d_backward(grad_output: ArrayLike, pad: Sequence[int], mode: str = "constant"
                   ) -> NDArray[Any]:
    r"""The gradient of :func:`pad2d` with respect to its input: each padded position's gradient
    is added back onto the input element it copies (dropped for the constant padding).

    Args:
        grad_output: gradient with respect to the padded array.
        pad, mode: as given to :func:`pad2d`.

    Returns:
        the gradient with respect to ``x`` (shape of ``x``, dtype of ``grad_output``), as
        ``torch.autograd`` gives for ``F.pad``.
    """
    g = np.asarray(grad_output)
    pad, axes = _check_pad(g, pad, mode)
    for axis, lo, hi in axes:
        n = g.shape[axis] - lo - hi
        if n < 0:
            raise ValueError(f"grad_output axis {axis} of size {g.shape[axis]} is smaller than "
                             f"its padding {lo} + {hi}")
        _check_size(mode, n, lo, hi, axis, "grad_output " + str(g.shape))
        g = np.moveaxis(g, axis, -1)
        res = np.array(g[..., lo:lo + n])
        left, right = g[..., :lo], g[..., lo + n:]
        if mode == "reflect":      # padded j < lo copies input lo - j; lo + n + j copies n - 2 - j
            res[..., np.arange(lo, 0, -1)] += left
            res[..., np.arange(n - 2, n - 2 - hi, -1)] += right
        elif mode == "replicate":  # every left pad copies input 0, every right pad input n - 1
            if lo:
                res[..., 0] += left.sum(axis=-1)
            if hi:
                res[..., n - 1] += right.sum(axis=-1)
        elif mode == "circular":   # padded j < lo copies input n - lo + j; lo + n + j copies j
            res[..., n - lo:] += left
            res[..., :hi] += right
        g = np.moveaxis(res, -1, axis)
    return np.ascontiguousarray(g)


# ----------------------------------------------------------------------------------------------
# filter2d
# ----------------------------------------------------------------------------------------------
_UINT8_MAX = int(np.iinfo(np.uint8).max)  # uint8 results are clipped to [0, 255]
#: The image dtypes :func:`filter2d` takes (any byte order).
IMAGE_DTYPES = (np.uint8, np.uint16, np.float16, np.float32, np.float64)
_OUTPUT_DTYPES = IMAGE_DTYPES
_INTEGER = (np.uint8, np.uint16)
# A kernel is run as two 1-D passes when it equals the outer product of its factors to within this
# many units in the last place (of the finer of its own dtype and the work dtype), relative to its
# largest element: the two passes then differ from the direct sum by rounding only.
_SEPARABLE_ULPS = 16


def filter2d(image: ArrayLike, kernel: KernelLike, padding_mode: str = "reflect",
             mode: str = "correlate", *, algorithm: str = "auto",
             separable: Optional[bool] = None,
             output_dtype: Union[DTypeLike, str, None] = None) -> NDArray[Any]:
    r"""Filter a grayscale or colour image with a 2-D kernel, or with a bank of kernels in one
    pass; each output has the input's size.

    Args:
        image: ``(H, W)`` grayscale or ``(H, W, C)`` channels-last colour/multichannel array of
            uint8, uint16, float16, float32 or float64 (any strides and byte order). Each channel
            is filtered on its own. Integer images are converted to floats a row at a time while
            they are filtered: no float copy of the image is made.
        kernel: a 2-D array ``(R, S)``, a kernel name (:data:`KERNEL_NAMES`; ``'gaussian'`` means
            ``gaussian(1.0)``), or a bank of ``F`` kernels: a 3-D array ``(F, R, S)`` or a
            sequence of names or 2-D arrays of one shape. The output pixel ``(i, j)`` lines up with
            kernel element ``((R - 1) // 2, (S - 1) // 2)`` (the centre for odd sizes; as
            ``padding='same'``). Kernel elements equal to zero are skipped (an ``inf`` or ``nan``
            pixel does not spread through them).
        padding_mode: how the image is extended beyond its border: ``'zeros'``, ``'reflect'``
            (``d c b | a b c d``'s mirror without repeating the edge: numpy's ``'reflect'``,
            OpenCV's ``BORDER_REFLECT_101``, its default), ``'replicate'`` or ``'circular'`` (see
            :func:`pad2d`). Only the border rows and columns are extended, as they are read.
            Default: ``'reflect'``.
        mode: ``'correlate'`` (``sum f(x+u, y+v) g(u, v)``, as CNN layers, ``cv2.filter2D`` and
            ``scipy.ndimage.correlate``) or ``'convolve'`` (``sum f(x-u, y-v) g(u, v)``, the
            mathematical convolution: the kernel flipped by a half turn). Default: ``'correlate'``.
        algorithm: ``'auto'`` or ``'direct'``: the filter engine (separable kernels as two 1-D
            passes, the others as a direct 2-D sum); ``'fft'``: :func:`fastconv.conv2d`'s FFT,
            only on request, as it can be less exact (see :mod:`fastconv.fft`). Default:
            ``'auto'``.
        separable: ``None`` (default): a kernel runs as a vertical then a horizontal 1-D pass when
            it is of rank 1 (to within 16 units in the last place of the finer of its dtype and
            the work dtype) and that takes fewer multiply-adds; ``True``: every kernel must be of
            rank 1 (ValueError otherwise) and runs separable; ``False``: always the direct sum.
        output_dtype: the dtype of the result: ``None`` or ``'input'`` (default): the image's;
            ``'float'``: float64 for a float64 image, else float32; or one of uint8, uint16,
            float16, float32, float64. Integer results are rounded to the nearest integer (halves
            to even) and saturated to the dtype's range (as OpenCV's), ``nan`` giving 0.

    The work dtype (of every sum) is float64 when the image or the output is float64, float32
    otherwise (uint8, uint16 and float16 images included, as OpenCV's float kernels). A box
    kernel (every element the same weight, fewer than 2^21 of them) on a uint8, uint16, float16
    or float32 image is computed from exact window sums, at a cost that hardly grows with its
    size: each output is the weight (in the work dtype) times the window's exact sum, computed
    in the work dtype where the sums are whole numbers it holds (one rounding), else in float64
    and then rounded to the output dtype. For float pixels the exact sum is first rounded to a
    float64 (it may not fit one); a
    window with a ``nan``, or with both infinities, gives ``nan``, with one infinity that
    infinity. The sums are kept in float64 where every partial sum is exact there, else as
    integers, chosen per block of rows and columns; every way gives the same bits, so no
    rounding error is carried from one window to the next. Float64 images run the taps one by
    one. A box kernel in a bank runs on its own, so it gives the same result as alone. Results
    are bitwise the same for any thread count.

    Returns:
        an ``(H, W)`` or ``(H, W, C)`` array (the image's shape) for one kernel, ``(F, H, W)`` or
        ``(F, H, W, C)`` for a bank, of dtype ``output_dtype``.
    """
    img = _as_image(image)
    args = (padding_mode, mode, algorithm, separable, output_dtype)
    key = _plan_key(img.dtype, kernel, args)
    plan = _PLANS.get(key) if key is not None else None
    if plan is None:
        plan = _filter_plan(img.dtype, kernel, padding_mode, mode, algorithm=algorithm,
                            separable=separable, output_dtype=output_dtype)
        if key is not None:
            if len(_PLANS) >= _PLANS_MAX:
                _PLANS.clear()
            _PLANS[key] = plan
    return _apply_plan(plan, img)


# Plans of recent calls, by _plan_key: a loop filtering many images with one kernel would
# otherwise check its arguments, factor its kernel and build the engine's arrays on every call.
_PLANS: Dict[Tuple[Any, ...], "_FilterPlan"] = {}
_PLANS_MAX = 128
# Kernels of up to this many elements are keyed by their bytes; larger ones are planned anew.
_PLAN_KEY_MAX_SIZE = 64 * 64


def _plan_key(image_dtype: np.dtype[Any], kernel: Any, args: Tuple[Any, ...]
              ) -> Optional[Tuple[Any, ...]]:
    """The key of the plan :func:`filter2d` makes for these arguments, or None (not cached): a
    kernel name, a list or tuple of names, or a small array by its content (never by its
    identity: arrays change), every other argument with its type (``True`` and ``1`` are not the
    same argument)."""
    if isinstance(kernel, str):
        kkey: Tuple[Any, ...] = ("name", kernel)
    elif type(kernel) in (list, tuple) and all(type(k) is str for k in kernel):
        kkey = ("names", tuple(kernel))
    elif type(kernel) is np.ndarray and kernel.size <= _PLAN_KEY_MAX_SIZE:
        kkey = ("array", kernel.tobytes(), kernel.shape, kernel.dtype)
    else:
        return None
    # (dtypes compare by kind, size and byte order; a small image's call is mostly this key)
    key = (image_dtype, kkey, args, tuple(map(type, args)))
    try:
        hash(key)
    except TypeError:  # an unhashable argument: filter2d's checks say what is wrong with it
        return None
    return key


class _FilterPlan(NamedTuple):
    """What :func:`filter2d` does with every image of one dtype, decided once (by
    :func:`_filter_plan`): the kernels as correlations, which of them run separable, the dtypes."""
    bank: bool              # kernel was a bank: the result has a leading axis F
    kernels: NDArray[Any]   # (F, R, S), as correlations ('convolve' flipped them)
    factors: List[Factors]  # per kernel: its separable factors, or None (direct sum)
    padding_mode: str
    algorithm: str
    out_dtype: type
    work: type              # np.float32 or np.float64
    # the engine's kernel arrays, in the work dtype: k2 (F, R, S), kv (F, R) and kx (F, S)
    # (the separable factors, zero for the others) and sep (F,) int32 (1: separable)
    engine: Tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]
    box: Tuple[int, ...]    # per kernel: the engine's box mode (_box_mode) for this image dtype
    runs: Tuple[Tuple[int, int], ...]  # the kernels [a, b) the engine runs together (_runs)


def _filter_plan(image_dtype: DTypeLike, kernel: KernelLike, padding_mode: str = "reflect",
                mode: str = "correlate", *, algorithm: str = "auto",
                separable: Optional[bool] = None,
                output_dtype: Union[DTypeLike, str, None] = None) -> _FilterPlan:
    """Every argument of :func:`filter2d` but the image checked, for images of ``image_dtype``
    (one of IMAGE_DTYPES, native order): the plan :func:`_apply_plan` runs."""
    bank, ks = _as_kernels(kernel)
    if not isinstance(mode, str) or mode not in ("correlate", "convolve"):
        raise ValueError(f"mode must be 'correlate' or 'convolve', got {mode!r}")
    check_padding_mode(padding_mode)
    check_algorithm(algorithm)
    if separable is not None and not isinstance(separable, bool):
        raise TypeError(f"separable must be None, True or False, got {separable!r}")
    out_dtype = _output_dtype(output_dtype, np.dtype(image_dtype))
    work = np.float64 if np.float64 in (np.dtype(image_dtype).type, out_dtype) else np.float32
    if mode == "convolve":
        ks = ks[:, ::-1, ::-1]
    ks = np.array(ks)  # a copy: plans are kept, and the caller may change its kernel
    ks.setflags(write=False)
    factors = [_separable_factors(k, work, separable, i if bank else None)
               for i, k in enumerate(ks)]
    engine = _engine_arrays(ks, factors, work)
    engine_dtype = np.dtype(np.float32 if np.dtype(image_dtype) == np.float16 else image_dtype)
    box = tuple(_box_mode(engine_dtype, engine[0][i:i + 1]) for i in range(len(ks)))
    return _FilterPlan(bank, ks, factors, padding_mode, algorithm, out_dtype, work, engine, box,
                       tuple(_runs(box)))


def _engine_arrays(ks: NDArray[Any], factors: List[Factors], work: Any
                   ) -> Tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
    f, r, s = ks.shape
    k2: NDArray[Any] = np.ascontiguousarray(ks, dtype=work)
    kv: NDArray[Any] = np.zeros((f, r), work)
    kx: NDArray[Any] = np.zeros((f, s), work)
    sep = np.zeros(f, np.int32)
    for i, fac in enumerate(factors):
        if fac is not None:
            kv[i], kx[i], sep[i] = fac[0], fac[1], 1
    for a in (k2, kv, kx, sep):
        a.setflags(write=False)
    return k2, kv, kx, sep


def _apply_plan(plan: _FilterPlan, img: NDArray[Any],
               window: Optional[Tuple[int, int, int, int]] = None) -> NDArray[Any]:
    """``plan`` on the image ``img`` (as :func:`_as_image` returns it, of the plan's dtype): the
    outputs of :func:`filter2d`, or only those of ``window = (row, column, rows, columns)`` (a
    chunk of a larger image given with the halo around it: the outputs of its own pixels, as
    they are in the whole image's result, and no other output computed; the direct engine only).
    """
    x = img[:, :, None] if img.ndim == 2 else img
    f, (h, w) = len(plan.kernels), x.shape[:2]
    oy, ox, oh, ow = window if window is not None else (0, 0, h, w)
    if not (0 <= oy and 0 <= ox and 0 <= oh and 0 <= ow and oy + oh <= h and ox + ow <= w):
        raise ValueError(f"window {window} is not inside the {h}x{w} image")
    if 0 in x.shape or 0 in (oh, ow):
        y: NDArray[Any] = np.empty((f, oh, ow) + x.shape[2:], plan.out_dtype)
    else:
        if max(plan.kernels.shape[1:]) > min(h, w):  # (a kernel no larger than the image fits)
            _check_fits(x.shape, plan.kernels.shape[1:], plan.padding_mode)
        if plan.algorithm == "fft":
            if window is not None:
                raise ValueError("a window needs the direct engine (algorithm 'auto' or 'direct')")
            y = np.stack([_fft_filter(x, k, plan.padding_mode, plan.work) for k in plan.kernels])
            y = _cast_output(y, plan.out_dtype)
        else:
            y = _run_bank(x, plan, (oy, ox, oh, ow))
    if plan.bank:
        return y[..., 0] if img.ndim == 2 else y
    return y[0, ..., 0] if img.ndim == 2 else y[0]


def _as_image(image: ArrayLike) -> NDArray[Any]:
    """The image as a native-order (H, W) or (H, W, C) array of one of IMAGE_DTYPES."""
    img = np.asarray(image)
    if not img.dtype.isnative:  # a byte-swapped image holds the same values: compute natively
        img = img.astype(img.dtype.newbyteorder("="))
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    if img.dtype.type not in IMAGE_DTYPES:
        raise TypeError("image must be a uint8, uint16, float16, float32 or float64 array, got "
                        f"dtype {img.dtype}")
    return img


def _as_kernel(kernel: Union[str, ArrayLike]) -> NDArray[Any]:
    """A kernel name or array as a non-empty 2-D array of real numbers."""
    if isinstance(kernel, str):
        kernel = get_kernel(kernel)
    k = np.asarray(kernel)
    if k.ndim != 2 or k.size == 0:
        raise ValueError(f"kernel must be a non-empty 2-D array, got shape {k.shape}")
    _check_real(k)
    return k


def _check_real(k: NDArray[Any]) -> None:
    if not (np.issubdtype(k.dtype, np.floating) or np.issubdtype(k.dtype, np.integer)):
        raise TypeError(f"kernel must be real numbers, got dtype {k.dtype}")


def _as_kernels(kernel: KernelLike) -> Tuple[bool, NDArray[Any]]:
    """``(bank, kernels)``: whether ``kernel`` is a bank, and its kernels as an (F, R, S) array."""
    if isinstance(kernel, str):
        return False, _as_kernel(kernel)[None]
    if isinstance(kernel, (list, tuple)) and kernel and all(
            isinstance(k, str) or np.ndim(k) == 2 for k in kernel):
        ks = [_as_kernel(k) for k in kernel]
        shapes = {k.shape for k in ks}
        if len(shapes) > 1:
            raise ValueError(f"the kernels of a bank must have one shape, got {sorted(shapes)}")
        return True, np.stack(ks)
    k = np.asarray(kernel)
    if k.ndim == 3:
        if k.size == 0:
            raise ValueError(f"kernel must be a non-empty 2-D array or an (F, R, S) bank of them, "
                             f"got shape {k.shape}")
        _check_real(k)
        return True, k
    if k.ndim != 2:
        raise ValueError(f"kernel must be a non-empty 2-D array or an (F, R, S) bank of them, got "
                         f"shape {k.shape}")
    return False, _as_kernel(k)[None]


def _output_dtype(output_dtype: Union[DTypeLike, str, None], image_dtype: np.dtype[Any]
                  ) -> type:
    if output_dtype is None or (isinstance(output_dtype, str) and output_dtype == "input"):
        return image_dtype.type
    if isinstance(output_dtype, str) and output_dtype == "float":
        return np.float64 if image_dtype == np.float64 else np.float32
    try:
        dt = np.dtype(output_dtype).type
    except TypeError:
        dt = None
    if dt not in _OUTPUT_DTYPES:
        raise ValueError("output_dtype must be None, 'input', 'float' or one of uint8, uint16, "
                         f"float16, float32, float64, got {output_dtype!r}")
    return dt


def _check_fits(shape: Sequence[int], kshape: Sequence[int], padding_mode: str) -> None:
    """ValueError when the padding ``padding_mode`` needs for this kernel exceeds its limits."""
    (h, w), (r, s) = shape[:2], kshape
    top, left = (r - 1) // 2, (s - 1) // 2
    try:
        _check_size(padding_mode, h, top, r - 1 - top, 0, shape[:2])
        _check_size(padding_mode, w, left, s - 1 - left, 1, shape[:2])
    except ValueError as exc:
        raise ValueError(f"a {r}x{s} kernel with padding_mode={padding_mode!r} does not fit "
                         f"a {h}x{w} image: {exc}") from None


def _separable_factors(k: NDArray[Any], work: Any, separable: Optional[bool],
                       index: Optional[int]) -> Factors:
    """``(kv, kx)`` with ``k == outer(kv, kx)`` to rounding when ``k`` is to run separable, else
    None; ValueError naming ``separable`` when it is True and ``k`` is not of rank 1."""
    if separable is False:
        return None
    factors = _rank1(k, work)
    if separable is True:
        if factors is None:
            which = "the kernel" if index is None else f"kernel {index} of the bank"
            raise ValueError(f"separable=True, but {which} is not of rank 1 (an outer product of "
                             f"a column and a row, to rounding): pass separable=None or False")
        return factors
    if factors is None or min(k.shape) == 1:
        return None
    kv, kx = factors
    # two passes cost a store and a load per element more than one: only when they save more
    return factors if np.count_nonzero(kv) + np.count_nonzero(kx) + 2 < np.count_nonzero(k) \
        else None


def _rank1(k: NDArray[Any], work: Any) -> Factors:
    """The factors of :func:`_rank1_of` (cached: a loop filtering many small images with one
    kernel would otherwise spend most of its time on the SVD)."""
    k = np.asarray(k)
    if k.size > _RANK1_CACHE_MAX_SIZE:
        return _rank1_of(k, work)
    key = (k.tobytes(), k.shape, k.dtype.str, np.dtype(work).str)
    return _rank1_cached(key)


_RANK1_CACHE_MAX_SIZE = 64 * 64


@functools.lru_cache(maxsize=128)
def _rank1_cached(key: Tuple[bytes, Tuple[int, ...], str, str]) -> Factors:
    data, shape, dtype, work = key
    return _rank1_of(np.frombuffer(data, dtype=dtype).reshape(shape), np.dtype(work).type)


def _rank1_of(k: NDArray[Any], work: Any) -> Factors:
    """``(kv, kx)`` (float64) with ``outer(kv, kx)`` equal to ``k`` within _SEPARABLE_ULPS units
    in the last place, or None. The factors are a row and a column of ``k`` through its largest
    element (scaled by it): exact for integer kernels (Sobel: ``[1, 2, 1]`` and ``[-1, 0, 1]``
    up to a power of two) where a singular vector would not be."""
    k64 = k.astype(np.float64)
    kmax = np.abs(k64).max() if k64.size else 0.0
    if not (np.isfinite(k64).all() and kmax > 0):
        return None
    kdt = k.dtype if np.issubdtype(k.dtype, np.floating) else np.float64
    eps = min(np.finfo(kdt).eps, np.finfo(work).eps) if kdt != np.float16 else np.finfo(work).eps
    tol = _SEPARABLE_ULPS * eps
    s = np.linalg.svd(k64, compute_uv=False)
    if len(s) > 1 and s[1] > tol * s[0]:
        return None
    r, c = np.unravel_index(np.argmax(np.abs(k64)), k64.shape)
    kx = k64[r, :].copy()
    kv = k64[:, c] / k64[r, c]
    if np.abs(np.outer(kv, kx) - k64).max() > tol * kmax:
        return None
    kv.setflags(write=False)
    kx.setflags(write=False)
    return kv, kx


# The engine reads an image of the work dtype in place (False: converts every row, as for the
# other dtypes; the same results, for the tests and benchmarks).
_READ_IN_PLACE = True
_PAD_CODE = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}


def _run_bank(x: NDArray[Any], plan: _FilterPlan, window: Tuple[int, int, int, int]
              ) -> NDArray[Any]:
    """The filter engine on the (H, W, C) image ``x``: the outputs of
    ``window = (row, column, rows, columns)``, (F, rows, columns, C) of the plan's dtype."""
    ks, out_dtype = plan.kernels, plan.out_dtype
    oy, ox, oh, ow = window
    if x.dtype.type is np.float16:
        x = x.astype(np.float32)
    itemsize = x.itemsize
    c = x.shape[2]
    if (x.strides[1] != c * itemsize or (c > 1 and x.strides[2] != itemsize)
            or x.strides[0] % itemsize):
        x = np.ascontiguousarray(x)
    f, r, s = ks.shape
    k2, kv, kx, sep = plan.engine
    engine_out = np.float32 if out_dtype == np.float16 else out_dtype
    y = _kernels.empty((f, oh, ow, c), engine_out)
    pad = _PAD_CODE[plan.padding_mode]
    # box kernels run alone (a box filter takes one kernel), the others in runs of a bank
    for a, b in plan.runs:
        if b - a < f:
            y_, k2_, kv_, kx_, sep_ = y[a:b], k2[a:b], kv[a:b], kx[a:b], sep[a:b]
        else:  # (slicing costs a small image's call more than its filtering)
            y_, k2_, kv_, kx_, sep_ = y, k2, kv, kx, sep
        _kernels.filter_bank(x, y_, k2_, kv_, kx_, sep_, pad, (r - 1) // 2, (s - 1) // 2,
                             _READ_IN_PLACE, oy, ox, plan.box[a])
    return y.astype(out_dtype) if engine_out != out_dtype else y


def _runs(box: Tuple[int, ...]) -> List[Tuple[int, int]]:
    """The kernels [a, b) of a plan the engine runs together: each box kernel (box[i] != 0)
    alone, the others in runs of consecutive ones."""
    runs: List[Tuple[int, int]] = []
    for i, mode in enumerate(box):
        if mode or not runs or box[runs[-1][0]]:
            runs.append((i, i + 1))
        else:
            runs[-1] = (runs[-1][0], i + 1)
    return runs


def _box_mode(image_dtype: np.dtype[Any], k2: NDArray[Any]) -> int:
    """How the engine runs ``k2`` (one kernel, in the work dtype) on an image of ``image_dtype``:
    as a box filter of exact window sums where ``k2`` is one kernel whose taps are all the same
    finite non-zero weight. Its cost then hardly grows with the kernel, and it rounds the
    weight times the exact sum (in the work dtype, or in float64 and then to the output dtype)
    instead of once per tap.

    ``_BOX_WORK``: sums in the work dtype, for an integer image whose every window sum (at most
    R * S times the largest pixel) is a whole number the work dtype holds exactly;
    ``_BOX_F64``: sums in float64, for the other integer images (every window sum below 2^53)
    and for float32 and float16 images (the engine keeps sums that doubles cannot hold exactly as
    integers); ``_BOX_NONE`` for the others (float64 images among them): the taps one by one."""
    if k2.shape[0] != 1:
        return _BOX_NONE
    w = k2.flat[0]
    if not (np.isfinite(w) and w != 0 and (k2 == w).all()):
        return _BOX_NONE
    if image_dtype.type in _INTEGER:
        largest = k2.size * int(np.iinfo(image_dtype).max)
        if largest < 2 ** (np.finfo(k2.dtype).nmant + 1):
            return _BOX_WORK
        return _BOX_F64 if largest < 2 ** 53 else _BOX_NONE
    if image_dtype.type in (np.float16, np.float32) and k2.size < 2 ** 21:
        return _BOX_F64
    return _BOX_NONE


# The engine's box modes (filter_engine.h's FC_FBOX_*).
_BOX_NONE, _BOX_WORK, _BOX_F64 = 0, 1, 2


def _cast_output(y: NDArray[Any], out_dtype: type) -> NDArray[Any]:
    if out_dtype in _INTEGER:
        top = np.iinfo(out_dtype).max
        return np.clip(np.nan_to_num(np.rint(y), nan=0.0), 0, top).astype(out_dtype)
    return y.astype(out_dtype)


def _fft_filter(x: NDArray[Any], k: NDArray[Any], padding_mode: str, work: Any
                ) -> NDArray[Any]:
    """The (H, W, C) image filtered by one kernel through conv2d's FFT (algorithm='fft')."""
    xc = np.moveaxis(x.astype(work, copy=False), 2, 0)[None]      # (1, C, H, W), a view
    y = _filter_channels(xc, k.astype(work), padding_mode, "fft")
    return np.moveaxis(y[0], 0, 2)                                 # (H, W, C)


def _filter_channels(x: NDArray[Any], k: NDArray[Any], padding_mode: str, algorithm: str
                     ) -> FloatArray:
    """Correlate every channel of the (1, C, H, W) ``x`` with the 2-D ``k``: one depthwise
    conv2d with the padding of ``padding='same'``, extended as ``padding_mode`` says."""
    c, (r, s) = x.shape[1], k.shape
    weight = np.ascontiguousarray(np.broadcast_to(k, (c, 1, r, s)))
    if padding_mode == "zeros":
        return conv2d(x, weight, padding="same", groups=c, algorithm=algorithm)
    top, bottom, left, right = conv_padding("same", (1, 1), (1, 1), (r, s))
    try:
        xp = pad2d(x, (left, right, top, bottom), padding_mode)
    except ValueError as exc:
        h, w = x.shape[2:]
        raise ValueError(f"a {r}x{s} kernel with padding_mode={padding_mode!r} does not fit "
                         f"a {h}x{w} image: {exc}") from None
    return conv2d(xp, weight, groups=c, algorithm=algorithm)
