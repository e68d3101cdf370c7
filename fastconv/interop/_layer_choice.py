"""The per-layer choice of ``swap_modules(model, example_input=...)``: torch's or fastconv's
layer, whichever is faster on the shapes the model gives it.

Before the swap (so that an input the model does not take raises before anything changes),
the model runs once on the example input, without gradients, with a forward pre-hook on every
candidate layer that keeps a copy of the arguments it is called with (a layer used twice keeps
both calls). Then, after the swap, each swapped layer's forward -- forward and backward when
the choice is for training -- runs on those arguments with torch's class and with fastconv's,
in alternating rounds after one warm-up each, and the medians are compared. The layer stays on
fastconv only if its time is below torch's by more than ``MARGIN`` (5%): a layer timed alone,
on the same input again and again, runs with its code, data and branch history warm, and its
Python-side cost per call (the adapter's, a few tens of microseconds) is then about half of
what it is between the model's other layers; a layer that is not clearly faster alone is not
faster in the model either. Then the model with the layers so chosen is timed as a whole
against the model with all of them on torch, the same way (its hooks run on those calls too);
unless it is faster by more than ``MODEL_MARGIN`` (5%), every layer goes back to torch.

Nothing of the model changes but the classes of the layers put back on torch: its buffers (such
as BatchNorm's running statistics), each submodule's training flag, the parameters' ``.grad``
and the random number generator are as they were. The layers' timed calls go to ``forward``
directly: the model's hooks run during the pass over the example input and the model's timed
runs only.
"""
from __future__ import annotations

import collections
import contextlib
import statistics
import time
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import torch

MARGIN = 0.05
"""fastconv is kept only if its time is below ``(1 - MARGIN)`` times torch's."""

ROUNDS = 5
"""Timed samples per backend and layer, after one warm-up call each."""

LAYER_SAMPLE_S = 0.002
"""Seconds a layer's sample lasts at least (as many calls as that takes)."""

MODEL_ROUNDS = 11
"""Timed samples per backend of the whole model (:func:`_model_is_faster`)."""

MODEL_SAMPLE_S = 0.01
"""Seconds a sample of the whole model lasts at least."""

MODEL_MARGIN = 0.05
"""The model keeps its fastconv layers only if it is faster with them than with torch's by more
than this: within it, the difference is the noise of a shared machine."""

LayerChoice = collections.namedtuple("LayerChoice", "name layer torch_ms fastconv_ms choice")
LayerChoice.__doc__ = """One layer's entry in :func:`swap_report`.

    name: qualified name in the model (``model.get_submodule(name)``; ``''`` for the model).
    layer: the layer's ``repr``.
    torch_ms, fastconv_ms: median time of the layer's calls on the example input, in
        milliseconds, summed over the calls if the model uses the layer more than once; ``None``
        if the example input did not reach the layer (it then stays on fastconv).
    choice: ``'torch'`` or ``'fastconv'``.
"""

_REPORTS: weakref.WeakKeyDictionary[torch.nn.Module, List[LayerChoice]] = \
    weakref.WeakKeyDictionary()  # model -> its last report; no attribute on the model


def check_arguments(example_input: Any, training: Optional[bool]) -> Tuple[Any, ...]:
    """The positional arguments of ``model(*args)`` for ``example_input``: a tensor, or a tuple or
    list of arguments (as ``torch.jit.trace`` takes); ``training`` is None or a bool."""
    if training is not None and not isinstance(training, bool):
        raise TypeError(
            f"swap_modules: training must be None or a bool, got {type(training).__name__}")
    if isinstance(example_input, torch.Tensor):
        return (example_input,)
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input)
    raise TypeError(
        "swap_modules: example_input must be a torch.Tensor or a tuple of the model's "
        f"positional arguments, got {type(example_input).__name__}"
    )


