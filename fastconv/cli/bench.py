"""Benchmark suite: fastconv against the other engines a user could run the same layers on, and
against fastconv.reference, in one run.

``python -m fastconv bench`` (or ``python bench/run.py``) times every case of its suite forward and
forward+backward, alternating the contenders in blocks after a warm-up, and reports medians. The
other engines, each when it is installed (``pip install "fastconv[bench]"``): torch (forward and
forward+backward), ONNX Runtime and OpenVINO (forward: inference engines) and JAX (forward and
forward+backward); each case's ratio to the fastest of them. Also: GFLOP/s, the fraction of this
machine's measured FMA peak (the fastest reading of its FMA probe in the run, at its start or
after a case), fastconv's workspace per call, float64 against float32, the 1 -> N
thread speed-up of the large layers, the float32 error of fastconv and torch against float64, the
CPU time other processes took while each case ran, and the machine's speed right after each case
(its FMA probe against the run's peak: a host that lends the cores to other machines shows no
load, only a slower probe); a busy or slow machine is said so.

It ends with the bar, each criterion PASS or FAIL with the value measured, and exits with status 3
when one failed (0 when all held): forward, every case at most 1.0x the fastest other engine and
their geometric mean at most 0.8; forward+backward, every case at most 0.9x the faster of torch and
JAX and their geometric mean at most 0.5; the large layers (resnet-c64, strided, deep, dilated,
alexnet-first) at 85% or more of the FMA peak forward, 75% forward+backward, and in float64 at 80%
or more of the float64 peak (half the float32 one); a 1 -> 2 thread speed-up of 1.8x or more on
them; float32 forward, grad_input and grad_weight no less exact than torch's; workspaces well below
the im2col of the batch; and every other engine installed. The comparisons with the other engines
are judged on a run of the whole suite only.

Machines are shared and noisy: only ratios measured in the same run mean anything.
"""
import argparse
import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import _kernels, functional, reference
from .._core.geometry import live_taps
from .._core.threads import get_num_threads, set_num_threads
from . import USAGE_ERROR, CommandError, bench_peers, check_output_file, guard, positive_int

