"""Per-axis reduction of a convolution or pooling geometry to an equivalent small one.

torch accepts strides, paddings, dilations and kernel sizes up to 2**63 - 1; the output is then
tiny, but the compiled kernels size their buffers by the span of padded input the windows cover
(convolution: the stride-phase "wide" buffer, about ``stride * ceil(span / stride)`` rows, and
``stride**2`` phases in grad_input; pooling: a row buffer of ``stride * OW + (kernel-1) *
dilation`` columns and a table of ``kernel`` taps). Before any kernel runs, each spatial axis is
therefore rewritten, exactly, as follows:

* a stride is irrelevant when the axis has one output, a dilation when the kernel has one tap
  along it: when larger than the problem itself, they become 1; a leading padding larger than
  the span read is clipped to it;
* if the span read is still much larger than the rows the windows actually use (huge padding
  together with a huge stride or dilation), the axis is *gathered*: row ``i*R + r`` of a new
  input is the row that tap ``r`` of window ``i`` reads (``-1`` = padding), and the kernels run
  on it with stride ``R``, dilation 1 and no padding. For pooling only the taps that fall inside
  the input are gathered, padding markers last in each window (so that ties and all-``-inf``
  windows still resolve to the first real element).

Ordinary layers never meet the second case (their span is about the input plus the output
times the kernel), so their results are bitwise unchanged.

Before that, a convolution's kernel is trimmed (:func:`live_taps`): its leading and trailing
taps along an axis that read only padding for every output position (a dilation or a padding
larger than the input, as in the atrous pyramids of segmentation networks) add only products
with zero, so the kernels run the block of the remaining taps, with the leading padding less
the dropped taps' span (where that is negative, on the input less the leading rows that no kept
tap reads); stride, dilation and output size stay as they are (``direct.kernel_plan``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, NamedTuple, Optional, Sequence, Tuple, Union

import os

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import DTypeLike, NDArray

    from .args import IndexArray, Shape


def _physical_memory() -> int:
    """Bytes of physical memory, or 2**47 (the x86-64 user address space) if unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 2**47


# An array larger than the machine's physical memory is refused as an argument error (a typo'd
# padding of 2**40 must not page the machine to death or fail deep inside an allocator).
MAX_ARRAY_BYTES = _physical_memory()


def check_size(shape: Iterable[int], itemsize: int, what: str) -> None:
    """ValueError naming ``what`` if an array of ``shape`` would not fit in physical memory."""
    count = 1
    for v in shape:
        count *= int(v)
    if count * itemsize > MAX_ARRAY_BYTES:
        raise ValueError(
            f"{what} of shape {tuple(int(v) for v in shape)} would need {count * itemsize} bytes, "
            f"more than this machine's memory ({MAX_ARRAY_BYTES} bytes); check the stride, "
            "padding, dilation and kernel size"
        )


def _ints(values: Iterable[int]) -> Union[type, DTypeLike]:
    """An int64 array when every value fits comfortably, else an object array of Python ints
    (no silent wrap-around in the position arithmetic below)."""
    big = max((abs(int(v)) for v in values), default=0)
    return np.int64 if big < 2**61 else object


class AxisPlan(NamedTuple):
    """What the kernels are given along one axis."""

    stride: int
    dilation: int
    pad: int                      # leading padding
    rows: Optional[IndexArray]    # gathered axis: source index per new row, -1 = padding
    kernel: int = 0               # pooling: the kernel size along this axis (0 for convolution)


def _positions(o: int, stride: int, pad: int, taps: int, dilation: int, n: int) -> IndexArray:
    """(o, taps) input index of tap r of window i (i*stride + r*dilation - pad), -1 outside."""
    dt = _ints((o * stride, taps * dilation, pad, n))
    pos = (np.arange(o, dtype=dt) * stride)[:, None] + (np.arange(taps, dtype=dt) * dilation)
    pos = pos - pad
    inside = (pos >= 0) & (pos < n)
    return np.where(inside, pos, -1).astype(np.int64)


