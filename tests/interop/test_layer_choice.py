"""swap_modules(model, example_input=...): the per-layer choice between torch and fastconv.

The timer is replaced by one that decides from the layer (no timing in unit tests); it still
runs both candidates, so the code they run is checked too.
"""
import copy

import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

import fastconv.torch as fct  # noqa: E402
from fastconv.interop import _layer_choice  # noqa: E402


class FakeTimer:
    """Returns (torch seconds, fastconv seconds) from ``times(module)``, after running each
    candidate once; records the modules."""

    def __init__(self, times):
        self.times = times
        self.calls = []

    def __call__(self, module, run_torch, run_fastconv):
        run_torch()
        run_fastconv()
        self.calls.append(module)
        return self.times(module)


def use_timer(monkeypatch, times, model_times=(2.0, 1.0)):
    """Layer times from ``times(layer)`` (torch's, fastconv's); the model as chosen then times
    ``model_times`` against torch's layers throughout (default: faster), without running."""
    timer = FakeTimer(times)
    monkeypatch.setattr(_layer_choice, "_time_candidates", timer)
    monkeypatch.setattr(_layer_choice, "_time_model", lambda model, run_torch, run_fastconv:
                        model_times)
    return timer


def spy_conv_classes(monkeypatch):
    """A list to which every convolution's forward appends its class (torch's or fastconv's)."""
    seen = []
    for cls in (nn.Conv2d, fct.Conv2d):
        original = cls._conv_forward

        def spy(self, *args, _original=original, _cls=cls):
            seen.append(_cls)
            return _original(self, *args)
        monkeypatch.setattr(cls, "_conv_forward", spy)
    return seen


def swap_keeps_the_state(model, training):
    """Swap ``model`` (a small_model) with an example input after giving it a mixed state;
    returns a check that its training flags, buffers, .grad (none: the timed backward leaves
    none) and the random number generator are as before."""
    model[5].eval()  # a mixed state is kept as it is
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
    before = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    x = torch.randn(4, 3, 16, 16)
    rng = torch.get_rng_state()
    fct.swap_modules(model, example_input=x, training=training)

    def check():
        assert [m.training for m in model.modules()] == modes
        assert torch.equal(torch.get_rng_state(), rng)
        after = model.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items())
        assert all(p.grad is None for p in model.parameters())
    return check


def small_model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 1), nn.Dropout(0.5), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 4, 5),
    )


def test_each_layer_keeps_the_faster_class(monkeypatch):
    def times(module):
        if isinstance(module, nn.MaxPool2d):
            return 1.0, 2.0  # torch twice as fast: back to torch
        if isinstance(module, nn.AvgPool2d):
            return 1.0, 0.94  # fastconv 6% faster: stays on fastconv
        if module.out_channels == 6:
            return 1.0, 0.97  # fastconv only 3% faster: within the margin, back to torch
        return 2.0, 1.0

    timer = use_timer(monkeypatch, times)
    model = small_model().eval()
    assert fct.swap_modules(model, example_input=torch.randn(2, 3, 16, 16)) is model
    assert [type(model[i]) for i in (0, 3, 4, 6)] == [fct.Conv2d, nn.MaxPool2d, nn.Conv2d,
                                                      fct.AvgPool2d]
    assert len(timer.calls) == 4

    report = fct.swap_report(model)
    assert [(r.name, r.choice) for r in report] == [
        ("0", "fastconv"), ("3", "torch"), ("4", "torch"), ("6", "fastconv")]
    assert report[1].layer == repr(model[3])
    assert (report[1].torch_ms, report[1].fastconv_ms) == (1000.0, 2000.0)
    assert all(isinstance(r, _layer_choice.LayerChoice) for r in report)


def test_a_model_no_faster_as_chosen_goes_back_to_torch(monkeypatch):
    """Layers faster alone, but the model with them not faster than with torch's layers by
    more than the noise: every layer goes back to torch, and the report says so."""
    use_timer(monkeypatch, lambda m: (2.0, 1.0), model_times=(1.0, 0.96))  # 4%: the noise
    model = small_model().eval()
    fct.swap_modules(model, example_input=torch.randn(2, 3, 16, 16))
    assert [type(model[i]) for i in (0, 3, 4, 6)] == [nn.Conv2d, nn.MaxPool2d, nn.Conv2d,
                                                      nn.AvgPool2d]
    report = fct.swap_report(model)
    assert [r.choice for r in report] == ["torch"] * 4
    assert [(r.torch_ms, r.fastconv_ms) for r in report] == [(2000.0, 1000.0)] * 4


