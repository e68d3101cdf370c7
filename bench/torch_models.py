"""Fourteen published CNNs on torch, unswapped and after fastconv.torch.swap_modules.

The models are built in plain torch.nn by bench/models.py (no torchvision): ResNet-18, AlexNet,
MobileNetV2, GoogLeNet, SqueezeNet 1.1, ShuffleNetV2 x1.0, DenseNet-121, EfficientNet-B0 and
DeepLabV3-MobileNetV3-Large at 224x224, Inception-v3 at 299x299 (batch 2 each), a dilated
context network on 4 feature maps of 64x64x64, VGG-11-BN and ResNet-18 for CIFAR (batch 16)
and LeNet-5 (batch 32) at 32x32. float32, random weights, 2 threads for both libraries.

For each model, a torch model and a deep copy of it swapped to fastconv (same weights) are
first checked against each other (inference outputs, NCHW and channels_last: max error), then
timed in three modes:

- inference: eval mode, ``torch.inference_mode()``, one forward;
- training: train mode, one step of forward + cross-entropy + backward + SGD;
- channels_last: inference with the model and the input in ``torch.channels_last``.

Each timed sample is one call (or a few, for models under 20 ms a call, the same count for
both); the two variants alternate sample by sample (A, B, A, B, ...) after two warm-up calls
each, so machine noise hits both alike; medians are reported, with the ratio torch / fastconv
(above 1: fastconv faster) and the geometric mean of the ratios over the models.

``--example-input`` swaps with ``swap_modules(model, example_input=x)`` (per mode: training
chooses with forward and backward, channels_last on the channels_last input) and lists the
layers kept on torch. ``--quick`` is a smoke run (batch 2, two rounds): it checks that
everything runs, its numbers mean nothing.

    python bench/torch_models.py [--models resnet18,lenet5] [--rounds 10] [--threads 2]
                                 [--example-input] [--json FILE] [--quick]
"""
import argparse
import copy
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as TF

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # bench/models.py
try:
    import fastconv
except ImportError:  # run from a source checkout built in place
    sys.path.insert(0, os.path.dirname(HERE))
    import fastconv
import fastconv._kernels  # noqa: E402
import fastconv.torch as fct  # noqa: E402
import models  # noqa: E402,F401  (tests reach the builders as torch_models.models)
from models import MODELS, parameter_count  # noqa: E402

MODES = ("inference", "training", "channels_last")
MIN_SAMPLE_S = 0.02  # calls per timed sample: enough for this long (measured on torch)


def make_pair(base, mode, x, example_input):
    """(torch model, swapped model, input) for ``mode``; both models are deep copies of
    ``base``. Returns the swapped model's layers kept on torch too (with ``example_input``)."""
    ref = copy.deepcopy(base)
    if mode == "channels_last":
        ref = ref.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    ref.train(mode == "training")
    fast = copy.deepcopy(ref)
    kept = []
    if example_input:
        fct.swap_modules(fast, example_input=x, training=mode == "training")
        kept = [r for r in fct.swap_report(fast) if r.choice == "torch"]
    else:
        fct.swap_modules(fast)
    return ref, fast, x, kept


def check_outputs(ref, fast, x):
    """Max absolute error of the swapped model's inference output, its scale, and whether the
    two agree to float32 accuracy (relative to the output's largest value)."""
    with torch.inference_mode():
        want, got = ref(x), fast(x)
    err = (got - want).abs().max().item()
    scale = want.abs().max().item()
    ok = torch.allclose(got, want, rtol=1e-3, atol=1e-4 * scale + 1e-6)
    return err, scale, ok


def step_function(model, mode, x, target):
    if mode != "training":
        def forward():
            with torch.inference_mode():
                model(x)
        return forward
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)  # small: the weights barely move

    def train_step():
        opt.zero_grad(set_to_none=True)
        TF.cross_entropy(model(x), target).backward()
        opt.step()
    return train_step


def time_pair(run_a, run_b, rounds, warmup=2):
    """Median seconds per call of ``run_a`` and ``run_b``, sampled alternately."""
    start = time.perf_counter()
    for _ in range(warmup):
        run_a()
    calls = max(1, int(MIN_SAMPLE_S / max(1e-9, (time.perf_counter() - start) / warmup)))
    for _ in range(warmup):
        run_b()
    times = ([], [])
    for _ in range(rounds):
        for run, out in zip((run_a, run_b), times):
            start = time.perf_counter()
            for _ in range(calls):
                run()
            out.append((time.perf_counter() - start) / calls)
    return statistics.median(times[0]), statistics.median(times[1])


