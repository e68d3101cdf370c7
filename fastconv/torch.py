"""The PyTorch adapter, :mod:`fastconv.interop.torch`, under its import path ``fastconv.torch``:
autograd functions and drop-in ``torch.nn`` modules running on fastconv's kernels (needs torch)."""
from .interop.torch import *  # noqa: F401,F403
from .interop.torch import __all__  # noqa: F401
