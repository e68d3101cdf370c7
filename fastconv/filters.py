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

=============  ===================  ===========================================================
``zeros``      ``0 0 | a b c d | 0 0``  (``'constant'`` in ``F.pad``; any ``value``)
``reflect``    ``c b | a b c d | c b``  mirror without repeating the edge (pad < size)
``replicate``  ``a a | a b c d | d d``  repeat the edge
``circular``   ``c d | a b c d | a b``  wrap around, periodic (pad <= size)
=============  ===================  ===========================================================
"""
import math
import numbers

import numpy as np

from ._core.args import as_int
from ._core.conv import conv2d
from ._core.conv_geometry import conv_padding

__all__ = [
    "identity", "sharpen", "box_blur", "gaussian_blur", "sobel_x", "sobel_y", "laplacian",
    "emboss", "gaussian", "get_kernel", "KERNEL_NAMES", "filter2d", "pad2d", "pad2d_backward",
    "PADDING_MODES",
]


def _kernel(rows, scale=1):
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


def gaussian(sigma, size=None):
    r"""A 2-D Gaussian kernel ``exp(-(u^2 + v^2) / (2 sigma^2))`` sampled at integer offsets from
    the centre and normalised to sum 1 (so it keeps the mean of an image).

    Args:
        sigma: standard deviation in pixels, > 0.
        size: odd side length, at most :data:`GAUSSIAN_MAX_SIZE`; default
            ``2 * ceil(3 * sigma) + 1`` (covers +-3 sigma), so sigma is at most 682 without it.

    Returns:
        a ``(size, size)`` float64 array.

    Raises:
        ValueError naming ``sigma`` or ``size`` when out of range, before anything is allocated.
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


def get_kernel(name, sigma=None, size=None):
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
_NUMPY_MODE = {"zeros": "constant", "constant": "constant", "reflect": "reflect",
               "replicate": "edge", "circular": "wrap"}


def check_padding_mode(padding_mode):
    """``padding_mode`` if it is one of :data:`PADDING_MODES`, else ValueError naming it."""
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {', '.join(map(repr, PADDING_MODES))}, "
                         f"got {padding_mode!r}")
    return padding_mode


def _check_pad(x, pad, mode):
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


def _check_size(mode, size, lo, hi, axis, shape):
    if mode == "reflect" and max(lo, hi) >= size:
        raise ValueError(f"reflect padding of {max(lo, hi)} must be < the size {size} of axis "
                         f"{axis} (input shape {shape})")
    if mode == "circular" and max(lo, hi) > size:
        raise ValueError(f"circular padding of {max(lo, hi)} must be <= the size {size} of axis "
                         f"{axis} (input shape {shape})")
    if mode == "replicate" and size == 0 and lo + hi:
        raise ValueError(f"replicate padding needs a non-empty axis {axis} (input shape {shape})")


def pad2d(x, pad, mode="constant", value=0.0):
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


def pad2d_backward(grad_output, pad, mode="constant"):
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


def filter2d(image, kernel, padding_mode="reflect", mode="correlate", *, algorithm="auto"):
    r"""Filter a grayscale or colour image with a 2-D kernel; the output has the input's size.

    Args:
        image: ``(H, W)`` grayscale or ``(H, W, C)`` colour/multichannel array; float (float32 and
            float64 are computed in their precision, float16 in float32) or uint8. Each channel is
            filtered on its own, through one grouped (depthwise) :func:`fastconv.conv2d` call.
        kernel: a 2-D array ``(R, S)``, or a kernel name (:data:`KERNEL_NAMES`; ``'gaussian'``
            means ``gaussian(1.0)``). The output pixel ``(i, j)`` lines up with kernel element
            ``((R - 1) // 2, (S - 1) // 2)`` (the centre for odd sizes; as ``padding='same'``).
        padding_mode: how the image is extended beyond its border: ``'zeros'``, ``'reflect'``,
            ``'replicate'`` or ``'circular'`` (see :func:`pad2d`). Default: ``'reflect'``.
        mode: ``'correlate'`` (``sum f(x+u, y+v) g(u, v)``, as CNN layers) or ``'convolve'``
            (``sum f(x-u, y-v) g(u, v)``, the mathematical convolution: the kernel flipped by a half
            turn).
            Default: ``'correlate'``.
        algorithm: passed on to :func:`fastconv.conv2d` (``'auto'``, ``'direct'`` or ``'fft'``).

    Returns:
        an array of the shape and dtype of ``image``. For uint8 input the result is computed in
        float64, rounded to the nearest integer (halves to even) and clipped to ``[0, 255]``.
    """
    img, work = _as_image(image)
    k = _as_kernel(kernel)
    if not isinstance(mode, str) or mode not in ("correlate", "convolve"):
        raise ValueError(f"mode must be 'correlate' or 'convolve', got {mode!r}")
    check_padding_mode(padding_mode)
    if mode == "convolve":
        k = k[::-1, ::-1]
    x = img[:, :, None] if img.ndim == 2 else img
    if 0 in x.shape:
        return img.copy()
    x = np.moveaxis(x.astype(work, copy=False), 2, 0)[None]       # (1, C, H, W), a view
    y = _filter_channels(x, k.astype(work), padding_mode, algorithm)
    y = np.moveaxis(y[0], 0, 2)                                   # (H, W, C)
    if img.ndim == 2:
        y = y[:, :, 0]
    if img.dtype == np.uint8:
        return np.clip(np.rint(y), 0, _UINT8_MAX).astype(np.uint8)
    return np.ascontiguousarray(y, dtype=img.dtype)


def _as_image(image):
    """``(image, work dtype)``: the image as a native-order (H, W) or (H, W, C) array, and the
    float dtype it is filtered in."""
    img = np.asarray(image)
    if not img.dtype.isnative:  # a byte-swapped image holds the same values: compute natively
        img = img.astype(img.dtype.newbyteorder("="))
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    if img.dtype == np.uint8:
        return img, np.float64
    if img.dtype in (np.float32, np.float64):
        return img, img.dtype.type
    if img.dtype == np.float16:
        return img, np.float32
    raise TypeError(f"image must be a float or uint8 array, got dtype {img.dtype}")


def _as_kernel(kernel):
    """A kernel name or array as a non-empty 2-D array of real numbers."""
    if isinstance(kernel, str):
        kernel = get_kernel(kernel)
    k = np.asarray(kernel)
    if k.ndim != 2 or k.size == 0:
        raise ValueError(f"kernel must be a non-empty 2-D array, got shape {k.shape}")
    if not (np.issubdtype(k.dtype, np.floating) or np.issubdtype(k.dtype, np.integer)):
        raise TypeError(f"kernel must be real numbers, got dtype {k.dtype}")
    return k


def _filter_channels(x, k, padding_mode, algorithm):
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
