"""fastconv.optim: SGD and Adam follow torch's update rules, step after step, for every option."""

import numpy as np
import pytest

from fastconv import nn, optim


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [
        nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in [(3, 4), (5,), (2, 1, 3, 3)]
    ]


def run(opt_cls, kwargs, dtype, steps=5, seed=0, framework="fastconv"):
    """`steps` updates with a fixed sequence of gradients; the parameters after each."""
    params = make_params(dtype, seed)
    grads_rng = np.random.default_rng(seed + 1)
    history = []
    if framework == "torch":
        import torch

        tparams = [torch.tensor(p.data, requires_grad=True) for p in params]
        opt = getattr(torch.optim, opt_cls)(tparams, **kwargs)
        for _ in range(steps):
            for tp in tparams:
                tp.grad = torch.from_numpy(grads_rng.standard_normal(tp.shape).astype(dtype))
            opt.step()
            history.append([tp.detach().numpy().copy() for tp in tparams])
        return history
    opt = getattr(optim, opt_cls)(params, **kwargs)
    for _ in range(steps):
        for p in params:
            p.grad = grads_rng.standard_normal(p.shape).astype(dtype)
        opt.step()
        history.append([p.data.copy() for p in params])
    return history


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.5, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05)),
    ("Adam", dict(lr=0.02, amsgrad=True)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_matches_torch(name, kwargs, dtype):
    pytest.importorskip("torch")
    ours = run(name, kwargs, dtype)
    theirs = run(name, kwargs, dtype, framework="torch")
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for pa, pb in zip(a, b):
            assert pa.dtype == dtype
            np.testing.assert_allclose(pa, pb, **tol, err_msg=f"{name} {kwargs} step {step}")


def test_sgd_by_hand():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    p.grad = np.array([0.2, 0.4])
    opt.step()  # g = grad + 0.5 p = [0.7, -0.6]; buf = g; p -= 0.1 * buf
    np.testing.assert_allclose(p.data, [0.93, -1.94])
    p.grad = np.array([0.0, 0.0])
    opt.step()  # g = 0.5 p = [0.465, -0.97]; buf = 0.9 * [0.7, -0.6] + g
    np.testing.assert_allclose(p.data, [0.93 - 0.1 * (0.63 + 0.465), -1.94 - 0.1 * (-0.54 - 0.97)])


def test_adam_first_step_is_lr_times_sign():
    p = nn.Parameter(np.array([1.0, 1.0, 1.0]))
    opt = optim.Adam([p], lr=0.01)
    p.grad = np.array([3.0, -1e-3, 0.0])
    opt.step()
    np.testing.assert_allclose(p.data, [0.99, 1.01, 1.0], rtol=1e-6)


def test_parameters_without_grad_are_skipped_and_zero_grad():
    a, b = make_params(np.float32)[:2]
    opt = optim.SGD([a, b], lr=1.0, momentum=0.9)
    before = b.data.copy()
    a.grad = np.ones_like(a.data)
    opt.step()
    assert np.array_equal(b.data, before) and "momentum_buffer" not in opt.state[1]
    opt.zero_grad(set_to_none=False)
    assert np.all(a.grad == 0) and b.grad is None
    opt.zero_grad()
    assert a.grad is None


def test_updates_in_place_and_dtype_kept():
    model = nn.Linear(3, 2, rng=0)
    data = model.weight.data
    model(np.ones((1, 3), np.float32))
    model.backward(np.ones((1, 2), np.float32))
    optim.Adam(model.parameters()).step()
    assert model.weight.data is data and data.dtype == np.float32


def test_errors():
    p = make_params(np.float32)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="not a fastconv.nn.Parameter"):
        optim.Adam([np.zeros(3)])
    with pytest.raises(ValueError, match="more than once"):
        optim.Adam([p[0], p[0]])