def swap_report(model: torch.nn.Module) -> List[LayerChoice]:
    """What :func:`swap_modules` chose for each layer of ``model`` on its ``example_input``.

    Returns:
        a list of :class:`LayerChoice` ``(name, layer, torch_ms, fastconv_ms, choice)``, one per
        layer that was swapped before the choice, in the order of ``model.named_modules()``; the
        layers with ``choice == 'torch'`` are the ones left on torch. Empty if ``swap_modules``
        was never called on ``model`` with an ``example_input``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"swap_report expects a torch.nn.Module, got {type(model).__name__}")
    return list(_REPORTS.get(model, ()))


Capture = collections.namedtuple("Capture", "args calls data training")


def capture(model: torch.nn.Module, example_input: Any, training: Optional[bool],
            kinds: Tuple[type, ...]) -> Capture:
    """Check the arguments, then run ``model(*example_input)`` once without gradients and keep
    the arguments of every call of a module whose class is in ``kinds``; the model is left as it
    was (see :func:`_capture_calls`). Called before the swap, so that an example input the model
    does not take raises before anything changes.

    Args:
        model: the ``torch.nn.Module``.
        example_input: a tensor or a tuple of positional arguments.
        training: choose for forward and backward (True) or forward only (False); ``None``
            means ``model.training``.
        kinds: the classes of the candidate layers (torch's and fastconv's).
    """
    args = check_arguments(example_input, training)
    if training is None:
        training = model.training
    modules = [m for m in model.modules() if type(m) in kinds]
    calls, data = _capture_calls(model, args, modules, training)
    return Capture(args, calls, data, training)


def choose_layers(model: torch.nn.Module, captured: Capture, to_torch: Dict[type, type]
    ) -> List[LayerChoice]:
    """Put back on torch each fastconv layer of ``model`` that torch runs faster on the
    arguments ``captured`` (from :func:`capture`) holds for it; record the report (see
    :func:`swap_report`) and return it.

    Args:
        model: a ``torch.nn.Module`` whose fastconv layers were just swapped in.
        captured: the :class:`Capture` of ``model`` on the example input.
        to_torch: maps each fastconv layer class to its torch class.
    """
    training, data = captured.training, captured.data
    names: Dict[Any, Any] = {}
    for name, module in model.named_modules():  # a layer used twice keeps its first name
        if type(module) in to_torch:
            names.setdefault(module, name)
    calls = {module: captured.calls.get(module, []) for module in names}
    report = []
    for module, name in names.items():
        fast_cls = type(module)
        torch_ms = fastconv_ms = None
        choice = "fastconv"
        if calls[module]:
            torch_s = fastconv_s = 0.0
            for call in calls[module]:
                call = _prepare(call, training, data)
                t_torch, t_fast = _time_candidates(
                    module, _runner(module, to_torch[fast_cls], fast_cls, call, training),
                    _runner(module, fast_cls, fast_cls, call, training))
                torch_s += t_torch
                fastconv_s += t_fast
            torch_ms, fastconv_ms = 1e3 * torch_s, 1e3 * fastconv_s
            if fastconv_s >= (1.0 - MARGIN) * torch_s:
                choice = "torch"
                module.__class__ = to_torch[fast_cls]
        report.append(LayerChoice(name, repr(module), torch_ms, fastconv_ms, choice))
    if not _model_is_faster(model, captured, [m for m in names if type(m) in to_torch],
                            to_torch):
        for module in names:
            if type(module) in to_torch:
                module.__class__ = to_torch[type(module)]
        report = [r._replace(choice="torch") for r in report]
    _REPORTS[model] = report
    return report


def _model_is_faster(model: torch.nn.Module, captured: Capture, layers: List[torch.nn.Module],
                     to_torch: Dict[type, type]) -> bool:
    """Whether ``model`` runs faster on the example input with ``layers`` (its fastconv layers
    after the choice) than with all of them on torch: the two are timed as wholes, as the
    layers were, the model's state restored afterwards (:func:`_state_kept`). A
    layer's time alone leaves out what it costs the layers around it (caches, the adapter's
    Python work between them), so the sum of the layers' gains may not be the model's."""
    if not layers:
        return True
    home = [(m, type(m)) for m in layers]
    params: List[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]

    def runner(on_torch: bool) -> Callable[[], None]:
        def run() -> None:
            for m, cls in home:
                m.__class__ = to_torch[cls] if on_torch else cls
            try:
                _run_model(model, captured.args, captured.training, params)
            finally:
                for m, cls in home:
                    m.__class__ = cls
        return run

    with _state_kept(model, captured.training):
        t_torch, t_fast = _time_model(model, runner(True), runner(False))
    return t_fast < (1.0 - MODEL_MARGIN) * t_torch


def _run_model(model: torch.nn.Module, args: Tuple[Any, ...], training: bool,
               params: List[torch.Tensor]) -> None:
    """``model(*args)``, and for training the gradient of the sum of its floating-point outputs
    with respect to ``params`` (autograd.grad: their ``.grad`` stay untouched)."""
    if not training or not params:
        with torch.no_grad():
            model(*args)
        return
    with torch.enable_grad():
        leaves = torch.utils._pytree.tree_leaves(model(*args))
        outs = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
        if outs:
            loss = outs[0].sum()
            for t in outs[1:]:
                loss = loss + t.sum()
            torch.autograd.grad(loss, params, allow_unused=True)


def _capture_calls(model: torch.nn.Module, args: Tuple[Any, ...], modules: List[torch.nn.Module],
                   training: bool) -> Tuple[Dict[torch.nn.Module, List[Tuple[Any, ...]]], Set[int]]:
    """Run ``model(*args)`` once without gradients, in ``training`` mode; leave the model's state
    as it was. Returns each module's positional arguments, one tuple per call, and the ids of
    the kept tensors that are the model's own inputs."""
    calls: Dict[torch.nn.Module, List[Tuple[Any, ...]]] = {module: [] for module in modules}
    inputs = {id(a) for a in args if isinstance(a, torch.Tensor)}
    data = set()

    def copy(a: Any) -> Any:
        # a copy: the model may later change the tensor in place (x += identity)
        if not isinstance(a, torch.Tensor):
            return a
        kept = a.clone()
        if id(a) in inputs:
            data.add(id(kept))
        return kept

    def keep(module: torch.nn.Module, args: Tuple[Any, ...]) -> None:
        calls[module].append(tuple(copy(a) for a in args))

    handles = [m.register_forward_pre_hook(keep) for m in modules]
    try:
        with _state_kept(model, training), torch.no_grad():
            model(*args)
    finally:
        for handle in handles:
            handle.remove()
    return calls, data


