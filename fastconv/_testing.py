"""Hooks for fastconv's own tests: knobs of the compiled kernels that change how they run (never
what they compute), and views of their internal state. Not part of the API: nothing outside the
tests calls them, and they may change at any time."""
from ._kernels import _testing_conv_path_plans as conv_path_plans
from ._kernels import _testing_mxcsr as mxcsr
from ._kernels import _testing_set_bf16_amx_model as set_bf16_amx_model
from ._kernels import _testing_set_conv_path as set_conv_path
from ._kernels import _testing_set_fail_item as set_fail_item
from ._kernels import _testing_set_parallel_grain as set_parallel_grain
from ._kernels import _testing_set_scalar as set_scalar
from ._kernels import _testing_set_serial_bytes as set_serial_bytes
from ._kernels import _testing_set_workspace_cap as set_workspace_cap
from ._kernels import _testing_threads_mxcsr as threads_mxcsr
from ._kernels import _testing_workspace_keep_bytes as workspace_keep_bytes
from ._kernels import _testing_workspace_peak as workspace_peak
from ._kernels import _testing_workspace_sizes as workspace_sizes

__all__ = ["conv_path_plans", "mxcsr", "set_bf16_amx_model", "set_conv_path", "set_fail_item",
           "set_parallel_grain", "set_scalar", "set_serial_bytes", "set_workspace_cap",
           "threads_mxcsr", "workspace_keep_bytes", "workspace_peak", "workspace_sizes"]
