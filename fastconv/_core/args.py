"""Argument checking and normalisation shared by the functional API (plain Python, no kernels).

Every public function validates here first, so the compiled kernels only ever see well-formed,
float32/float64 arrays and positive, normalised geometry. Each error names the argument.
"""
from __future__ import annotations

import numbers
import operator
from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

if TYPE_CHECKING:  # the aliases the annotations share (never evaluated at run time)
    from numpy.typing import ArrayLike, NDArray

    FloatArray = NDArray[np.floating[Any]]
    IndexArray = NDArray[np.int64]
    IntPair = Tuple[int, int]
    Shape = Tuple[int, ...]
    Grads = Tuple[Optional[FloatArray], ...]  # (grad_input, grad_weight, grad_bias)
    Needs = Tuple[bool, ...]  # (input, weight, bias): which gradients to compute
    IntOrPair = Union[int, Sequence[int]]  # an int, or a pair (h, w) (an ndarray also counts)
    Padding = Union[int, Sequence[int], str]  # also 'valid' or 'same'
    _A = TypeVar("_A", bound=Optional[NDArray[Any]])
    _D = TypeVar("_D", bound=np.generic)

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Geometry arguments are int64 in torch: larger values are rejected here, by name, instead of
# failing later in a conversion to a C integer.
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def kernel_layout(x: NDArray[Any]) -> NDArray[Any]:
    """``x`` itself if the compiled kernels can read it as it is, else a C-contiguous copy.

    The kernels take strides in elements (byte stride // itemsize) and read native-endian,
    naturally aligned scalars; NumPy also describes arrays that break this: byte-swapped dtypes,
    a data pointer or strides that are not a multiple of the itemsize (a field of a packed
    structured array, ``np.frombuffer(buf, offset=1)``). Only those are copied, into native byte
    order; every other layout (views, transposes, negative or zero strides, read-only arrays,
    memmaps) is passed through. The input is never modified.
    """
    dtype = x.dtype
    if not dtype.isnative:
        return np.array(x, dtype=dtype.newbyteorder("="), order="C")
    size = dtype.itemsize
    if x.flags.aligned and dtype.alignment == size:  # NumPy's flag checks pointer and strides
        return x
    if x.size and (x.ctypes.data % size
                       or any(st % size for n, st in zip(x.shape, x.strides) if n > 1)):
        return np.array(x, order="C")
    return x


def as_float_array(x: ArrayLike, name: str) -> NDArray[Any]:
    """Return ``x`` as an ndarray of float32/float64 that the kernels can read, or raise
    TypeError naming ``name``.

    No copy, except for the layouts the kernels cannot read (see :func:`kernel_layout`): a
    byte-swapped float array is accepted and converted to native byte order.
    """
    if type(x) is np.ndarray and x.dtype in FLOAT_DTYPES:  # the common case, quickly
        return kernel_layout(x)
    if not isinstance(x, np.ndarray):
        if isinstance(x, (list, tuple)) or np.isscalar(x):
            x = np.asarray(x)
        else:
            try:
                x = np.asarray(x)
            except Exception as exc:  # pragma: no cover - exotic array-likes
                raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}") from exc
    if x.dtype.newbyteorder("=") not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    return kernel_layout(x)


def as_index_array(x: object, name: str) -> IndexArray:
    """Return ``x`` as an int64 ndarray that the kernels can read (see :func:`kernel_layout`),
    or raise TypeError naming ``name``. A byte-swapped int64 array is accepted."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy int64 array, got {type(x).__name__}")
    if x.dtype.newbyteorder("=") != np.dtype(np.int64):
        raise TypeError(f"{name} must have dtype int64, got {x.dtype}")
    return kernel_layout(x)


def check_same_dtype(reference_name: str, reference: NDArray[Any],
                     **others: Optional[NDArray[Any]]) -> None:
    """Raise TypeError if any array in ``others`` has a dtype other than ``reference``'s."""
    for name, arr in others.items():
        if arr is not None and arr.dtype != reference.dtype:
            raise TypeError(
                f"{name} has dtype {arr.dtype} but {reference_name} has dtype {reference.dtype}; "
                "they must match"
            )


def as_int(value: object, name: str) -> int:
    """An exact integer (not bool, not float) or TypeError naming ``name``."""
    if type(value) is int:  # the common case, without the slower abstract-class check
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    return operator.index(value)


def as_int64(value: object, name: str) -> int:
    """:func:`as_int`, and ValueError naming ``name`` if the value does not fit in an int64."""
    v = as_int(value, name)
    if not INT64_MIN <= v <= INT64_MAX:
        raise ValueError(f"{name} must fit in a 64-bit signed integer (at most 2**63 - 1), "
                         f"got {value!r}")
    return v


def as_bool(value: object, name: str) -> bool:
    """A bool (Python or NumPy) or TypeError naming ``name`` (ints are not accepted, as in torch)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def pair(value: object, name: str) -> IntPair:
    """Normalise an int or a pair of ints to a tuple ``(h, w)``; TypeError/ValueError naming
    ``name``. A sequence of one int counts as that int, as in torch."""
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            value = (value[0], value[0])
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return (as_int64(value[0], name), as_int64(value[1], name))
    if isinstance(value, np.ndarray):
        return pair(value.tolist(), name)
    v = as_int64(value, name)
    return (v, v)


def positive_pair(value: object, name: str) -> IntPair:
    h, w = pair(value, name)
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return (h, w)


def nonnegative_pair(value: object, name: str) -> IntPair:
    h, w = pair(value, name)
    if h < 0 or w < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return (h, w)


def batched(x: NDArray[_D], name: str, n_spatial: int = 2) -> Tuple[NDArray[_D], bool]:
    """Return ``(x4, was_unbatched)``: a (C, H, W) input gains a batch axis of 1 (a view)."""
    ndim = n_spatial + 2
    if x.ndim == ndim - 1:
        return x[np.newaxis], True
    if x.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D (N, C, H, W) or {ndim - 1}-D (C, H, W), got shape {x.shape}"
        )
    return x, False


def restore_batch(result: _A, unbatched: bool) -> _A:
    """Undo :func:`batched` on a result computed for the 4-D view: drop the batch axis of 1
    when the caller's input had none (``None`` passes through: a gradient not asked for)."""
    return result[0] if unbatched and result is not None else result
