"""Adapters that serve existing code unchanged: :mod:`fastconv.compat.cs231n` (CS231n-style NumPy
layer functions). The PyTorch adapter is :mod:`fastconv.torch`."""
