"""The one place that chooses how a convolution is computed.

Each backend module offers the same three functions, on validated 4-D arrays and a
:class:`~fastconv._core.conv_geometry.ConvGeometry`:

* ``is_usable_for(input_shape, weight_shape, geometry)``: whether it computes this problem well;
* ``forward(x4, weight, bias, geometry, epilogue)``: the ``(N, K, OH, OW)`` output, activated
  by ``epilogue`` (``epilogue.NONE``: no activation);
* ``backward(grad_output4, x4, weight, geometry, needs)``: ``(grad_input, grad_weight,
  grad_bias)``, None where ``needs`` says so.

``'direct'`` is the compiled kernels (``direct``), ``'fft'`` the convolution theorem (``fft``).
``'auto'`` means ``'direct'``: the FFT can be less exact on the data it is given (see
:mod:`fastconv.fft`), so it runs only when asked for, and even then hands a problem it is not
usable for (a padding far beyond what the windows read) to the direct kernels, which give the
same result. The backends share the argument rules and the geometry, never each other's code.

A convolution with bfloat16 products (``bf16=True``: see :mod:`fastconv._core.bf16`) runs on the
direct kernels: the forward and grad_input convert as they pack (or round the copies they
make), grad_weight is that of float32 on copies of its operands rounded to bfloat16. The FFT
computes no such thing and refuses it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from . import bf16 as _bf16
from . import direct, fft
from .epilogue import NONE

if TYPE_CHECKING:
    from .args import FloatArray, Grads, Needs
    from .conv_geometry import ConvGeometry
    from .epilogue import Epilogue

    from typing import Protocol

    class Backend(Protocol):
        """What a backend module offers (see above)."""

        def is_usable_for(self, input_shape: Sequence[int], weight_shape: Sequence[int],
                          geometry: ConvGeometry) -> bool: ...

        def forward(self, x4: FloatArray, weight: FloatArray, bias: Optional[FloatArray],
                    geometry: ConvGeometry, epilogue: Epilogue = ...) -> FloatArray: ...

        def backward(self, grad_output4: FloatArray, x4: FloatArray, weight: FloatArray,
                     geometry: ConvGeometry, needs: Needs) -> Grads: ...

ALGORITHMS = ("auto", "direct", "fft")


def check_algorithm(algorithm: object) -> None:
    if not (isinstance(algorithm, str) and algorithm in ALGORITHMS):
        raise ValueError(f"algorithm must be 'auto', 'direct' or 'fft', got {algorithm!r}")


def backend_for(algorithm: str, input_shape: Sequence[int], weight_shape: Sequence[int],
                geometry: ConvGeometry) -> Backend:
    """The backend module that computes this convolution under ``algorithm``."""
    if algorithm == "fft" and fft.is_usable_for(input_shape, weight_shape, geometry):
        return fft
    return direct


def _check_bf16_algorithm(algorithm: str) -> None:
    if algorithm == "fft":
        raise ValueError("algorithm='fft' cannot multiply in bfloat16 (precision='bf16' or "
                         "bfloat16 arrays): use algorithm='direct' or 'auto'")


def forward(algorithm: str, x4: FloatArray, weight: FloatArray, bias: Optional[FloatArray],
            geometry: ConvGeometry, epilogue: Epilogue = NONE, bf16: bool = False) -> FloatArray:
    if bf16:
        _check_bf16_algorithm(algorithm)
        return direct.forward(x4, weight, bias, geometry, epilogue, bf16=True)
    backend = backend_for(algorithm, x4.shape, weight.shape, geometry)
    return backend.forward(x4, weight, bias, geometry, epilogue)


def backward(algorithm: str, grad_output4: FloatArray, x4: FloatArray, weight: FloatArray,
             geometry: ConvGeometry, needs: Needs, bf16: bool = False) -> Grads:
    if bf16:
        _check_bf16_algorithm(algorithm)
        return _backward_bf16(grad_output4, x4, weight, geometry, needs)
    backend = backend_for(algorithm, x4.shape, weight.shape, geometry)
    return backend.backward(grad_output4, x4, weight, geometry, needs)


def _backward_bf16(grad_output4: FloatArray, x4: FloatArray, weight: FloatArray,
                   geometry: ConvGeometry, needs: Needs) -> Grads:
    """The gradients with bfloat16 products: grad_input of grad_output and weight (the kernels
    round them, or convert them on the bfloat16 GEMM), grad_weight of copies of grad_output and
    input rounded here; grad_bias, which multiplies nothing, of grad_output as it is."""
    need_input, need_weight, need_bias = needs
    grad_input, _, grad_bias = direct.backward(grad_output4, x4, weight, geometry,
                                               (need_input, False, need_bias), bf16_input=True)
    grad_weight = None
    if need_weight:
        grad_weight = direct.backward(_bf16.round_float32(grad_output4), _bf16.round_float32(x4),
                                      weight, geometry, (False, True, False))[1]
    return grad_input, grad_weight, grad_bias
