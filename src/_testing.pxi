# Hooks for fastconv's own tests (included by _kernels.pyx; fastconv._testing re-exports them
# without the prefix). They change how the kernels run, never what they compute, or show their
# internal state. Not part of the API.


def _testing_set_parallel_grain(double flops):
    """Flops per thread a convolution needs before it uses one more thread (0: always every
    thread, as the determinism tests do); returns the previous value."""
    global _grain
    previous, _grain = _grain, max(0.0, flops)
    return previous


def _testing_set_serial_bytes(double nbytes):
    """Pooling calls touching fewer bytes run single-threaded; returns the previous value."""
    global _serial_bytes
    previous, _serial_bytes = _serial_bytes, nbytes
    return previous


def _testing_set_scalar(bint on):
    """Run the pooling forward passes on the scalar path (torch's loops verbatim)."""
    global _force_scalar
    _force_scalar = on


def _testing_set_fail_item(fc_idx i):
    """Make the work item of index ``i`` of every later call (convolution or pooling) fail as if
    out of memory; -1: none."""
    global _fail_item
    _fail_item = i


def _testing_set_workspace_cap(int64_t nbytes):
    """Per-image buffers above ``nbytes`` switch a pass to row bands of about an eighth of it,
    and after a call no thread keeps more than three times it (default 16 MiB). Returns the
    previous cap."""
    if nbytes < 1:
        raise ValueError(f"nbytes must be >= 1, got {nbytes}")
    return int(fc_ws_set_cap(nbytes))


def _testing_workspace_keep_bytes():
    """Bytes of workspace a thread may keep after a call."""
    return int(fc_ws_keep_bytes())


def _testing_workspace_peak(reset=False):
    """The most bytes all threads' workspaces held together since the last reset (or the
    module's import); ``reset`` restarts it from the bytes held now."""
    global fc_ws_bytes_peak
    cdef long long peak = fc_ws_bytes_peak
    if reset:
        fc_ws_bytes_peak = fc_ws_bytes_total
    return int(peak)


cdef enum:
    _MAX_LISTED = 1024  # workspaces _testing_workspace_sizes reports at most: more than tests start


def _testing_workspace_sizes():
    """The bytes held by each thread's workspace (threads that have run a kernel and not
    exited)."""
    cdef int64_t held[_MAX_LISTED]
    cdef int n = fc_ws_list(held, _MAX_LISTED)
    return [int(held[i]) for i in range(min(n, _MAX_LISTED))]


def _testing_mxcsr():
    """This thread's MXCSR register (None without one)."""
    return int(fc_csr_get()) if fc_flush_supported() else None


def _testing_threads_mxcsr():
    """The MXCSR of each thread of a team of get_num_threads() threads, between calls (the
    OpenMP workers persist from one call to the next)."""
    cdef int n = fc_get_max_threads(), t
    cdef unsigned[::1] csr = np.zeros(n, dtype=np.uintc)
    with nogil:
        for t in prange(n, schedule="static", num_threads=n):
            csr[t] = fc_csr_get()
    return [int(c) for c in csr] if fc_flush_supported() else [None] * n

cdef extern from "fc_kernels.h" nogil:
    int fc_set_bf16_amx_model(int on)
    int fc_set_conv_path(int path, int on)
    long fc_conv_path_plans(int path)

# the forward's and grad_input's own paths (conv_engine.h's FC_PATH_*)
_CONV_PATHS = {"cv": 0, "dwd": 1}


def _conv_path_code(str name):
    if name not in _CONV_PATHS:
        raise ValueError(f"path must be one of {sorted(_CONV_PATHS)}, got {name!r}")
    return _CONV_PATHS[name]


def _testing_set_conv_path(str name, bint on):
    """Let the forward and grad_input take one of their own paths where it applies (the
    default) or the GEMM instead: 'cv', the channel-vectorised path for small output planes, or
    'dwd', the depthwise path. Returns the previous setting."""
    return bool(fc_set_conv_path(_conv_path_code(name), on))


def _testing_conv_path_plans(str name):
    """How many plans have taken that path so far: one per forward call; for grad_input, one
    per stride phase on the channel-vectorised path and one per call on the depthwise one."""
    return int(fc_conv_path_plans(_conv_path_code(name)))


def _testing_set_bf16_amx_model(bint on):
    """Run the AMX code of the bfloat16 GEMM on its model of the tile instructions instead of the
    avx512_bf16 path (tests only; src/conv_amx_tmpl.h); returns whether the model is in use."""
    return bool(fc_set_bf16_amx_model(on))
