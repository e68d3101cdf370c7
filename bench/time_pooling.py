"""Time fastconv's pooling against fastconv.reference and torch (when importable), in one run.

    python3 bench/time_pooling.py [--threads 1 2] [--repeats 21] [--dtype float32] [--no-ref]

(with fastconv importable: installed, or ``PYTHONPATH=.`` after ``setup.py build_ext --inplace``).
On cores shared with other busy processes, 2-thread timings of both fastconv and torch collapse
into scheduler ticks (multiples of 4 ms): measure on a quiet machine.

Forward and forward+backward (grad of the input) for the four pooling cases of the benchmark suite;
fastconv and torch alternate within every repeat, each time is the median over the repeats (ms);
the NumPy reference is timed 3 times after them.
Not a test: a quick way to see the ratios while working on src/pool_engine.h.
"""
import argparse
import time

import numpy as np

import fastconv
from fastconv import reference as ref

CASES = [
    ("max 2x2/s2", "max", (64, 32, 32, 32), dict(kernel_size=2, stride=2)),
    ("max 3x3/s2/p1", "max", (32, 64, 56, 56), dict(kernel_size=3, stride=2, padding=1)),
    ("avg 2x2/s2", "avg", (64, 32, 32, 32), dict(kernel_size=2, stride=2)),
    ("avg 3x3/s1/p1 nopad", "avg", (32, 64, 28, 28),
     dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
]


def contenders(kind, x, kw, g, torch):
    """name -> (forward, forward+backward) callables."""
    out = {}
    for name, mod in (("fastconv", fastconv), ("reference", ref)):
        if kind == "max":
            def fwd(mod=mod):
                return mod.max_pool2d(x, **kw)

            def fb(mod=mod):
                y, i = mod.max_pool2d(x, **kw, return_indices=True)
                return mod.max_pool2d_backward(g, i, x.shape)
        else:
            def fwd(mod=mod):
                return mod.avg_pool2d(x, **kw)

            def fb(mod=mod):
                mod.avg_pool2d(x, **kw)
                return mod.avg_pool2d_backward(g, x.shape, **kw)
        out[name] = (fwd, fb)
    if torch is not None:
        F = torch.nn.functional
        f = F.max_pool2d if kind == "max" else F.avg_pool2d
        xt, gt = torch.from_numpy(x), torch.from_numpy(g)
        xg = xt.clone().requires_grad_()

        def tfwd():
            with torch.no_grad():
                return f(xt, **kw)

        def tfb():
            xg.grad = None
            f(xg, **kw).backward(gt)
            return xg.grad
        out["torch"] = (tfwd, tfb)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-ref", action="store_true", help="skip the (slow) NumPy reference")
    ap.add_argument("--case", default=None, help="substring of a case name")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    print(f"dtype {args.dtype}, median of {args.repeats} (reference: of 3), ms; "
          f"ratio = fastconv / torch")
    hdr = f"{'case':22s} {'thr':>3s} | {'fc fwd':>7s} {'ref fwd':>8s} {'torch':>7s} {'ratio':>6s} |" \
          f" {'fc f+b':>7s} {'ref f+b':>8s} {'torch':>7s} {'ratio':>6s}"
    print(hdr)
    print("-" * len(hdr))
    for threads in args.threads:
        fastconv.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        for label, kind, shape, kw in CASES:
            if args.case and args.case not in label:
                continue
            x = rng.standard_normal(shape).astype(args.dtype)
            y = fastconv.max_pool2d(x, **kw) if kind == "max" else fastconv.avg_pool2d(x, **kw)
            g = rng.standard_normal(y.shape).astype(args.dtype)
            cs = contenders(kind, x, kw, g, torch)
            if args.no_ref:
                cs.pop("reference")
            times = {(n, p): [] for n in cs for p in (0, 1)}
            for name, fns in cs.items():  # warm-up (the reference: once, below)
                if name != "reference":
                    for fn in fns:
                        fn()
            # fastconv and torch alternate; the reference (slow, and its big temporaries evict
            # the caches) runs 3 times afterwards
            for r in range(args.repeats):
                for name, fns in cs.items():
                    if name == "reference":
                        continue
                    for p, fn in enumerate(fns):
                        t0 = time.perf_counter()
                        fn()
                        times[name, p].append(time.perf_counter() - t0)
            for r in range(3 if "reference" in cs else 0):
                for p, fn in enumerate(cs["reference"]):
                    t0 = time.perf_counter()
                    fn()
                    times["reference", p].append(time.perf_counter() - t0)
            med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}

            def cell(name, p, width):
                return f"{med[name, p]:{width}.2f}" if (name, p) in med else " " * (width - 3) + "n/a"

            def ratio(p):
                return f"{med['fastconv', p] / med['torch', p]:6.2f}" if "torch" in cs else "   n/a"
            print(f"{label:22s} {threads:3d} | {cell('fastconv', 0, 7)} {cell('reference', 0, 8)} "
                  f"{cell('torch', 0, 7)} {ratio(0)} | {cell('fastconv', 1, 7)} "
                  f"{cell('reference', 1, 8)} {cell('torch', 1, 7)} {ratio(1)}")


if __name__ == "__main__":
    main()