PROG = "fastconv bench"


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # 'conv', 'conv_transpose', 'max', 'avg'
    shape: Tuple[int, ...]  # input (N, C, H, W)
    k: int = 0  # conv output channels
    kernel: int = 3
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    groups: int = 1
    count_include_pad: bool = True
    output_padding: int = 0  # conv_transpose only
    activation: Optional[str] = None  # conv: applied after it, fused (fastconv) and as a pass (unfused)

    def conv_kwargs(self):
        kw = dict(stride=self.stride, padding=self.pad, dilation=self.dilation, groups=self.groups)
        if self.kind == "conv_transpose":
            kw["output_padding"] = self.output_padding
        return kw

    def weight_shape(self):
        """conv2d's (K, C // groups, R, S) or conv_transpose2d's (C, K // groups, R, S)."""
        c, k, g = self.shape[1], self.k, self.groups
        out_in = (c, k // g) if self.kind == "conv_transpose" else (k, c // g)
        return out_in + (self.kernel, self.kernel)

    def pool_kwargs(self):
        kw = dict(kernel_size=self.kernel, stride=self.stride, padding=self.pad)
        if self.kind == "avg":
            kw["count_include_pad"] = self.count_include_pad
        return kw


CASES = [
    Case("lenet-conv1", "conv", (64, 1, 28, 28), 6, 5),
    Case("lenet-conv2", "conv", (64, 6, 12, 12), 16, 5),
    Case("cifar-first", "conv", (64, 3, 32, 32), 32, 5, pad=2),
    Case("resnet-c16", "conv", (64, 16, 32, 32), 16, 3, pad=1),
    Case("resnet-c64", "conv", (64, 64, 32, 32), 64, 3, pad=1),
    Case("strided", "conv", (64, 64, 32, 32), 128, 3, stride=2, pad=1),
    Case("deep", "conv", (16, 256, 14, 14), 256, 3, pad=1),
    Case("pointwise", "conv", (32, 256, 14, 14), 64, 1),
    Case("alexnet-first", "conv", (8, 3, 224, 224), 96, 11, stride=4, pad=2),
    Case("depthwise", "conv", (32, 64, 56, 56), 64, 3, pad=1, groups=64),
    Case("dilated", "conv", (16, 64, 32, 32), 64, 3, pad=2, dilation=2),
    # a DeepLabV3 atrous pyramid branch (rate 24 on a 14x14 map): most taps read only padding
    Case("aspp-d24", "conv", (2, 960, 14, 14), 256, 3, pad=24, dilation=24),
    Case("resnet-c64-relu", "conv", (64, 64, 32, 32), 64, 3, pad=1, activation="relu"),
    Case("max-2x2-s2", "max", (64, 32, 32, 32), kernel=2, stride=2),
    Case("max-3x3-s2-p1", "max", (32, 64, 56, 56), kernel=3, stride=2, pad=1),
    Case("avg-2x2-s2", "avg", (64, 32, 32, 32), kernel=2, stride=2),
    Case("avg-3x3-s1-p1-nopad", "avg", (32, 64, 28, 28), kernel=3, stride=1, pad=1,
         count_include_pad=False),
    # transposed convolutions (conv_transpose2d): a DCGAN generator layer (8x8 -> 16x16) and a
    # U-Net up-convolution (56x56 -> 112x112)
    Case("dcgan-up", "conv_transpose", (8, 512, 8, 8), 256, 4, stride=2, pad=1),
    Case("unet-up", "conv_transpose", (2, 128, 56, 56), 64, 2, stride=2),
]
CONV_KINDS = ("conv", "conv_transpose")
BLAS_COOLDOWN_S = 0.5
# Timed calls per contender, of which the median is reported: 7 outvote a couple of calls slowed
# by the machine; --quick trades that for a run well under a minute.
DEFAULT_REPEATS = 7
QUICK_REPEATS = 3
# A workspace under this counts as bounded whatever the layer: the whole-batch im2col of a small
# layer (a few MB) is no yardstick.
SMALL_WORKSPACE_MB = 64
QUICK = ("lenet-conv1", "resnet-c16", "depthwise", "max-2x2-s2", "avg-2x2-s2")
# the compute-bound layers, held to the FMA peak and the thread speed-up
LARGE = ("resnet-c64", "strided", "deep", "dilated", "alexnet-first")
# float32 error against float64, fastconv's and torch's, on these layers at a batch of at most 2
EXACTNESS_CASES = ("lenet-conv1", "resnet-c64", "deep", "pointwise", "alexnet-first", "depthwise",
                   "dilated", "strided")
EXACTNESS_BATCH = 2
PEERS = ("torch", "onnxruntime", "openvino", "jax")
# the exit status of a run whose bar did not hold (1 and 2 are errors: see fastconv.cli)
BAR_MISSED = 3
# other processes' CPU use (in cores) above which a case's timings are flagged
BUSY_CORES = 0.1
# The machine's speed around a case: the FMA probe (all threads, registers only) rerun right
# after the case's timings, as a fraction of the run's measured peak. A virtual machine whose
# host lends its cores to others shows no load of its own, only a slower probe: below this
# fraction of the fastest reading of the run, the case's timings are flagged. (Iterations of a
# probe run: a few milliseconds.)
SLOW_MACHINE = 0.85
SENTINEL_ITERS = 100_000
SENTINEL_PAUSE_S = 0.1


# ------------------------------------------------------------------------------ other load
def _machine_busy_seconds():
    """CPU seconds every process of the machine has run (or a hypervisor stole) since boot, or
    None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # all but idle, iowait
    return busy / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """The CPU time other processes took while the block ran, in cores (``cores``; NaN where the
    machine does not say): this process's own CPU time is taken out of the machine's."""

    cores = float("nan")

    def __enter__(self):
        self._start = (time.perf_counter(), _machine_busy_seconds(), sum(os.times()[:2]))
        return self

    def __exit__(self, *exc):
        wall0, busy0, own0 = self._start
        busy1, wall = _machine_busy_seconds(), time.perf_counter() - wall0
        if busy0 is not None and busy1 is not None and wall > 0:
            own = sum(os.times()[:2]) - own0
            self.cores = max(0.0, (busy1 - busy0 - own) / wall)
        return False


# ------------------------------------------------------------------------------ the contenders
def _relu_pass(y):
    """The activation as a pass of its own over the output (in place: the cheapest such pass)."""
    return np.maximum(y, 0, out=y)


def _unfused_fns(case, x, w, b, impl):
    """(forward, forward+backward) closures of a convolution + ReLU case computed unfused: the
    convolution, then a ReLU pass; backward, a masking pass, then the convolution's backward."""
    kw = case.conv_kwargs()

    def fwd():
        return _relu_pass(impl.conv2d(x, w, b, **kw))

    def fwd_bwd():
        y = fwd()
        return impl.conv2d_backward(np.where(y > 0, np.ones_like(y), 0), x, w, **kw)

    return fwd, fwd_bwd


def _fastconv_fns(case, x, w, b, impl):
    """(forward, forward+backward) closures for fastconv (impl=functional) or its reference;
    a case with an activation runs it fused with fastconv, as a pass after the reference."""
    if case.kind == "conv" and case.activation and impl is not functional:
        return _unfused_fns(case, x, w, b, impl)
    if case.kind == "conv" and case.activation:
        kw = dict(case.conv_kwargs(), activation=case.activation)

        def fwd():
            return impl.conv2d(x, w, b, **kw)

        def fwd_bwd():
            y = impl.conv2d(x, w, b, **kw)
            return impl.conv2d_backward(np.ones_like(y), x, w, **kw, output=y)

        return fwd, fwd_bwd
    if case.kind in CONV_KINDS:
        kw = case.conv_kwargs()
        transposed = case.kind == "conv_transpose"
        op = impl.conv_transpose2d if transposed else impl.conv2d
        op_backward = impl.conv_transpose2d_backward if transposed else impl.conv2d_backward

        def fwd():
            return op(x, w, b, **kw)

        def fwd_bwd():
            y = op(x, w, b, **kw)
            return op_backward(np.ones_like(y), x, w, **kw)

        return fwd, fwd_bwd
    kw = case.pool_kwargs()
    if case.kind == "max":
        def fwd():
            return impl.max_pool2d(x, **kw)

        def fwd_bwd():
            y, idx = impl.max_pool2d(x, return_indices=True, **kw)
            return impl.max_pool2d_backward(np.ones_like(y), idx, x.shape)

        return fwd, fwd_bwd

    def fwd():  # type: ignore[no-redef]  # (this branch's closures)
        return impl.avg_pool2d(x, **kw)

    def fwd_bwd():  # type: ignore[no-redef]  # (this branch's closures)
        y = impl.avg_pool2d(x, **kw)
        return impl.avg_pool2d_backward(np.ones_like(y), x.shape, **kw)

    return fwd, fwd_bwd


def _torch_fns(torch, case, x, w, b):
    F = torch.nn.functional
    xt = torch.from_numpy(x)
    xg = xt.clone().requires_grad_(True)
    if case.kind in CONV_KINDS:
        kw = case.conv_kwargs()
        conv = F.conv_transpose2d if case.kind == "conv_transpose" else F.conv2d
        wt, bt = torch.from_numpy(w), torch.from_numpy(b)
        wg, bg = wt.clone().requires_grad_(True), bt.clone().requires_grad_(True)

        act = F.relu if case.activation else (lambda y: y)

        def fwd():
            with torch.no_grad():
                return act(conv(xt, wt, bt, **kw))

        def fwd_bwd():
            y = act(conv(xg, wg, bg, **kw))
            y.backward(torch.ones_like(y))
            xg.grad = wg.grad = bg.grad = None

        return fwd, fwd_bwd
    kw = case.pool_kwargs()
    op = F.max_pool2d if case.kind == "max" else F.avg_pool2d

    def fwd():  # type: ignore[no-redef]  # (this branch's closures)
        with torch.no_grad():
            return op(xt, **kw)

    def fwd_bwd():  # type: ignore[no-redef]  # (this branch's closures)
        y = op(xg, **kw)
        y.backward(torch.ones_like(y))
        xg.grad = None

    return fwd, fwd_bwd


def _time_in_blocks(fns, repeats, warmup=2, rounds=5):
    """Median seconds of each closure over `repeats` timed calls, taken in `rounds` rounds; in
    each round every contender runs a block of calls after `warmup` untimed ones.

    Blocks, not single calls, alternate: torch and fastconv each bring an OpenMP runtime whose
    idle threads spin for a while after a parallel region, and on a machine with as many cores
    as threads, call-by-call alternation would time each runtime fighting the other's spinning.
    """
    times: Dict[str, List[float]] = {name: [] for name in fns}
    per_round = max(1, -(-repeats // rounds))
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def _ratio_in_rounds(num, den, calls, rounds=11, warmup=2):
    """Median over `rounds` of (median time of `num` / median time of `den`) in that round.

    Each round times a block of `calls` of each closure, back to back, the first one alternating
    between rounds: a ratio is formed from calls made moments apart, so a slow spell of the
    machine (minutes of drift across a run) scales both sides of it instead of one.
    """
    ratios = []
    for i in range(rounds):
        times = {}
        for name, fn in ((("num", num), ("den", den)) if i % 2 else (("den", den), ("num", num))):
            for _ in range(warmup):
                fn()
            block = []
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                block.append(time.perf_counter() - t0)
            times[name] = statistics.median(block)
        ratios.append(times["num"] / times["den"])
    return statistics.median(ratios)


def _conv_flops(case, out_shape):
    if case.kind == "conv_transpose":  # every input element meets every tap of its filters
        n, c, h, w = case.shape
        return 2.0 * n * c * h * w * (case.k // case.groups) * case.kernel * case.kernel
    n, k, oh, ow = out_shape
    # the taps that read the input for some output position (all of them but in atrous pyramids,
    # whose other taps read only padding and are skipped: no work, so no flops)
    taps = [stop - first for first, stop in (
        live_taps(size, case.pad, case.kernel, case.stride, case.dilation, out)
        for size, out in ((case.shape[2], oh), (case.shape[3], ow)))]
    return 2.0 * n * k * oh * ow * (case.shape[1] // case.groups) * taps[0] * taps[1]


def _workspace_mb(fn):
    """fastconv's workspace for one call: per-thread buffers + shared plan buffers, in MB."""
    _kernels.workspace_bytes(reset_plan=True)
    fn()
    ws, plan = _kernels.workspace_bytes(reset_plan=True)
    return (ws + plan) / 2**20


def _batch_im2col_mb(case, out_shape, itemsize=4):
    if case.kind == "conv_transpose":  # the columns a GEMM + col2im would scatter from
        n, _, h, w = case.shape
        return n * h * w * case.k * case.kernel * case.kernel * itemsize / 2**20
    n, _, oh, ow = out_shape
    return n * oh * ow * case.shape[1] * case.kernel * case.kernel * itemsize / 2**20


# ------------------------------------------------------------------------------ one case
@dataclass
class Row:
    case: str
    kind: str
    ms: Dict[str, float] = field(default_factory=dict)  # contender/pass -> median ms
    gflops: Dict[str, float] = field(default_factory=dict)
    ratio_fwd: float = float("nan")
    ratio_fwd_bwd: float = float("nan")
    workspace_mb: float = 0.0
    batch_im2col_mb: float = 0.0
    peak_fraction: float = float("nan")  # forward
    peak_fraction_fwd_bwd: float = float("nan")
    f64_over_f32: float = float("nan")
    f64_peak_fraction: float = float("nan")  # of the float64 peak, half the float32 one
    # the fastest other engine forward (of PEERS), and of torch and jax forward+backward
    peer_fwd: str = ""
    peer_fwd_bwd: str = ""
    ratio_peer_fwd: float = float("nan")
    ratio_peer_fwd_bwd: float = float("nan")
    other_load: float = float("nan")  # other processes' CPU use while the case ran, in cores
    machine_speed: float = float("nan")  # the FMA probe right after the case / the run's peak


def _case_inputs(case, rng):
    """float32 ``(x, weight, bias)`` of a case (weight and bias None for pooling)."""
    x = rng.standard_normal(case.shape).astype(np.float32)
    w = b = None
    if case.kind in CONV_KINDS:
        w = rng.standard_normal(case.weight_shape())
        w = (w / math.sqrt(w[0].size)).astype(np.float32)
        b = rng.standard_normal(case.k).astype(np.float32)
    return x, w, b


def _time_reference(row, slow, repeats):
    """Time the NumPy reference into ``row.ms``."""
    # The reference is 10-100x slower: fewer calls, same run, after the fast contenders.
    # Its BLAS (OpenBLAS) leaves worker threads spinning for a while after each call; they
    # would steal the cores from whatever is timed next, so let them fall asleep first.
    for pass_index, pass_name in enumerate(("fwd", "fwd+bwd")):
        sec = _time_in_blocks({"r": slow[pass_index]}, max(1, repeats // 3), warmup=0,
                              rounds=1)["r"]
        row.ms[f"reference {pass_name}"] = sec * 1e3
    time.sleep(BLAS_COOLDOWN_S)


def _conv_rates(row, case, out_shape, peak):
    """GFLOP/s of every timing, the fraction of the FMA peak and the batch im2col size."""
    flops = _conv_flops(case, out_shape)
    for key, ms in row.ms.items():
        mult = 1 if key.endswith(" fwd") else 3  # fwd+bwd: + the input and weight gradients
        row.gflops[key] = mult * flops / (ms * 1e-3) / 1e9
    if peak:
        row.peak_fraction = row.gflops["fastconv fwd"] / peak
        row.peak_fraction_fwd_bwd = row.gflops["fastconv fwd+bwd"] / peak
    row.batch_im2col_mb = _batch_im2col_mb(case, out_shape)


def _peer_contenders(case, x, w, b, peers):
    """{name: (forward, forward+backward or None)} of the other engines that take the case (one
    that cannot build it is left out, with a note)."""
    contenders = {}
    for peer in peers:
        try:
            contenders[peer.name] = peer.make(case, x, w, b)
        except Exception as exc:  # an engine's own limits: the run goes on without it
            print(f"  ({peer.name} cannot run {case.name}: {type(exc).__name__}: "
                  f"{str(exc).splitlines()[0] if str(exc) else ''})")
    return contenders


def _fastest_peer(row, pass_name):
    """(name, ms) of the fastest other engine timed on this pass, or ('', nan)."""
    times = {n: row.ms[f"{n} {pass_name}"] for n in PEERS if f"{n} {pass_name}" in row.ms}
    if not times:
        return "", float("nan")
    name = min(times, key=times.__getitem__)
    return name, times[name]


def run_case(case, torch, repeats, with_reference, peak, rng, peers=()):
    x, w, b = _case_inputs(case, rng)
    fwd, fwd_bwd = _fastconv_fns(case, x, w, b, functional)
    contenders = {"fastconv": (fwd, fwd_bwd)}
    if case.activation:
        contenders["fastconv unfused"] = _unfused_fns(case, x, w, b, functional)
    if torch is not None:
        contenders["torch"] = _torch_fns(torch, case, x, w, b)
    contenders.update(_peer_contenders(case, x, w, b, peers))
    slow = _fastconv_fns(case, x, w, b, reference) if with_reference else None
    row = Row(case.name, case.kind)
    with OtherLoad() as load:
        for pass_index, pass_name in enumerate(("fwd", "fwd+bwd")):
            med = _time_in_blocks({name: pair[pass_index] for name, pair in contenders.items()
                                   if pair[pass_index] is not None}, repeats)
            for name, sec in med.items():
                row.ms[f"{name} {pass_name}"] = sec * 1e3
    row.other_load = load.cores
    if peak:
        time.sleep(SENTINEL_PAUSE_S)  # the other runtimes' spinning threads fall asleep first
        row.machine_speed = _kernels.fma_peak_gflops(SENTINEL_ITERS, 3) / peak
    if slow:
        _time_reference(row, slow, repeats)
    out_shape = fwd().shape
    if case.kind in CONV_KINDS:
        _conv_rates(row, case, out_shape, peak)
    as64 = [None if a is None else a.astype(np.float64) for a in (x, w, b)]
    f64 = _fastconv_fns(case, *as64, functional)[0]  # type: ignore[call-arg]  # (3 arrays)
    # On compute-bound layers the ratio sits at 2 (half the SIMD lanes, the same fraction of
    # peak), so it is measured in pairs of blocks, over more calls than the torch comparison.
    row.f64_over_f32 = _ratio_in_rounds(f64, fwd, calls=max(1, (6 * repeats) // 11))
    # the float64 peak is half the float32 one: a vector holds half as many
    row.f64_peak_fraction = row.peak_fraction / row.f64_over_f32 * 2
    if torch is not None:
        row.ratio_fwd = row.ms["fastconv fwd"] / row.ms["torch fwd"]
        row.ratio_fwd_bwd = row.ms["fastconv fwd+bwd"] / row.ms["torch fwd+bwd"]
    for pass_name, attr in (("fwd", "fwd"), ("fwd+bwd", "fwd_bwd")):
        name, ms = _fastest_peer(row, pass_name)
        setattr(row, f"peer_{attr}", name)
        setattr(row, f"ratio_peer_{attr}", row.ms[f"fastconv {pass_name}"] / ms)
    row.workspace_mb = max(_workspace_mb(fwd), _workspace_mb(fwd_bwd))
    return row


# ------------------------------------------------------------------------------ reporting
def _fmt(v, spec=".2f"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


NO_INDICES = ("onnxruntime", "openvino", "jax")  # their max pooling returns no argmax
SHORT = {"onnxruntime": "ort", "openvino": "ov"}


def format_table(rows, have_torch, with_reference):
    cols = ["case", "fc fwd ms", "fc f+b ms"]
    if have_torch:
        cols += ["torch fwd", "torch f+b", "ratio fwd", "ratio f+b"]
    others = [n for n in PEERS[1:] if any(f"{n} fwd" in r.ms for r in rows)]
    fwd_bwd_others = [n for n in others if any(f"{n} fwd+bwd" in r.ms for r in rows)]
    cols += [f"{SHORT.get(n, n)} fwd" for n in others]
    cols += [f"{SHORT.get(n, n)} f+b" for n in fwd_bwd_others]
    if others:
        cols += ["best fwd", "vs best fwd", "best f+b", "vs best f+b"]
    cols += ["other load"]
    if with_reference:
        cols += ["ref fwd", "ref f+b"]
    cols += ["fc GF/s", "%peak", "f64/f32", "ws MB", "im2col MB"]
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in rows:
        vals = [r.case, _fmt(r.ms["fastconv fwd"]), _fmt(r.ms["fastconv fwd+bwd"])]
        if have_torch:
            vals += [_fmt(r.ms["torch fwd"]), _fmt(r.ms["torch fwd+bwd"]),
                     _fmt(r.ratio_fwd), _fmt(r.ratio_fwd_bwd)]
        mark = "*" if r.kind == "max" else ""  # no indices
        vals += [_fmt(r.ms.get(f"{n} fwd")) + (mark if n in NO_INDICES else "") for n in others]
        vals += [_fmt(r.ms.get(f"{n} fwd+bwd")) for n in fwd_bwd_others]
        if others:
            vals += [SHORT.get(r.peer_fwd, r.peer_fwd) or "-", _fmt(r.ratio_peer_fwd),
                     SHORT.get(r.peer_fwd_bwd, r.peer_fwd_bwd) or "-", _fmt(r.ratio_peer_fwd_bwd)]
        vals += [_fmt(r.other_load)]
        if with_reference:
            vals += [_fmt(r.ms.get("reference fwd"), ".1f"), _fmt(r.ms.get("reference fwd+bwd"), ".1f")]
        vals += [_fmt(r.gflops.get("fastconv fwd"), ".0f"), _fmt(100 * r.peak_fraction, ".0f"),
                 _fmt(r.f64_over_f32), _fmt(r.workspace_mb, ".1f"),
                 _fmt(r.batch_im2col_mb if r.kind in CONV_KINDS else None, ".0f")]
        lines.append(" | ".join(vals))
    if others and any(r.kind == "max" for r in rows):
        lines.append("* max pooling: " + ", ".join(n for n in others if n in NO_INDICES)
                     + " return no indices (fastconv and torch can; all timed without them)")
    return "\n".join(lines)


def geomean(values):
    values = [v for v in values if not math.isnan(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def _peer_checks(rows):
    """The comparisons with the other engines, on a run of the whole suite with all of them."""
    checks = []
    timed = {n for r in rows for n in PEERS if f"{n} fwd" in r.ms}
    missing = [n for n in PEERS if n not in timed]
    checks.append(("every other engine installed and timed (" + ", ".join(PEERS) + ")",
                   "all" if not missing else "missing " + ", ".join(missing), not missing))
    for label, attr, each, mean, whom in (
            ("forward", "fwd", 1.0, 0.8, "the fastest other engine"),
            ("forward+backward", "fwd_bwd", 0.9, 0.5, "the faster of torch and jax")):
        judged = [r for r in rows if not math.isnan(getattr(r, f"ratio_peer_{attr}"))]
        if not judged:
            continue
        worst = max(judged, key=lambda r: getattr(r, f"ratio_peer_{attr}"))
        w = getattr(worst, f"ratio_peer_{attr}")
        checks.append((f"{label}: every case at most {each:.1f}x {whom}",
                       f"{w:.2f} ({worst.case}, {getattr(worst, f'peer_{attr}')})", w <= each))
        g = geomean([getattr(r, f"ratio_peer_{attr}") for r in judged])
        checks.append((f"{label}: geometric mean of fastconv / {whom} <= {mean}", f"{g:.3f}",
                       g <= mean))
    return checks


def _exactness_checks(exactness):
    """float32 error no larger than torch's, over every layer of the exactness table."""
    checks = []
    for pass_name in ("forward", "grad_input", "grad_weight"):
        pairs = [(case, e[pass_name]) for case, e in exactness.items()]
        if not pairs:
            continue
        case, (ours, theirs) = max(pairs, key=lambda p: p[1][0] / p[1][1] if p[1][1] else math.inf)
        ratio = ours / theirs if theirs else math.inf
        checks.append((f"float32 {pass_name} error against float64 no larger than torch's",
                       f"worst {ratio:.2f}x torch's ({case}: {ours:.1e} vs {theirs:.1e})",
                       all(o <= t for _, (o, t) in pairs)))
    return checks


def check_bar(rows, scaling, exactness=None):
    """The bar, as (description, measured, passed) triples; ``exactness`` is
    :func:`exactness_table`'s result (None: not measured)."""
    by = {r.case: r for r in rows}
    checks = _peer_checks(rows) if len(rows) == len(CASES) else []
    for name in LARGE:
        r = by.get(name)
        if r is None:
            continue
        for what, value, limit in (("forward", r.peak_fraction, 0.85),
                                   ("forward+backward", r.peak_fraction_fwd_bwd, 0.75),
                                   ("float64 forward", r.f64_peak_fraction, 0.8)):
            peak = "float64 FMA peak" if what.startswith("float64") else "FMA peak"
            checks.append((f"{name}: {what} at >= {100 * limit:.0f}% of the {peak}",
                           f"{100 * value:.0f}%", value >= limit))
    for name, s in scaling.items():
        checks.append((f"{name}: 1 -> 2 thread speed-up >= 1.8x", f"{s:.2f}x", s >= 1.8))
    if exactness:
        checks += _exactness_checks(exactness)
    convs = [r for r in rows if r.kind in CONV_KINDS]
    if convs:
        bounded = all(r.workspace_mb < 0.5 * r.batch_im2col_mb or r.workspace_mb < SMALL_WORKSPACE_MB
                      for r in convs)
        checks.append(("workspace bounded (well below the batch im2col)",
                       f"max {max(r.workspace_mb for r in convs):.1f} MB", bounded))
    return checks


def _relative_error(got, truth):
    """max |got - truth| / max |truth| (0 for an all-zero truth that is matched)."""
    scale = float(np.max(np.abs(truth)))
    err = float(np.max(np.abs(np.asarray(got, np.float64) - truth)))
    return err / scale if scale else err


def exactness_table(cases, torch, rng):
    """{case name: {pass: (fastconv's error, torch's)}} for the cases of EXACTNESS_CASES among
    ``cases``, at a batch of at most EXACTNESS_BATCH: the float32 forward, grad_input and
    grad_weight against the float64 reference (fastconv.reference) of the same inputs, with a
    random grad_output."""
    table = {}
    for case in cases:
        if case.name not in EXACTNESS_CASES:
            continue
        small = replace(case, shape=(min(case.shape[0], EXACTNESS_BATCH),) + case.shape[1:])
        x, w, b = _case_inputs(small, rng)
        kw = case.conv_kwargs()
        y = functional.conv2d(x, w, b, **kw)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        as64 = [a.astype(np.float64) for a in (x, w, b, gy)]
        truth = [reference.conv2d(*as64[:3], **kw)] + list(
            reference.conv2d_backward(as64[3], as64[0], as64[1], **kw)[:2])
        ours = [y] + list(functional.conv2d_backward(gy, x, w, **kw)[:2])
        T, F = torch.from_numpy, torch.nn.functional
        xt, wt = T(x).requires_grad_(True), T(w).requires_grad_(True)
        yt = F.conv2d(xt, wt, T(b), **kw)
        yt.backward(T(gy))
        theirs = [yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()]
        table[case.name] = {
            p: (_relative_error(o, t), _relative_error(th, t))
            for p, o, th, t in zip(("forward", "grad_input", "grad_weight"), ours, theirs, truth)}
    return table


def format_exactness(table):
    lines = ["float32 error against float64 (max |y32 - y64| / max |y64|), fastconv | torch:",
             "case | forward | | grad_input | | grad_weight |", "--- | --- | --- | --- | --- | --- | ---"]
    for case, e in table.items():
        lines.append(" | ".join([case] + [f"{v:.1e}" for p in ("forward", "grad_input",
                                                              "grad_weight") for v in e[p]]))
    return "\n".join(lines)


def thread_scaling(cases, threads, repeats, rng):
    """Forward speed-up from 1 to `threads` threads for the given conv cases."""
    result = {}
    for case in cases:
        x = rng.standard_normal(case.shape).astype(np.float32)
        w = rng.standard_normal((case.k, case.shape[1] // case.groups, case.kernel, case.kernel))
        w = w.astype(np.float32)
        fwd = _fastconv_fns(case, x, w, None, functional)[0]

        def with_threads(n):
            def call():
                set_num_threads(n)
                return fwd()
            return call

        # rounds alternate the two counts, so that a slow spell of the machine hits both
        meds = _time_in_blocks({1: with_threads(1), threads: with_threads(threads)}, repeats,
                                 rounds=5)
        set_num_threads(threads)
        result[case.name] = meds[1] / meds[threads]
    return result


def machine_description(threads, peak):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {threads} threads, SIMD path "
            f"{_kernels.get_isa()}, measured fp32 FMA peak {peak:.0f} GFLOP/s")


# ------------------------------------------------------------------------------ CLI
def add_arguments(parser):
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for fastconv and torch (default: OpenMP's default)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a subset ({', '.join(QUICK)}) in well under a minute")
    parser.add_argument("--case", action="append", metavar="NAME",
                        help="run only this case (repeatable); names: "
                             + ", ".join(c.name for c in CASES))
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help=f"timed rounds per contender (default {DEFAULT_REPEATS}, "
                             f"--quick {QUICK_REPEATS})")
    parser.add_argument("--no-reference", action="store_true", help="skip the NumPy reference")
    parser.add_argument("--no-torch", action="store_true", help="skip torch even if importable")
    parser.add_argument("--no-peers", action="store_true",
                        help="skip onnxruntime, openvino and jax even if installed")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true",
                        help="compare bfloat16 forward convolutions instead: fastconv's "
                             "precision='bf16' and bfloat16 arrays against its float32 and "
                             "torch's float32 and bfloat16, on the 3x3 and 1x1 cases")
    parser.add_argument("--dask", action="store_true",
                        help="run the scale-out benchmark instead: fastconv.dask on a local "
                             "cluster of 1 and 2 worker processes, image filtering and batch "
                             "inference (bench/scale_out.py; with --quick and --repeats only)")


def run(args):
    """Run ``fastconv bench``; the exit status follows :func:`fastconv.cli.guard`."""
    return guard(PROG, _run, args)


def _run(args):
    if args.dask:
        return _run_scale_out(args)
    cases = _select_cases(args)
    if args.json:  # before the run, not after minutes of it
        check_output_file(args.json, "--json")
    if args.threads is not None:
        set_num_threads(args.threads)
    threads = get_num_threads()
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    # The FMA peak first: once torch is imported, its own OpenMP threads may spin on the cores.
    peak = _kernels.fma_peak_gflops()
    torch = None if args.no_torch else _import_torch(threads)
    print(machine_description(threads, peak))
    if torch is not None:
        print(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    peers = [] if args.no_peers or args.bf16 else bench_peers.available_peers(threads)
    if peers:
        print("other engines: " + ", ".join(f"{p.name} {p.version}" for p in peers))
    rng = np.random.default_rng(args.seed)
    if args.bf16:
        from . import bench_bf16

        bf16_rows, bf16_checks = bench_bf16.run(cases, torch, repeats, rng, _time_in_blocks)
        if args.json:
            _write_json(args.json, [], {}, bf16_checks, threads, peak, torch,
                        bf16={name: ms for name, ms in bf16_rows})
        return 0
    rows = _run_cases(cases, torch, repeats, not args.no_reference, peak, rng, peers)
    run_peak = peak_of_run(rows, peak)
    if run_peak > peak:
        print(f"FMA peak: {run_peak:.0f} GFLOP/s, the fastest reading of this run (at its start "
              f"{peak:.0f}); the peak fractions below are of it")
    peak = run_peak
    scaling = {}
    large = [c for c in cases if c.name in LARGE]
    if large and threads > 1:
        scaling = thread_scaling(large, threads, max(3, repeats // 2), rng)
    _print_table(rows, scaling, threads, torch is not None, not args.no_reference)
    exactness = exactness_table(cases, torch, rng) if torch is not None else {}
    if exactness:
        print(format_exactness(exactness) + "\n")
    _print_load(rows)
    checks = check_bar(rows, scaling, exactness)
    _print_checks(checks)
    if args.json:
        _write_json(args.json, rows, scaling, checks, threads, peak, torch, exactness=exactness)
    return 0 if all(ok for _, _, ok in checks) else BAR_MISSED


def _run_scale_out(args):
    """--dask: the scale-out benchmark (fastconv.cli.scale_out), --repeats as its --rounds."""
    others = [opt for opt, value in (("--case", args.case), ("--json", args.json),
                                     ("--threads", args.threads),
                                     ("--no-reference", args.no_reference),
                                     ("--bf16", args.bf16),
                                     ("--no-torch", args.no_torch)) if value]
    if others:
        raise CommandError(f"--dask takes only --quick and --repeats, got {', '.join(others)} "
                           "(bench/scale_out.py --help lists its own options)", USAGE_ERROR)
    from . import scale_out

    argv = (["--quick"] if args.quick else []) + (
        ["--rounds", str(args.repeats)] if args.repeats else [])
    return scale_out.main(argv)


def _select_cases(args):
    """The cases --case names (UsageError for an unknown one), or --quick's, or all."""
    names = [c.name for c in CASES]
    if args.case:
        unknown = [n for n in args.case if n not in names]
        if unknown:
            raise CommandError(
                f"--case: unknown case(s) {unknown}; choose from: {', '.join(names)}", USAGE_ERROR
            )
        return [c for c in CASES if c.name in args.case]
    if args.quick:
        return [c for c in CASES if c.name in QUICK]
    return list(CASES)


def _import_torch(threads):
    """torch set to ``threads`` threads, or None (and a note) when it is not importable."""
    try:
        import torch
    except ImportError:
        print("torch is not importable: timing fastconv against the reference only")
        return None
    torch.set_num_threads(threads)
    return torch


def _fastest_reading(rows):
    """The fastest the machine was seen in the run, as a fraction of the peak at its start (1.0,
    or a probe after a case)."""
    return max([1.0] + [r.machine_speed for r in rows if not math.isnan(r.machine_speed)])


def peak_of_run(rows, peak):
    """The FMA peak of the run: its fastest reading, at the start or after a case (a start in a
    slow spell of the machine would overstate every peak fraction). The rows' peak fractions
    and machine speeds are made fractions of it."""
    fastest = _fastest_reading(rows)
    for r in rows:
        r.peak_fraction /= fastest
        r.peak_fraction_fwd_bwd /= fastest
        r.f64_peak_fraction /= fastest
        r.machine_speed /= fastest
    return peak * fastest


def _run_cases(cases, torch, repeats, with_reference, peak, rng, peers=()):
    """A Row per case, printing a line as each one finishes."""
    rows = []
    for case in cases:
        rows.append(run_case(case, torch, repeats, with_reference, peak, rng, peers))
        r = rows[-1]
        print(f"  {case.name}: fastconv {r.ms['fastconv fwd']:.2f} / {r.ms['fastconv fwd+bwd']:.2f} ms"
              + (f", ratio to torch {r.ratio_fwd:.2f} / {r.ratio_fwd_bwd:.2f}" if torch else "")
              + (f", to the fastest other engine {r.ratio_peer_fwd:.2f} ({r.peer_fwd}) / "
                 f"{_fmt(r.ratio_peer_fwd_bwd)} ({r.peer_fwd_bwd or '-'})" if r.peer_fwd else "")
              + (f"; unfused (a {case.activation} pass) {r.ms['fastconv unfused fwd']:.2f} / "
                 f"{r.ms['fastconv unfused fwd+bwd']:.2f} ms" if case.activation else "")
              + (f" [other load {r.other_load:.2f} cores]" if r.other_load > BUSY_CORES else "")
              + (f" [machine at {100 * r.machine_speed:.0f}% of the run's first peak]"
                 if r.machine_speed < SLOW_MACHINE else ""),
              flush=True)
    return rows


def _print_table(rows, scaling, threads, have_torch, with_reference):
    """The table of every case, then the thread speed-up."""
    print()
    print(format_table(rows, have_torch, with_reference))
    print()
    if scaling:
        print("1 -> %d thread forward speed-up: " % threads
              + ", ".join(f"{k} {v:.2f}x" for k, v in scaling.items()))


def _print_load(rows):
    """Where other processes took CPU time while cases ran, or the machine itself ran slow (a
    host lending its cores to others): those timings are suspect."""
    busy = [r for r in rows if r.other_load > BUSY_CORES]
    if busy:
        print(f"The machine was busy: other processes used more than {BUSY_CORES} core while "
              + ", ".join(f"{r.case} ({r.other_load:.2f})" for r in busy)
              + " ran; their timings are less reliable.\n")
    # against the fastest the machine was seen in the run (the peak at its start, or a probe
    # after a case): a start in a slow spell must not hide the slow cases
    fastest = _fastest_reading(rows)
    slow = [r for r in rows if r.machine_speed < SLOW_MACHINE * fastest]
    if slow:
        print(f"The machine ran slow: its FMA probe reached less than {100 * SLOW_MACHINE:.0f}% "
              "of the fastest it was seen in this run right after "
              + ", ".join(f"{r.case} ({100 * r.machine_speed / fastest:.0f}%)" for r in slow)
              + "; their timings are less reliable.\n")


def _print_checks(checks):
    """The bar, each criterion PASS or FAIL."""
    if checks:
        print("\nThe bar:")
        for desc, measured, ok in checks:
            print(f"  [{'PASS' if ok else 'FAIL'}] {desc}: {measured}")


def _write_json(path, rows, scaling, checks, threads, peak, torch, bf16=None, exactness=None):
    result = {
        "machine": machine_description(threads, peak), "threads": threads,
        "fma_peak_gflops": peak, "torch": getattr(torch, "__version__", None),
        "rows": [asdict(r) for r in rows], "thread_speedup": scaling,
        "bar": [{"criterion": d, "measured": m, "pass": ok} for d, m, ok in checks],
        "exactness": exactness or {},
    }
    if bf16 is not None:
        result["bf16_path"], result["bf16_ms"] = _kernels.get_bf16_path(), bf16
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_arguments(parser)
    return guard(PROG, lambda: run(parser.parse_args(argv)))
