"""max_pool2d / avg_pool2d and their backward passes (issue 3: to be written)."""


def max_pool2d(*args, **kwargs):
    raise NotImplementedError


def max_pool2d_backward(*args, **kwargs):
    raise NotImplementedError


def avg_pool2d(*args, **kwargs):
    raise NotImplementedError


def avg_pool2d_backward(*args, **kwargs):
    raise NotImplementedError
