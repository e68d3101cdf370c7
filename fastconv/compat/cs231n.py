"""CS231n-style layer functions, :mod:`fastconv.interop.cs231n`, under their import path
``fastconv.compat.cs231n``."""
from ..interop.cs231n import *  # noqa: F401,F403
from ..interop.cs231n import __all__  # noqa: F401
