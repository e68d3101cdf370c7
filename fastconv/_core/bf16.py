"""bfloat16: float32 convolutions with bfloat16 products, and bfloat16 arrays.

Two ways in, one computation:

* ``precision='bf16'`` (an argument of :func:`fastconv.conv2d` and :func:`fastconv.conv2d_backward`,
  of :class:`fastconv.nn.Conv2d`, or the process-wide default :func:`set_precision`) takes
  float32 arrays, rounds the input and the weight (and grad_output, in the backward) to the
  nearest bfloat16, ties to even, multiplies them exactly and accumulates in float32, and
  returns float32. ``'ieee'``, the default, is the exact float32 computation.
* bfloat16 arrays (``ml_dtypes.bfloat16``, the NumPy dtype of JAX, ONNX and TensorFlow; imported
  only when such an array arrives) are widened to float32 (exactly), computed so, and the
  results rounded to bfloat16: the accumulation is float32, as in torch and oneDNN.

The products of two bfloat16 values are exact in float32, so the result is defined by the
rounded inputs: each output differs from the exact sum of their products by at most a float32
sum's rounding error, ``(n - 1) * 2**-24 * sum(|w * x|)`` over its ``n`` terms (bias included),
on every path, and is the same for any thread count. The paths (``fastconv._kernels``'s
``get_bf16_path``; see src/fc_bf16.h): ``avx512_bf16`` multiplies bfloat16 pairs with one
instruction (``vdpbf16ps``: Intel Cooper Lake and later, AMD Zen 4 and later), about twice the
float32 speed on the large layers; ``portable`` rounds the copies the kernels make anyway and
runs the float32 kernels, at their speed. Unlike the float32 results, the paths do not agree
bit for bit (each sums in its own order), and ``avx512_bf16`` treats inputs below ``2**-126`` in
magnitude (subnormal) as zero, as the instruction does.

The default applies to float32 convolutions on the compiled kernels; float64 arrays are always
computed in float64 (an explicit ``precision='bf16'`` on them is a ``ValueError``), and so is
``algorithm='fft'`` refused with bfloat16 products. Pooling takes bfloat16 arrays too: max
pooling is exact, average pooling rounds its float32 mean once.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, TypeVar, cast

import numpy as np

from .. import _kernels

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from .args import FloatArray

    _F = TypeVar("_F", bound=Callable[..., Any])

PRECISIONS = ("ieee", "bf16")

_lock = threading.Lock()
_precision = "ieee"


def check_precision(precision: object, name: str = "precision") -> Optional[str]:
    """``precision`` if it is None or one of :data:`PRECISIONS`, else a ValueError naming it."""
    if precision is None or (isinstance(precision, str) and precision in PRECISIONS):
        return precision
    raise ValueError(f"{name} must be 'ieee', 'bf16' or None, got {precision!r}")


def set_precision(precision: str) -> str:
    """Set the process-wide precision of float32 convolutions; returns the previous one.

    Args:
        precision: ``'ieee'`` (exact float32, the default) or ``'bf16'``. It applies to every
            call that does not pass its own ``precision``, in every thread, as
            ``torch.backends.mkldnn.conv.fp32_precision`` does in torch; float64 arrays are not
            affected.

    With ``'bf16'``, a convolution rounds its input and weight (and grad_output, backward) to
    the nearest bfloat16, ties to even, multiplies them exactly (the product of two bfloat16
    values is exact in float32) and accumulates in float32: each output lies within
    ``(n - 1) * 2**-24 * sum(|w * x|)`` of the exact sum of its ``n`` products of the rounded
    inputs (bias included), and is the same for any thread count. The paths do not agree bit
    for bit (each sums in its own order): on AVX512-BF16 (``vdpbf16ps``: AMD Zen 4 and later,
    Intel Cooper Lake) the forward and grad_input run up to twice as fast as float32; on AMX
    (Intel Sapphire Rapids and later) on tiles; both treat inputs below ``2**-126`` in
    magnitude as zero, as the instructions do. Elsewhere (and for grad_weight) the float32
    kernels run on rounded copies, at their speed. bfloat16 arrays (``ml_dtypes.bfloat16``)
    are computed the same way whatever this setting, their results rounded to bfloat16.
    """
    global _precision
    check_precision(precision)
    if precision is None:
        raise ValueError("precision must be 'ieee' or 'bf16', got None")
    with _lock:
        previous, _precision = _precision, precision
    return previous


def get_precision() -> str:
    """The process-wide precision of float32 convolutions (:func:`set_precision`)."""
    return _precision


@contextlib.contextmanager
def default_precision(precision: str) -> Iterator[None]:
    """``with fastconv.default_precision('bf16'): ...`` sets :func:`set_precision` for the block
    and restores the previous setting after it (process-wide, like the setting itself)."""
    previous = set_precision(precision)
    try:
        yield
    finally:
        set_precision(previous)


def arrays_precision() -> str:
    """The precision of a convolution of bfloat16 arrays (widened exactly to float32): their
    float32 products are already those of bfloat16, so only a path whose instructions multiply
    bfloat16 faster is worth 'bf16'; the portable one would round values that need none."""
    return "ieee" if _kernels.get_bf16_path() == "portable" else "bf16"


def uses_bf16(precision: Optional[str], dtype: np.dtype[Any]) -> bool:
    """Whether a convolution of ``dtype`` arrays asked for ``precision`` (None: the default)
    multiplies bfloat16; an explicit ``'bf16'`` on float64 arrays is a ValueError."""
    if precision is None:
        return _precision == "bf16" and dtype == np.float32
    if precision == "bf16" and dtype != np.float32:
        raise ValueError(f"precision='bf16' takes float32 or bfloat16 arrays, got {dtype}")
    return precision == "bf16"


def is_bfloat16(x: object) -> bool:
    """Whether ``x`` is an array of ``ml_dtypes.bfloat16`` (checked by name: no import; the
    kind first, as numpy builds ``dtype.name`` in Python, microseconds a call)."""
    dtype = getattr(x, "dtype", None)
    return isinstance(dtype, np.dtype) and dtype.kind == "V" and dtype.name == "bfloat16"


def _bfloat16_dtype() -> np.dtype[Any]:
    try:
        import ml_dtypes
    except ImportError as exc:  # an array of the dtype exists, so this is unlikely
        raise TypeError("bfloat16 arrays need the ml_dtypes package") from exc
    return np.dtype(ml_dtypes.bfloat16)


def widen(x: ArrayLike) -> FloatArray:
    """A float32 copy of the bfloat16 array ``x`` (exact), C-contiguous, of its shape."""
    a = np.ascontiguousarray(x)
    out = np.empty(a.shape, np.float32)
    _kernels.bf16_widen(a.reshape(-1).view(np.uint16), out.reshape(-1))
    return out


def narrow(x: FloatArray) -> NDArray[Any]:
    """The float32 array ``x`` rounded to bfloat16 (ties to even), as a bfloat16 array."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    bits = np.empty(a.shape, np.uint16)
    _kernels.bf16_narrow(a.reshape(-1), bits.reshape(-1))
    return bits.view(_bfloat16_dtype())


