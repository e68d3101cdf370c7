"""The kernel API's implementation (public face: :mod:`fastconv.functional`).

``args`` and ``geometry`` hold the shared argument checks and per-axis geometry;
``conv_geometry`` and ``pool_geometry`` the argument rules of each op (plain Python, no compiled
code); ``conv`` and ``pool`` the ops themselves; ``dispatch`` chooses a convolution's backend,
``direct`` (the compiled kernels) or ``fft`` (NumPy's FFT); ``threads``, ``denormal`` and
``memory`` the run-time settings of the compiled module.
"""
