"""A thin layer API over :mod:`fastconv.functional`: enough to train a small CNN (the
conv -> ReLU -> max-pool network that ``fastconv demo`` trains on handwritten digits).

No autograd: every layer caches in :meth:`Module.forward` what its :meth:`Module.backward` needs
(the conv input, the max-pool argmax indices, the ReLU output, the dropout mask) and
``backward(grad_output)`` returns the gradient with respect to the layer's input while *adding* the
gradients of its parameters to their ``.grad`` (as torch accumulates them; clear them with
``zero_grad()``). A :class:`Sequential` chains both directions::

    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 4 * 4, 10, rng=rng))
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(model(x), labels)          # forward, caches
    model.zero_grad()
    model.backward(loss_fn.backward())        # gradients into p.grad for p in model.parameters()
    optimizer.step()

Parameters are float32 by default (``dtype=np.float64`` on request, or ``model.astype(...)``) and
initialised as torch does (Kaiming-uniform: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and
biases) from a seeded ``np.random.Generator`` (``rng``: a Generator, an int seed, or None).
Names in :meth:`Module.state_dict` are torch's (``"0.weight"``, ``"3.bias"``, ...).
"""
from .activations import LeakyReLU, ReLU, ReLU6
from .layers import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, Conv2d, ConvTranspose2d,
                     Dropout, Flatten, Linear, MaxPool2d)
from .losses import CrossEntropyLoss
from .module import Module, Parameter, Sequential

__all__ = [
    "Parameter",
    "Module",
    "Conv2d",
    "ConvTranspose2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "Flatten",
    "Linear",
    "Dropout",
    "Sequential",
    "CrossEntropyLoss",
]
