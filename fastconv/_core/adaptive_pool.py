"""adaptive_avg_pool2d / adaptive_max_pool2d and their backward passes: the argument rules of
``torch.nn.functional`` (``pool_geometry``), torch's bins, then the compiled kernels
(src/pool_adaptive.h; the max backward is max_pool2d's)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Tuple, Union, overload

import numpy as np

from .. import _kernels
from .bf16 import accepts_bfloat16
from .args import as_bool, as_float_array, batched, restore_batch
from .geometry import check_size
from .pool import max_pool2d_backward
from .pool_geometry import adaptive_output_size, check_input, check_input_shape

if TYPE_CHECKING:
    from typing import Literal

    from numpy.typing import ArrayLike

    from .args import FloatArray, IndexArray, Shape

    # an int, or a pair whose entries are ints or None (the input's size along that axis)
    OutputSize = Union[int, None, Sequence[Optional[int]]]


def _bins(size: int, out: int) -> Tuple[IndexArray, IndexArray]:
    """torch's bins along one axis of ``size`` pooled to ``out``: bin i is
    ``[floor(i * size / out), ceil((i + 1) * size / out))``; (start, end) as int64 arrays."""
    if (out + 1) * size < 2**62:
        i = np.arange(out, dtype=np.int64)
        return i * size // out, -(-(i + 1) * size // out)
    start = [i * size // out for i in range(out)]  # exact Python integers, no wrap-around
    return np.array(start, np.int64), np.array([-(-(i + 1) * size // out) for i in range(out)],
                                               np.int64)


def _bin_tables(h: int, w: int, oh: int, ow: int
                ) -> Tuple[IndexArray, IndexArray, IndexArray, IndexArray]:
    """The kernels' bin tables: row starts, row ends, column starts, column ends."""
    hs, he = _bins(h, oh)
    ws, we = _bins(w, ow)
    return hs, he, ws, we


def _adaptive_forward(input: ArrayLike, output_size: object, is_max: bool, return_indices: bool
                      ) -> Tuple[FloatArray, Optional[IndexArray]]:
    x4, unbatched = check_input(input)
    oh, ow = adaptive_output_size(x4.shape, output_size)
    shape = (x4.shape[0], x4.shape[1], oh, ow)
    check_size(shape, 16 if return_indices else x4.itemsize, "the output")
    out = _kernels.empty(shape, x4.dtype)
    indices = _kernels.empty(shape, np.int64) if return_indices else None
    if out.size:
        _kernels.adaptive_pool2d_forward(x4, out, indices, is_max,
                                         *_bin_tables(x4.shape[2], x4.shape[3], oh, ow))
    return restore_batch(out, unbatched), restore_batch(indices, unbatched)


@accepts_bfloat16("input")
def adaptive_avg_pool2d(input: ArrayLike, output_size: OutputSize) -> FloatArray:
    r"""2-D adaptive average pooling over an NCHW batch, as
    ``torch.nn.functional.adaptive_avg_pool2d``.

    Args:
        input: array of shape ``(N, C, H, W)`` or unbatched ``(C, H, W)``; float32, float64 or
            bfloat16 (``ml_dtypes``; the result is then bfloat16); any memory layout (views,
            transposes, negative strides). N may be 0; C, H and W may
            not.
        output_size: the output's ``(OH, OW)``: an int (both), or a pair whose entries are ints
            or ``None`` (the input's size along that axis); every size >= 1 (torch also takes 0,
            for an empty output). A sequence of one entry counts for both axes, as for the other
            poolings' sizes (torch's adaptive poolings refuse it).

    Returns:
        ``(N, C, OH, OW)`` (or ``(C, OH, OW)``), dtype of ``input``. Output ``(i, j)`` is the
        mean of the bin of rows ``floor(i * H / OH)`` to ``ceil((i + 1) * H / OH)`` (exclusive)
        and likewise of columns (torch's bins; neighbouring bins overlap when OH does not divide
        H, and OH may exceed H).

    Each output is its bin's sum, accumulated in row-major order, divided by the bin's height
    and then by its width: bitwise torch's CPU kernel. The global case, a 1x1 output (torch
    computes a mean there), sums the plane in 16 (float32) or 8 (float64) partial sums, element
    ``p = h * W + w`` into partial ``p mod 16`` (or 8), in order, then adds them by halving and
    divides by ``H * W``: a vectorised reduction, within rounding of torch's. Results are
    bitwise identical for any number of threads and on every SIMD path. Inputs are never
    modified.
    """
    return _adaptive_forward(input, output_size, False, False)[0]


@overload
def adaptive_max_pool2d(input: ArrayLike, output_size: OutputSize,
                        return_indices: Literal[False] = ...) -> FloatArray: ...
@overload
def adaptive_max_pool2d(input: ArrayLike, output_size: OutputSize,
                        return_indices: Literal[True]) -> Tuple[FloatArray, IndexArray]: ...
@overload
def adaptive_max_pool2d(input: ArrayLike, output_size: OutputSize, return_indices: bool = ...
                        ) -> Union[FloatArray, Tuple[FloatArray, IndexArray]]: ...
