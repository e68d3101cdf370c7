"""Parameter initialisation as torch does it, from a seeded NumPy generator."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import DTypeLike, NDArray

    RngLike = Union[None, int, np.integer[Any], np.random.Generator]

from .._core.args import FLOAT_DTYPES


def generator(rng: RngLike) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}"
    )


def float_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def kaiming_uniform(rng: np.random.Generator, shape: Sequence[int], fan_in: int,
                    dtype: DTypeLike) -> NDArray[np.floating[Any]]:
    """torch's default init: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return rng.uniform(-bound, bound, size=shape).astype(dtype)