@pytest.mark.parametrize("training", [False, True])
def test_the_model_is_timed_with_each_class_and_left_as_it_was(monkeypatch, training):
    """The model-level timing runs the whole model once with the chosen layers on fastconv and
    once on torch (forward, and for training the parameters' gradients), and leaves its state,
    .grad, training flags and the random number generator as they were."""
    seen = spy_conv_classes(monkeypatch)
    grads = []
    original_grad = torch.autograd.grad

    def grad_spy(outputs, inputs, *args, **kwargs):
        grads.append(len(inputs))
        return original_grad(outputs, inputs, *args, **kwargs)
    monkeypatch.setattr(torch.autograd, "grad", grad_spy)
    use_timer(monkeypatch, lambda m: (2.0, 1.0))
    runs = []

    def model_timer(model, run_torch, run_fastconv):
        for run, name in ((run_torch, "torch"), (run_fastconv, "fastconv")):
            del seen[:], grads[:]
            run()
            runs.append((name, list(seen), list(grads)))
        return 2.0, 1.0
    monkeypatch.setattr(_layer_choice, "_time_model", model_timer)
    model = small_model().train()
    check_state = swap_keeps_the_state(model, training)
    n_params = len(list(model.parameters()))
    assert runs == [("torch", [nn.Conv2d] * 2, [n_params] if training else []),
                    ("fastconv", [fct.Conv2d] * 2, [n_params] if training else [])]
    assert [type(model[i]) for i in (0, 4)] == [fct.Conv2d] * 2
    check_state()


def test_the_candidates_run_as_torch_and_as_fastconv(monkeypatch):
    seen = spy_conv_classes(monkeypatch)
    use_timer(monkeypatch, lambda m: (1.0, 2.0))
    model = nn.Conv2d(2, 3, 3)
    fct.swap_modules(model, example_input=torch.randn(1, 2, 6, 6))
    # the pass over the example input (before the swap), then one run of each candidate
    assert seen == [nn.Conv2d, nn.Conv2d, fct.Conv2d]
    assert type(model) is nn.Conv2d


@pytest.mark.parametrize("training", [False, True])
def test_the_model_state_is_left_as_it_was(monkeypatch, training):
    use_timer(monkeypatch, lambda m: (2.0, 1.0))
    swap_keeps_the_state(small_model().train(), training)()


def test_training_choice_times_the_backward(monkeypatch):
    grads = []
    original = torch.autograd.grad

    def spy(outputs, inputs, *args, **kwargs):
        grads.append([tuple(t.shape) for t in inputs])
        return original(outputs, inputs, *args, **kwargs)
    monkeypatch.setattr(torch.autograd, "grad", spy)
    use_timer(monkeypatch, lambda m: (2.0, 1.0))
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.MaxPool2d(2, return_indices=True))
    x = torch.randn(1, 2, 8, 8)
    fct.swap_modules(copy.deepcopy(model).eval(), example_input=x)
    fct.swap_modules(copy.deepcopy(model).train(), example_input=x, training=False)
    assert grads == []
    # the model's input needs no gradient: the first convolution's backward is for its
    # parameters only; the pooling's input is an activation (torch's run, then fastconv's)
    expected = [[(3, 2, 3, 3), (3,)]] * 2 + [[(1, 3, 6, 6)]] * 2
    fct.swap_modules(copy.deepcopy(model).eval(), example_input=x, training=True)
    assert grads == expected
    grads.clear()
    fct.swap_modules(copy.deepcopy(model).train(), example_input=x)
    assert grads == expected


def test_the_model_hooks_run_once_and_ours_are_removed(monkeypatch):
    use_timer(monkeypatch, lambda m: (2.0, 1.0))
    model = small_model().eval()
    count = []
    model[0].register_forward_hook(lambda *a: count.append(1))
    model[0].register_forward_pre_hook(lambda m, args: (args[0] * 1.0,))
    fct.swap_modules(model, example_input=torch.randn(2, 3, 16, 16))
    assert len(count) == 1
    assert len(model[0]._forward_pre_hooks) == 1 and len(model[3]._forward_pre_hooks) == 0
    model(torch.randn(2, 3, 16, 16))
    assert len(count) == 2