def bench_model(name, args):
    spec = MODELS[name]
    # quick: batch 2, as BatchNorm after a global pooling needs two values per channel
    batch = min(2, spec.batch) if args.quick else spec.batch
    torch.manual_seed(0)
    base = spec.build().float()
    x = torch.randn(batch, *spec.input_size)
    with torch.inference_mode():
        out = base.eval()(x)
    # classification: one class per image; segmentation: one per pixel
    shape = (batch,) if spec.task == "classify" else (batch, *out.shape[2:])
    target = torch.randint(0, out.shape[1], shape)
    result = dict(model=name, batch=batch, input=list(spec.input_size),
                  parameters=parameter_count(base))
    print(f"{name}: {result['parameters']:,} parameters, input {batch}x"
          f"{'x'.join(map(str, spec.input_size))}", flush=True)
    for mode in MODES:
        ref, fast, xm, kept = make_pair(base, mode, x, args.example_input)
        if mode != "training":
            err, scale, ok = check_outputs(ref, fast, xm)
            result[f"{mode}_max_error"] = err
            result[f"{mode}_output_scale"] = scale
            result[f"{mode}_match"] = ok
        t_ref, t_fast = time_pair(step_function(ref, mode, xm, target),
                                  step_function(fast, mode, xm, target), args.rounds)
        result[mode] = dict(torch_ms=1e3 * t_ref, fastconv_ms=1e3 * t_fast,
                            ratio=t_ref / t_fast,
                            kept_on_torch=[dict(name=r.name, layer=r.layer, torch_ms=r.torch_ms,
                                                fastconv_ms=r.fastconv_ms) for r in kept])
    return result


def print_checks(r):
    for mode in ("inference", "channels_last"):
        verdict = "ok" if r[f"{mode}_match"] else "MISMATCH"
        print(f"  {mode:14s} max |fastconv - torch| = {r[f'{mode}_max_error']:.3g} "
              f"(output scale {r[f'{mode}_output_scale']:.3g}): {verdict}", flush=True)


def print_table(results):
    head = f"{'model':30s}{'batch':>6s}"
    for mode in MODES:
        head += f" | {mode + ' torch/fastconv ms':>30s} {'ratio':>6s}"
    print("\n" + head)
    print("-" * len(head))
    for r in results:
        line = f"{r['model']:30s}{r['batch']:6d}"
        for mode in MODES:
            m = r[mode]
            line += f" | {m['torch_ms']:14.2f} {m['fastconv_ms']:15.2f} {m['ratio']:6.2f}"
        print(line)
    line = f"{'geomean':30s}{'':6s}"
    for mode in MODES:
        line += f" | {'':30s} {geomean([r[mode]['ratio'] for r in results]):6.2f}"
    print(line)
    print("ratio = torch ms / fastconv ms (above 1: fastconv faster)")


def print_kept(results):
    print("\nlayers kept on torch by swap_modules(model, example_input=x):")
    for r in results:
        for mode in MODES:
            kept = r[mode]["kept_on_torch"]
            print(f"  {r['model']} ({mode}): {len(kept)} layer(s)")
            for k in kept:
                print(f"    {k['name']}: {k['layer']}  torch {k['torch_ms']:.3f} ms, "
                      f"fastconv {k['fastconv_ms']:.3f} ms")


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma-separated names (default: all): " + ", ".join(MODELS))
    ap.add_argument("--rounds", type=int, default=10, help="timed samples per variant and mode")
    ap.add_argument("--threads", type=int, default=2, help="threads for torch and fastconv")
    ap.add_argument("--example-input", action="store_true",
                    help="choose each layer's library with swap_modules(model, example_input=x)")
    ap.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: batch 2, two rounds (checks that it runs; no numbers)")
    args = ap.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    if args.quick:
        args.rounds = min(args.rounds, 2)
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    fastconv.set_num_threads(args.threads)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), fastconv "
          f"{fastconv.__version__} ({fastconv.get_num_threads()} threads, "
          f"{fastconv._kernels.get_isa()}), float32, {args.rounds} rounds"
          + (", per-layer choice (example_input)" if args.example_input else "")
          + (" [quick smoke run: numbers mean nothing]" if args.quick else ""), flush=True)
    results = []
    for name in args.models:
        results.append(bench_model(name, args))
        print_checks(results[-1])
    print_table(results)
    if args.example_input:
        print_kept(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, fastconv=fastconv.__version__,
                           threads=args.threads, rounds=args.rounds, quick=args.quick,
                           example_input=args.example_input, results=results), f, indent=1)
    return 0 if all(r["inference_match"] and r["channels_last_match"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
