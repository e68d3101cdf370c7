"""The activation a convolution applies to its output in the same pass (``conv2d``'s
``activation``), its argument rules and its gradient.

The direct kernels apply it in their output epilogue, while the finished sums are still in
registers (``FN(activate)`` in src/conv_isa_tmpl.h); the FFT backend and the bias-only case
apply :func:`activate_` to their fresh output. Both follow torch's rules bit for bit:

* ``relu``: ``0 if y < 0 else y`` (``torch.relu``: NaN and -0.0 pass unchanged);
* ``relu6``: ``0 if y < 0 else 6 if y > 6 else y`` (``torch.nn.functional.relu6``, which is
  ``hardtanh(y, 0, 6)``: NaN and -0.0 pass unchanged);
* ``leaky_relu``: ``y if y > 0 else y * slope``, slope rounded to the dtype first.

The gradient is read off the activation's output ``o`` (:func:`masked_grad`), which is what a
fused backward has (the convolution's own output is never stored):

* ``relu``: ``0 if o <= 0 else grad`` -- torch's rule itself (``threshold_backward`` of the
  result), NaN included;
* ``relu6``: ``grad if 0 < o < 6 else 0``. torch reads the input ``y``
  (``hardtanh_backward``); o is in (0, 6) exactly when y is (o = y there; y <= 0 gives
  o <= 0, y >= 6 gives o = 6), so the results agree everywhere but at a NaN, where torch's own
  answer depends on the tensor's length (its vectorised loop gives 0, as here; its scalar tail
  passes the gradient);
* ``leaky_relu``: ``grad if o > 0 else grad * slope``. torch reads ``y > 0``; with
  ``slope >= 0``, o > 0 exactly when y > 0 (y <= 0 gives o = y * slope <= 0 or NaN, NaN gives
  NaN), so the results are the same, at 0, -0.0, infinities and NaN too. A negative slope would
  make o > 0 for y < 0, so the gradient could not be read off the output: it is rejected.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Optional

import numpy as np

from .. import _kernels
from .args import as_float_array, batched, check_same_dtype

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .args import FloatArray

ACTIVATIONS = ("relu", "relu6", "leaky_relu")
# the codes of the compiled epilogue: FC_ACT_* in src/conv_isa_api.h
_CODES = {"relu": 1, "relu6": 2, "leaky_relu": 3}


class Epilogue(NamedTuple):
    """A validated activation: its name (None: no activation), kernel code and slope."""

    name: Optional[str]
    code: int
    slope: float


NONE = Epilogue(None, 0, 0.0)


def check_activation(activation: Optional[str], negative_slope: float) -> Epilogue:
    """The :class:`Epilogue` of ``conv2d``'s ``activation`` and ``negative_slope`` arguments."""
    if activation is not None and not isinstance(activation, str):
        raise TypeError(f"activation must be None or a str, got {type(activation).__name__}")
    if activation is not None and activation not in _CODES:
        names = ", ".join(repr(a) for a in ACTIVATIONS)
        raise ValueError(f"activation must be None, {names}, got {activation!r}")
    if isinstance(negative_slope, (bool, np.bool_)) or not isinstance(
            negative_slope, (int, float, np.integer, np.floating)):
        raise TypeError(f"negative_slope must be a real number, got "
                        f"{type(negative_slope).__name__}")
    slope = float(negative_slope)
    if activation == "leaky_relu" and not slope >= 0:
        raise ValueError(
            f"negative_slope must be >= 0 for a fused leaky_relu, got {negative_slope!r}: its "
            "gradient is read off the output, whose sign is the input's only when the slope is "
            "not negative (apply a negative slope after conv2d instead)")
    if activation is None:
        return NONE
    return Epilogue(activation, _CODES[activation], slope)


def activate_(y: FloatArray, ep: Epilogue) -> FloatArray:
    """Apply the activation ``ep`` to the float array ``y`` in place (torch's rules, see the
    module's docstring) and return it."""
    if ep.name is None:
        return y
    if ep.name in ("relu", "relu6"):
        np.copyto(y, 0, where=y < 0)
        if ep.name == "relu6":
            np.copyto(y, 6, where=y > 6)
    else:
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):  # -inf * 0 is NaN
            np.multiply(y, y.dtype.type(ep.slope), out=y, where=~(y > 0))
    return y


def check_output(output: Optional[ArrayLike], grad_output4: FloatArray, unbatched: bool,
                 ep: Epilogue) -> Optional[FloatArray]:
    """The activated forward output a fused backward reads (``conv2d_backward``'s ``output``):
    required with an activation, of grad_output's shape and dtype; None without one."""
    if ep.name is None:
        if output is not None:
            raise ValueError("output is only read with an activation; pass activation= too, "
                             "or leave output as None")
        return None
    if output is None:
        raise ValueError(f"output (the activated output of conv2d) is required with "
                         f"activation={ep.name!r}")
    output = as_float_array(output, "output")
    check_same_dtype("grad_output", grad_output4, output=output)
    out4, out_unbatched = batched(output, "output")
    if out4.shape != grad_output4.shape or out_unbatched != unbatched:
        want = grad_output4.shape[1:] if unbatched else grad_output4.shape
        raise ValueError(f"output must have the shape of grad_output {want}, got {output.shape}")
    return out4


def masked_grad(grad_output4: FloatArray, output4: FloatArray, ep: Epilogue) -> FloatArray:
    """The gradient at the convolution's output: ``grad_output4`` times the derivative of the
    activation read off its output ``output4`` (see the module's docstring). One compiled pass
    over both arrays into a new one; neither input is modified."""
    go = np.ascontiguousarray(grad_output4)
    out = np.ascontiguousarray(output4)
    result = _kernels.empty(go.shape, go.dtype)
    _kernels.activation_grad(go.reshape(-1), out.reshape(-1), ep.code, ep.slope,
                             result.reshape(-1))
    return result