def test_a_layer_used_twice_is_timed_on_each_call(monkeypatch):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            return self.conv(self.pool(self.conv(x)))

    timer = use_timer(monkeypatch, lambda m: (1.0, 1.5) if isinstance(m, nn.Conv2d) else (2, 1))
    model = Twice()
    model.alias = model.conv  # a second name for the same layer
    fct.swap_modules(model, example_input=torch.randn(1, 3, 8, 8))
    assert [m is model.conv for m in timer.calls] == [True, True, False]
    report = fct.swap_report(model)
    assert [(r.name, r.torch_ms, r.fastconv_ms, r.choice) for r in report] == [
        ("conv", 2000.0, 3000.0, "torch"), ("pool", 2000.0, 1000.0, "fastconv")]
    assert type(model.alias) is nn.Conv2d


def test_a_layer_the_input_does_not_reach_stays_on_fastconv(monkeypatch):
    use_timer(monkeypatch, lambda m: (1.0, 2.0))
    class Partly(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.unused = nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)

        def forward(self, x):
            return self.conv(x)

    model = Partly()
    fct.swap_modules(model, example_input=(torch.randn(1, 1, 5, 5),))
    assert type(model.conv) is nn.Conv2d and type(model.unused) is fct.MaxPool2d
    assert fct.swap_report(model)[1] == ("unused", repr(model.unused), None, None, "fastconv")


def test_a_tuple_of_arguments(monkeypatch):
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 5)

        def forward(self, x, y):
            return self.a(x).sum() + self.b(y).sum()

    timer = use_timer(monkeypatch, lambda m: (2.0, 1.0))
    fct.swap_modules(TwoInputs(), example_input=[torch.randn(1, 1, 5, 5), torch.randn(1, 1, 9, 9)])
    assert len(timer.calls) == 2


def test_without_example_input_nothing_is_timed(monkeypatch):
    def fail(*args):
        raise AssertionError("timed without example_input")
    monkeypatch.setattr(_layer_choice, "_time_candidates", fail)
    model = fct.swap_modules(small_model())
    assert [type(model[i]) for i in (0, 3, 4, 6)] == [fct.Conv2d, fct.MaxPool2d, fct.Conv2d,
                                                      fct.AvgPool2d]
    assert fct.swap_report(model) == []


@pytest.mark.parametrize("bad, kind", [("x", "str"), (3.0, "float"), ({"x": 1}, "dict")])
def test_a_bad_example_input_is_refused_before_any_change(bad, kind):
    model = small_model()
    with pytest.raises(TypeError, match=f"example_input must be .* got {kind}"):
        fct.swap_modules(model, example_input=bad)
    assert type(model[0]) is nn.Conv2d
    with pytest.raises(TypeError, match="training must be None or a bool, got str"):
        fct.swap_modules(model, example_input=torch.randn(1, 3, 16, 16), training="yes")
    assert type(model[0]) is nn.Conv2d
    with pytest.raises(TypeError, match="swap_report expects a torch.nn.Module, got list"):
        fct.swap_report([model])


def test_an_input_the_model_does_not_take_raises_before_any_change(monkeypatch):
    use_timer(monkeypatch, lambda m: (1.0, 2.0))
    model = small_model()
    with pytest.raises(RuntimeError):
        fct.swap_modules(model, example_input=torch.randn(2, 4, 16, 16))  # 4 channels, not 3
    assert [type(m) for m in model.modules()] == [type(m) for m in small_model().modules()]
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert fct.swap_report(model) == []


def test_timing_alternates_samples_after_one_warm_up_each():
    """Each function is called once to warm up, then once per sample (a sample of one call when
    a call outlasts the sample time), alternately, torch's first."""
    calls = []
    t_torch, t_fast = _layer_choice._median_times(lambda: calls.append("torch"),
                                                  lambda: calls.append("fastconv"), 3, 0.0)
    assert calls == ["torch", "fastconv"] * 4
    assert t_torch >= 0 and t_fast >= 0