def _tap_is_live(n: int, pad: int, tap: int, stride: int, dilation: int, out: int) -> bool:
    """Whether tap ``tap`` reads the input (not the padding) for at least one output position
    ``o`` in ``[0, out)``: its first position ``o * stride + tap * dilation - pad >= 0``
    lies below ``n``. Python ints: exact for any size."""
    offset = tap * dilation - pad
    first = max(0, -(offset // stride))  # ceil(-offset / stride), the first o reading row >= 0
    return first < out and first * stride + offset < n


def live_taps(n: int, pad: int, taps: int, stride: int, dilation: int, out: int
              ) -> Tuple[int, int]:
    """``(first, stop)``: along one convolution axis (input size ``n``, leading padding ``pad``,
    ``taps`` kernel taps, ``out`` outputs), the taps before ``first`` and from ``stop`` on read
    only padding for every output position; ``first == stop`` when every tap does. Taps in
    between may still be dead (a stride can step over the whole input); they are kept."""
    n, pad, taps, stride, dilation, out = (int(v) for v in (n, pad, taps, stride, dilation, out))
    if taps == 0 or out <= 0 or n <= 0:
        return 0, 0
    # no tap below lo reaches row 0 even from the last output, none above hi stays below row n
    # even from the first: start the scans there (a huge padding costs no loop)
    lo = max(0, -(((out - 1) * stride - pad) // dilation))
    hi = min(taps - 1, (n - 1 + pad) // dilation)
    first = next((t for t in range(lo, hi + 1)
                  if _tap_is_live(n, pad, t, stride, dilation, out)), None)
    if first is None:
        return 0, 0
    last = next(t for t in range(hi, first - 1, -1)
                if _tap_is_live(n, pad, t, stride, dilation, out))
    return first, last + 1


def conv_axis(n: int, pad: int, taps: int, stride: int, dilation: int, out: int) -> AxisPlan:
    """The AxisPlan of one axis of a convolution (input size n, leading padding pad, R taps)."""
    # only values beyond the problem's own size are rewritten: an ordinary layer runs exactly
    # the geometry it was given (and so keeps its bits)
    large = 2 * (n + out * taps) + 64
    stride = 1 if out == 1 and stride > large else stride
    dilation = 1 if taps == 1 and dilation > large else dilation
    span = (out - 1) * stride + (taps - 1) * dilation + 1  # padded rows the windows cover
    wide = -(-span // stride) * stride
    if wide <= large:
        return AxisPlan(stride, dilation, min(pad, span), None)
    rows = _positions(out, stride, pad, taps, dilation, n).reshape(-1)
    return AxisPlan(taps, 1, 0, rows)


def pool_windows(n: int, kernel: int, stride: int, pad: int, dilation: int, out: int
                 ) -> Tuple[IndexArray, IndexArray]:
    """Along one pooling axis: (first, count) of the in-bounds taps of every window, as int64
    arrays (tap indices; window i's taps sit at i*stride - pad + t*dilation)."""
    dt = _ints((out * stride, pad, n, kernel, dilation))
    start = np.arange(out, dtype=dt) * stride - pad
    first = np.where(start < 0, (-start + dilation - 1) // dilation, 0)
    end = np.minimum((n - start + dilation - 1) // dilation, kernel)  # one past the last inside
    count = np.maximum(end - first, 0)
    return first.astype(np.int64), count.astype(np.int64)


def _pool_cost(out: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """The kernels' cost along one pooling axis: their row buffer and tap table."""
    return stride * max(out, 16) + (kernel - 1) * dilation + kernel + pad


def _clipped_pool(n: int, kernel: int, stride: int, pad: int, dilation: int, out: int
                  ) -> Tuple[int, int]:
    """A small (kernel, pad) whose windows hold the same in-bounds taps as the given ones:
    leading taps that only ever fall in the padding of every window are dropped (the padding
    shrinks by whole dilation steps), then trailing taps that never reach the input."""
    keep = max((out - 1) * stride, 0)  # the last window still starts at or before 0
    drop = max(pad - keep, 0) // dilation
    pad2 = pad - drop * dilation
    kernel2 = min(kernel - drop, -(-(n + pad2) // dilation))
    return max(kernel2, 1), pad2


def pool_axis(n: int, kernel: int, stride: int, pad: int, dilation: int, out: int) -> AxisPlan:
    """The AxisPlan of one pooling axis: the given geometry, the same with the kernel and
    padding clipped to the input (checked to give every window the same in-bounds taps), or,
    if both stay large, a gathered axis (kernel = stride = taps per window)."""
    small = 4 * n + 4096  # never above the bound `large` below
    if _pool_cost(out, kernel, stride, pad, dilation) <= small and (
            kernel > 1 or dilation <= small):  # ordinary: no window arithmetic
        return AxisPlan(stride, dilation, pad, None, kernel)
    first, count = pool_windows(n, kernel, stride, pad, dilation, out)
    taps = int(count.max())
    large = max(4 * n + 4096, min(4 * out * taps, 2**24))
    stride = 1 if out == 1 and stride > large else stride
    dilation = 1 if kernel == 1 and dilation > large else dilation
    if _pool_cost(out, kernel, stride, pad, dilation) <= large:
        return AxisPlan(stride, dilation, pad, None, kernel)
    stride = 1 if out == 1 else stride
    kernel2, pad2 = _clipped_pool(n, kernel, stride, pad, dilation, out)
    if _pool_cost(out, kernel2, stride, pad2, dilation) <= large:
        first2, count2 = pool_windows(n, kernel2, stride, pad2, dilation, out)
        if np.array_equal(count2, count) and np.array_equal(
                first2.astype(object) * dilation - pad2, first.astype(object) * dilation - pad):
            return AxisPlan(stride, dilation, pad2, None, kernel2)
    dt = _ints((out * stride, pad, n, kernel * dilation))
    start = np.arange(out, dtype=dt) * stride - pad
    j = np.arange(taps)
    pos = (start + first.astype(dt) * dilation)[:, None] + j.astype(dt) * dilation
    rows = np.where(j < count[:, None], pos, -1).astype(np.int64).reshape(-1)
    return AxisPlan(taps, 1, 0, rows, taps)


def gather(x: NDArray[Any], rows_h: Optional[IndexArray], rows_w: Optional[IndexArray],
           fill: float) -> NDArray[Any]:
    """x[:, :, rows_h][..., rows_w] with ``fill`` where a row or column index is -1 (None: the
    axis is kept); a new C-contiguous array."""
    if rows_h is not None:
        x = np.take(x, np.maximum(rows_h, 0), axis=2)
        x[:, :, rows_h < 0] = fill
    if rows_w is not None:
        x = np.take(x, np.maximum(rows_w, 0), axis=3)
        x[:, :, :, rows_w < 0] = fill
    return np.ascontiguousarray(x)


def scatter_add(shape: Sequence[int], dtype: DTypeLike, grad: NDArray[Any],
                rows_h: Optional[IndexArray], rows_w: Optional[IndexArray]) -> NDArray[Any]:
    """The adjoint of :func:`gather`: a zero array of ``shape`` with every element of ``grad``
    added to its source position (padding dropped), in ``grad``'s C order (deterministic)."""
    out = np.zeros(shape, dtype)
    rh = np.arange(shape[2]) if rows_h is None else rows_h
    rw = np.arange(shape[3]) if rows_w is None else rows_w
    keep_h, keep_w = rh >= 0, rw >= 0
    grad = grad[:, :, keep_h][:, :, :, keep_w]
    index = (slice(None), slice(None), rh[keep_h][:, None], rw[keep_w][None, :])
    np.add.at(out, index, grad)  # type: ignore[arg-type]  # numpy's stub: no slices in an index
    return out
