"""One training step of a small torch CPU model with and without fastconv.torch.swap_modules.

LeNet-5 style (conv 1->6 5x5, relu, max 2x2, conv 6->16 5x5, relu, max 2x2, 400-120-84-10),
batch 64 of 1x32x32, float32, cross-entropy, SGD with momentum. A step is zero_grad + forward +
loss + backward + optimizer step. The variants share the same initial weights and are timed
in rounds (5 steps of A, 5 of B, 5 of C, again ...) so that machine noise hits them alike;
medians are reported.

A swapped model alternates between two OpenMP runtimes (torch ships its own libgomp; fastconv uses
the system's). libgomp's idle workers spin for a while before sleeping; on a machine whose cores
are all busy, a spinning worker of one runtime can hold the core a worker of the other needs.
``--policies default,passive`` measures every variant once per OMP_WAIT_POLICY value, each in a
fresh interpreter (the policy is read when a runtime is loaded); PASSIVE makes workers sleep at
once, which costs torch's own many small parallel regions far more than it saves.

    python bench/torch_swap.py [--steps 40] [--batch 64] [--threads N] [--policies default]
"""
import argparse
import copy
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as TF

try:
    import fastconv
except ImportError:  # run from a source checkout built in place
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastconv
import fastconv.torch as fct


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )


def swap_convs_only(model):
    fct.swap_modules(model)
    for m in model.modules():
        if type(m) in (fct.MaxPool2d, fct.AvgPool2d):
            fct.unswap_modules(m)
    return model


class Runner:
    def __init__(self, name, model, x, y):
        self.name, self.model, self.x, self.y = name, model, x, y
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.times, self.fwd_times = [], []

    def step(self):
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = TF.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.times.append(time.perf_counter() - t0)
        return loss.item()

    def forward_only(self):
        t0 = time.perf_counter()
        with torch.no_grad():
            self.model(self.x)
        self.fwd_times.append(time.perf_counter() - t0)


def fmt(ts):
    q = statistics.quantiles(ts, n=4)
    return f"{1e3 * statistics.median(ts):7.2f} ms  (IQR {1e3 * q[0]:.2f}-{1e3 * q[2]:.2f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both torch and fastconv (default: each library's own)")
    ap.add_argument("--policies", default="default",
                    help="OMP_WAIT_POLICY values to measure, each in its own interpreter")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.child:
        for policy in args.policies.split(","):
            env = dict(os.environ)
            env.pop("OMP_WAIT_POLICY", None)
            if policy != "default":
                env["OMP_WAIT_POLICY"] = policy.upper()
            print(f"===== OMP_WAIT_POLICY={policy}", flush=True)
            argv = [sys.executable, os.path.abspath(__file__), "--child",
                    "--steps", str(args.steps), "--batch", str(args.batch)]
            if args.threads:
                argv += ["--threads", str(args.threads)]
            subprocess.run(argv, env=env, check=True)
            print(flush=True)
        return
    run(args)


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
        fastconv.set_num_threads(args.threads)

    torch.manual_seed(0)
    base = lenet()
    x = torch.randn(args.batch, 1, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    runners = [Runner("torch", copy.deepcopy(base), x, y),
               Runner("fastconv: swap_modules", fct.swap_modules(copy.deepcopy(base)), x, y),
               Runner("fastconv: convs only", swap_convs_only(copy.deepcopy(base)), x, y)]

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), fastconv "
          f"{fastconv.__version__} ({fastconv.get_num_threads()} OpenMP threads), batch "
          f"{args.batch}x1x32x32 float32, {args.steps} timed steps per variant")
    for r in runners:  # swapped layers: name -> class
        print(f"  {r.name:24s}", ", ".join(f"{type(m).__module__.split('.')[0]}.{type(m).__name__}"
                                           for m in r.model if isinstance(m, (nn.Conv2d, nn.MaxPool2d))))

    first = [r.step() for r in runners]  # identical weights and data: identical first loss
    assert max(first) - min(first) < 1e-4, first
    for _ in range(5):  # warm-up (workspaces, thread pools)
        for r in runners:
            r.step()
            r.forward_only()
    for r in runners:
        r.times.clear()
        r.fwd_times.clear()
    # Blocks of steps per variant, rounds over the variants: noise is shared, and the first step
    # after a switch (the previous variant's idle OpenMP workers may still be spinning) is untimed.
    block = 5
    for _ in range(max(1, args.steps // block)):
        for r in runners:
            r.step()
            r.forward_only()
            r.times.pop()
            r.fwd_times.pop()
            for _ in range(block):
                r.step()
                r.forward_only()

    ref = statistics.median(runners[0].times)
    ref_fwd = statistics.median(runners[0].fwd_times)
    print(f"\n{'variant':26s}{'training step (median)':38s}{'speed-up':>9s}   "
          f"{'inference forward (median)':36s}{'speed-up':>9s}")
    for r in runners:
        print(f"{r.name:26s}{fmt(r.times):38s}{ref / statistics.median(r.times):8.2f}x   "
              f"{fmt(r.fwd_times):36s}{ref_fwd / statistics.median(r.fwd_times):8.2f}x")


if __name__ == "__main__":
    main()
