"""Convolve a random batch with fastconv and with the NumPy reference: check that they agree
and print both timings (median of a few runs) and the speed-up."""
import time

import numpy as np

from .. import _kernels, reference
from .._core.conv import conv2d
from .._core.threads import get_num_threads, set_num_threads
from . import positive_int


def add_arguments(parser):
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="OpenMP threads (default: OMP_NUM_THREADS, else all cores)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="dtype of the arrays (default: float32)")
    parser.add_argument("--shape", type=positive_int, nargs=4, default=(32, 16, 32, 32),
                        metavar=("N", "C", "H", "W"), help="input shape (default: 32 16 32 32)")
    parser.add_argument("--out-channels", type=positive_int, default=32, help="K (default: 32)")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="timed runs of each (default: 5)")


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return result, float(np.median(times))


def run(args):
    if args.threads is not None:
        set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    n, c, h, w = args.shape
    x = rng.standard_normal((n, c, h, w)).astype(args.dtype)
    weight = rng.standard_normal((args.out_channels, c, 3, 3)).astype(args.dtype)
    bias = rng.standard_normal(args.out_channels).astype(args.dtype)
    print(f"conv2d: input {x.shape} {args.dtype}, weight {weight.shape}, padding 1; "
          f"{get_num_threads()} thread(s), SIMD path {_kernels.get_isa()}")

    conv2d(x, weight, bias, padding=1)  # warm-up: per-thread workspaces
    out, t_fast = _median_time(lambda: conv2d(x, weight, bias, padding=1), args.repeats)
    ref, t_ref = _median_time(lambda: reference.conv2d(x, weight, bias, padding=1), args.repeats)

    # Both sum c*9 products plus a bias per output: allow that many roundings of the largest
    # partial sum, with a margin (a wrong tap or index is orders of magnitude above this).
    scale = reference.conv2d(np.abs(x), np.abs(weight), np.abs(bias), padding=1)
    err = float(np.max(np.abs(out.astype(np.float64) - ref), initial=0.0))
    tol = 4 * (c * 9 + 2) * np.finfo(x.dtype).eps * float(np.max(scale, initial=0.0))
    print(f"max abs error vs reference: {err:.3g} (tolerance {tol:.3g})")
    print(f"fastconv.conv2d:  {t_fast * 1e3:9.2f} ms (median of {args.repeats})")
    print(f"reference.conv2d: {t_ref * 1e3:9.2f} ms")
    print(f"speed-up: {t_ref / t_fast:.1f}x")
    if not (err <= tol and out.shape == ref.shape):
        print("MISMATCH: fastconv.conv2d disagrees with fastconv.reference")
        return 1
    print("OK")
    return 0