@contextlib.contextmanager
def _state_kept(model: torch.nn.Module, training: bool) -> Iterator[None]:
    """``model`` in ``training`` mode within the block, then its submodules' training flags,
    its buffers (such as BatchNorm's running statistics) and the random number generator as
    they were before it."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        model.train(training)
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def _prepare(call: Tuple[Any, ...], training: bool, data: Set[int]) -> Tuple[Any, ...]:
    """The arguments a timed call gets: for training, tensors that need a gradient as they would
    in the model (every activation, but not the model's own inputs)."""
    if not training:
        return call
    return tuple(
        a.detach().requires_grad_(id(a) not in data and a.is_floating_point())
        if isinstance(a, torch.Tensor) else a
        for a in call
    )


def _runner(module: torch.nn.Module, cls: Any, home_cls: type, call: Tuple[Any, ...],
            training: bool) -> Callable[[], None]:
    """A function running ``module``'s forward as class ``cls`` on ``call`` (and its backward if
    ``training``), without the module's hooks; the module is of ``home_cls`` between calls."""
    inputs = [a for a in call if isinstance(a, torch.Tensor) and a.requires_grad]
    grad_out: List[Any] = []

    def run() -> None:
        module.__class__ = cls
        try:
            if not training:
                with torch.no_grad():
                    cls.forward(module, *call)
                return
            with torch.enable_grad():
                out = cls.forward(module, *call)
                out = out[0] if isinstance(out, tuple) else out
                wrt = inputs + [p for p in module.parameters(recurse=False) if p.requires_grad]
                if wrt and out.requires_grad:
                    if not grad_out:  # the same gradient for both classes and every round
                        grad_out.append(torch.ones_like(out))
                    # autograd.grad, not backward: the parameters' .grad stay untouched
                    torch.autograd.grad(out, wrt, grad_out[0])
        finally:
            module.__class__ = home_cls

    return run


def _time_model(model: torch.nn.Module, run_torch: Callable[[], None],
                run_fastconv: Callable[[], None]) -> Tuple[float, float]:
    """Median seconds of the whole model with its chosen layers on torch and on fastconv (tests
    replace this function to decide the outcome without timing)."""
    return _median_times(run_torch, run_fastconv, MODEL_ROUNDS, MODEL_SAMPLE_S)


def _time_candidates(module: torch.nn.Module, run_torch: Callable[[], None],
                     run_fastconv: Callable[[], None]) -> Tuple[float, float]:
    """Median seconds of ``run_torch()`` and ``run_fastconv()`` (``module`` is the layer they run;
    tests replace this function to decide the outcome without timing)."""
    return _median_times(run_torch, run_fastconv, ROUNDS, LAYER_SAMPLE_S)


def _median_times(run_torch: Callable[[], None], run_fastconv: Callable[[], None], rounds: int,
                  sample_s: float) -> Tuple[float, float]:
    """Median seconds per call of the two functions over ``rounds`` alternating samples, each
    of as many calls as take about ``sample_s`` (from the warm-up call, at least one): a
    sample of one short call is mostly the timer's and the scheduler's noise."""
    times: Tuple[List[float], List[float]] = ([], [])
    runs = (run_torch, run_fastconv)
    start = time.perf_counter()
    for run in runs:  # warm-up: workspaces, thread pools
        run()
    calls = max(1, int(sample_s / max(time.perf_counter() - start, 1e-9) * 2))
    for _ in range(rounds):
        for run, out in zip(runs, times):
            start = time.perf_counter()
            for _ in range(calls):
                run()
            out.append((time.perf_counter() - start) / calls)
    return statistics.median(times[0]), statistics.median(times[1])
