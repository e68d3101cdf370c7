"""Optimisers for :mod:`fastconv.nn` models; they live in :mod:`fastconv.nn.optim`, and this
module keeps the import path ``fastconv.optim``."""
from .nn.optim import SGD, Adam, Optimizer

__all__ = ["Optimizer", "SGD", "Adam"]