def round_float32(x: FloatArray) -> FloatArray:
    """A C-contiguous float32 copy of ``x`` with every value rounded to bfloat16."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(a.shape, np.float32)
    _kernels.bf16_round(a.reshape(-1), out.reshape(-1))
    return out


def widen_operands(**arrays: Any) -> Optional[Dict[str, Any]]:
    """None if no array in ``arrays`` is bfloat16; otherwise all of them widened to float32
    (None stays None), or a TypeError naming the one that is not bfloat16."""
    if not any(is_bfloat16(a) for a in arrays.values()):
        return None
    first = next(name for name, a in arrays.items() if is_bfloat16(a))
    for name, a in arrays.items():
        if a is not None and not is_bfloat16(a):
            dtype = getattr(a, "dtype", type(a).__name__)
            raise TypeError(f"{name} has dtype {dtype} but {first} has dtype bfloat16; "
                            "pass every array as bfloat16 (or none)")
    return {name: None if a is None else widen(a) for name, a in arrays.items()}


def narrow_all(*results: Optional[FloatArray]) -> Any:
    """Each result rounded to bfloat16 (None stays None), as a tuple."""
    return tuple(None if r is None else narrow(r) for r in results)


def accepts_bfloat16(*names: str) -> Callable[[_F], _F]:
    """Decorate a pooling function so that it takes bfloat16 arrays: when any of the arguments
    ``names`` is bfloat16 (then all of them that are given must be), they are widened to
    float32, the function runs, and its floating results are rounded to bfloat16 (index arrays
    pass unchanged). Other calls go straight through."""
    def decorate(func: _F) -> _F:
        params = list(inspect.signature(func).parameters)
        where = [(params.index(name), name) for name in names]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {name: args[i] if i < len(args) else kwargs.get(name) for i, name in where}
            wide = widen_operands(**given)
            if wide is None:
                return func(*args, **kwargs)
            args = tuple(wide[params[i]] if i < len(params) and params[i] in wide else a
                         for i, a in enumerate(args))
            kwargs = {k: wide.get(k, v) for k, v in kwargs.items()}
            result = func(*args, **kwargs)
            if isinstance(result, tuple):
                return tuple(_narrow_float(r) for r in result)
            return _narrow_float(result)
        return cast("_F", wrapper)
    return decorate


def _narrow_float(r: Any) -> Any:
    return narrow(r) if isinstance(r, np.ndarray) and r.dtype == np.float32 else r
