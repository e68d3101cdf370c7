"""Adapters that let existing code run on fastconv unchanged: the PyTorch adapter (import path
``fastconv.torch``) and CS231n-style NumPy layer functions (``fastconv.compat.cs231n``)."""
