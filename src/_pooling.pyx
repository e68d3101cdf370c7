# cython: language_level=3
"""Pooling kernels (issue 3: to be written)."""