@accepts_bfloat16("input")
def adaptive_max_pool2d(input: ArrayLike, output_size: OutputSize, return_indices: bool = False
                        ) -> Union[FloatArray, Tuple[FloatArray, Optional[IndexArray]]]:
    r"""2-D adaptive max pooling over an NCHW batch, as
    ``torch.nn.functional.adaptive_max_pool2d``.

    Args:
        input: array of shape ``(N, C, H, W)`` or unbatched ``(C, H, W)``; float32, float64 or
            bfloat16 (``ml_dtypes``; the result is then bfloat16); any memory layout. N may be 0; C,
            H and W may not.
        output_size: as in :func:`adaptive_avg_pool2d`.
        return_indices: bool, also return the argmax indices (for
            :func:`adaptive_max_pool2d_backward`). Default: ``False``.

    Returns:
        ``out`` of shape ``(N, C, OH, OW)`` (or ``(C, OH, OW)``), dtype of ``input``, the maximum
        of each of torch's bins (see :func:`adaptive_avg_pool2d`); with ``return_indices``,
        ``(out, indices)`` where ``indices`` (int64, same shape) holds, for each output, the
        position ``h * W + w`` of its maximum in its own ``(n, c)`` input plane.

    As in torch: ties go to the first position in row-major order; a NaN in the bin makes the
    output NaN and the index that of the last NaN in row-major order; a bin of only -inf values
    reports its first position. Bitwise torch's CPU kernel, for any number of threads. Inputs
    are never modified.
    """
    return_indices = as_bool(return_indices, "return_indices")
    out, indices = _adaptive_forward(input, output_size, True, return_indices)
    return (out, indices) if return_indices else out


def _check_grad_output(grad_output: ArrayLike, input_shape: Sequence[int]
                       ) -> Tuple[FloatArray, FloatArray, Shape, bool]:
    """grad_output as a float array, its 4-D view, and the 4-D input shape: grad_output must be
    (N, C, OH, OW) with input_shape's N and C, OH, OW >= 1 (or (C, OH, OW) when unbatched)."""
    grad_output = as_float_array(grad_output, "grad_output")
    shape4, unbatched = check_input_shape(input_shape)
    if grad_output.ndim != len(input_shape):
        raise ValueError(
            f"grad_output must be {len(input_shape)}-D like input_shape {tuple(input_shape)}, "
            f"got shape {grad_output.shape}"
        )
    go4, _ = batched(grad_output, "grad_output")
    if go4.shape[:2] != shape4[:2]:
        raise ValueError(
            f"grad_output shape {grad_output.shape} does not match input_shape "
            f"{tuple(input_shape)} in N and C"
        )
    if min(go4.shape[2:]) < 1:
        raise ValueError(
            f"grad_output must have an output size >= 1 (OH, OW), got shape {grad_output.shape}")
    return grad_output, go4, shape4, unbatched


@accepts_bfloat16("grad_output")
def adaptive_avg_pool2d_backward(grad_output: ArrayLike, input_shape: Sequence[int]
                                 ) -> FloatArray:
    r"""Gradient of :func:`adaptive_avg_pool2d` with respect to its input.

    Args:
        grad_output: ``(N, C, OH, OW)`` (or ``(C, OH, OW)``) float32/float64 array (or
            bfloat16: the gradient is then bfloat16), the gradient
            of the loss with respect to the output of ``adaptive_avg_pool2d``; any memory
            layout. Its OH and OW are the output size.
        input_shape: the shape ``(N, C, H, W)`` (or ``(C, H, W)``) of the pooled input.

    Returns:
        ``grad_input`` of shape ``input_shape`` and dtype of ``grad_output``: every input element
        receives ``grad_output / bin height / bin width`` of each bin containing it, summed in
        output row-major order (torch's order: bitwise torch's CPU kernel); for a 1x1 output,
        ``grad_output / (H * W)`` everywhere (the backward of torch's mean). Bitwise identical
        for any number of threads.

    Raises:
        ValueError: the shapes disagree.
        TypeError: wrong dtype or input_shape.
    """
    grad_output, go4, shape4, unbatched = _check_grad_output(grad_output, input_shape)
    check_size(shape4, grad_output.itemsize, "grad_input (input_shape)")
    if not go4.size:
        return _kernels.empty(input_shape, grad_output.dtype, zero=True)
    h, w = shape4[2:]
    hs, he, ws, we = _bin_tables(h, w, go4.shape[2], go4.shape[3])
    rows = np.arange(h, dtype=np.int64)
    # the bins holding input row ih: start <= ih < end (both monotone in the output row)
    ohlo = np.searchsorted(he, rows, side="right").astype(np.int64)
    ohhi = np.searchsorted(hs, rows, side="right").astype(np.int64)
    grad_input = _kernels.empty(shape4, grad_output.dtype)
    _kernels.adaptive_avg_pool2d_backward(go4, grad_input, hs, he, ws, we, ohlo, ohhi)
    return restore_batch(grad_input, unbatched)


@accepts_bfloat16("grad_output")
def adaptive_max_pool2d_backward(grad_output: ArrayLike, indices: ArrayLike,
                                 input_shape: Sequence[int]) -> FloatArray:
    r"""Gradient of :func:`adaptive_max_pool2d` with respect to its input.

    Args:
        grad_output: ``(N, C, OH, OW)`` (or ``(C, OH, OW)``) float32/float64 array (or
            bfloat16: the gradient is then bfloat16), the gradient
            of the loss with respect to the output of ``adaptive_max_pool2d``; any memory layout.
        indices: int64 array of the same shape, as returned by
            ``adaptive_max_pool2d(..., return_indices=True)``: each entry a position
            ``h * W + w`` inside its ``(n, c)`` input plane, ``0 <= index < H * W``.
        input_shape: the shape ``(N, C, H, W)`` (or ``(C, H, W)``) of the pooled input.

    Returns:
        ``grad_input`` of shape ``input_shape`` and dtype of ``grad_output``: each gradient added
        to the input position its index names, in output row-major order (summed where bins
        overlap). Bitwise torch's CPU kernel, for any number of threads.

    Raises:
        ValueError: if an index lies outside its plane (nothing is ever written out of bounds),
            or the shapes disagree.
        TypeError: wrong dtypes.
    """
    _check_grad_output(grad_output, input_shape)
    return max_pool2d_backward(grad_output, indices, input_shape)
