"""Where does the convolution theorem pay off? FFT vs direct conv2d for kernel sizes 3..15.

Times ``fastconv.conv2d`` and ``fastconv.conv2d_backward`` with ``algorithm='direct'`` and
``algorithm='fft'`` on a fixed input (default ``(8, 16, 64, 64) -> 16`` channels, stride 1,
padding ``k // 2`` so that the output keeps the input size) and prints the medians, the
speed-up of the FFT, the crossover kernel size, and where the cost model
:func:`fastconv.fft.prefer_fft` predicts the FFT to be faster; it exits with status 1 if the model
prefers the FFT where the FFT was measured slower. (``algorithm='auto'`` runs the direct kernels:
the FFT is opt-in, as it can be less exact; the model tells a caller where opting in pays.)

``--calibrate`` also times a spread of layer shapes and fits the cost-model constants of
``fastconv/fft.py`` (seconds per direct multiply-add, per FFT unit ``FH*FW*log2(FH*FW)`` and per
complex multiply-add of the frequency-domain product); the constants in ``fastconv/fft.py`` come
from such a run (on a shared, noisy 2-core machine: repeat, and prefer a quiet moment).

    python3 bench/fft_crossover.py [--dtype float32] [--repeats 7] [--sizes 3 5 ...] [--calibrate]
"""
import argparse
import math
import statistics
import sys
import time

import numpy as np

try:
    import fastconv
except ImportError:  # run from a source checkout: python3 bench/fft_crossover.py
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    import fastconv
from fastconv import fft as ffm
from fastconv._core.conv_geometry import conv_geometry


def interleaved_medians(funcs, repeats, stat=statistics.median):
    """Median (or ``stat``) seconds of each of ``funcs``, timed in alternation (each round runs
    every function once) so that a burst of load from other processes hits all of them alike."""
    for f in funcs:
        f()  # warm-up (thread pool, caches)
    times = [[] for _ in funcs]
    for _ in range(repeats):
        for f, ts in zip(funcs, times):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
    return [stat(ts) for ts in times]


def time_layer(x, wt, pad, repeats, stat=statistics.median):
    """{(pass, algorithm): median (or ``stat``) seconds} for one layer."""
    y = fastconv.conv2d(x, wt, padding=pad, algorithm="direct")
    go = np.random.default_rng(1).standard_normal(y.shape).astype(x.dtype)
    keys, funcs = [], []
    for alg in ("direct", "fft"):
        keys.append(("forward", alg))
        funcs.append(lambda alg=alg: fastconv.conv2d(x, wt, padding=pad, algorithm=alg))
        keys.append(("backward", alg))
        funcs.append(lambda alg=alg: fastconv.conv2d_backward(go, x, wt, padding=pad, algorithm=alg))
    return dict(zip(keys, interleaved_medians(funcs, repeats, stat)))


def crossover_table(args):
    rng = np.random.default_rng(0)
    n, c, h, w = args.shape
    k = args.out_channels
    x = rng.standard_normal((n, c, h, w)).astype(args.dtype)
    print(f"input {tuple(args.shape)} -> {k} channels, {args.dtype}, stride 1, padding k//2, "
          f"{fastconv.get_num_threads()} threads, median of {args.repeats} runs")
    header = (f"{'k':>3} | {'fwd direct':>10} {'fwd fft':>9} {'fft gain':>8} {'model':>6} | "
              f"{'bwd direct':>10} {'bwd fft':>9} {'fft gain':>8} {'model':>6}")
    print(header)
    print("-" * len(header))
    results = []
    for ks in args.sizes:
        wt = rng.standard_normal((k, c, ks, ks)).astype(args.dtype)
        pad = ks // 2
        g = conv_geometry(x.shape, wt.shape, 1, pad, 1, 1)
        t = time_layer(x, wt, pad, args.repeats)
        model = {p: "fft" if ffm.prefer_fft(x.shape, wt.shape, g, backward=p == "backward")
                else "direct" for p in ("forward", "backward")}
        cells = []
        for p in ("forward", "backward"):
            gain = t[p, "direct"] / t[p, "fft"]
            cells.append(f"{t[p, 'direct'] * 1e3:>8.2f}ms {t[p, 'fft'] * 1e3:>7.2f}ms "
                         f"{gain:>7.2f}x {model[p]:>6}")
        print(f"{ks:>3} | " + " | ".join(cells), flush=True)
        results.append((ks, t, model))
    bad = []
    for p in ("forward", "backward"):
        faster = [ks for ks, t, _ in results if t[p, "fft"] < t[p, "direct"]]
        cross = next((ks for ks in args.sizes if all(s in faster for s in args.sizes if s >= ks)), None)
        picked = [ks for ks, _, model in results if model[p] == "fft"]
        print(f"{p}: FFT measured faster for k in {faster or '[]'}; crossover "
              f"{f'at k = {cross}' if cross else 'not reached (direct wins throughout)'}; "
              f"prefer_fft picks the FFT for k in {picked or '[]'}")
        bad += [(p, ks) for ks in picked if ks not in faster]
    if bad:
        print(f"prefer_fft picked the FFT where it was measured slower: {bad}")
        return 1
    print("prefer_fft picks the FFT only where it was measured faster.")
    return 0


def calibrate(args):
    """Fit the cost-model constants over a spread of shapes (forward and backward), from the
    fastest of the runs (the cost without contention from other processes)."""
    rng = np.random.default_rng(2)
    shapes = [  # (N, C, H, K, kernel)
        (8, 16, 64, 16, 3), (8, 16, 64, 16, 9), (8, 16, 64, 16, 15),
        (4, 32, 32, 32, 5), (4, 32, 32, 32, 11), (16, 8, 48, 8, 7),
        (2, 64, 32, 64, 9), (2, 64, 32, 64, 13), (1, 3, 128, 8, 11), (8, 16, 100, 16, 13),
    ]
    direct_rows, fft_rows, fft_times = [], [], []
    for n, c, h, k, ks in shapes:
        x = rng.standard_normal((n, c, h, h)).astype(args.dtype)
        wt = rng.standard_normal((k, c, ks, ks)).astype(args.dtype)
        pad = ks // 2
        g = conv_geometry(x.shape, wt.shape, 1, pad, 1, 1)
        t = time_layer(x, wt, pad, args.repeats, stat=min)  # min: the uncontended cost
        for p in ("forward", "backward"):
            macs = n * k * c * g.out_h * g.out_w * ks * ks * (2 if p == "backward" else 1)
            direct_rows.append(t[p, "direct"] / macs)
            fh, fw = ffm.fft_size(h + 2 * pad), ffm.fft_size(h + 2 * pad)
            unit = fh * fw * math.log2(fh * fw)
            nf = fh * (fw // 2 + 1)
            if p == "forward":
                tr, pr = n * c + k * c + n * k, n * k * c * nf
            else:
                tr, pr = n * k + 2 * k * c + 2 * n * c, 2 * n * k * c * nf
            fft_rows.append([tr * unit, pr, 1.0])
            fft_times.append(t[p, "fft"])
            print(f"  {(n, c, h, h)} -> {k}, {ks}x{ks} {p:>8}: direct {t[p, 'direct'] * 1e3:7.2f} ms "
                  f"({macs / t[p, 'direct'] / 1e9:5.1f} GMAC/s), fft {t[p, 'fft'] * 1e3:7.2f} ms",
                  flush=True)
    a, b = np.array(fft_rows), np.array(fft_times)
    # least squares on relative error (divide each row by its time), constants kept >= 0
    coef, *_ = np.linalg.lstsq(a / b[:, None], np.ones_like(b), rcond=None)
    coef = np.maximum(coef, 0)
    print(f"DIRECT_SECONDS_PER_MAC = 1 / {1 / statistics.median(direct_rows) / 1e9:.0f}e9")
    print(f"FFT_SECONDS_PER_UNIT = {coef[0]:.3g}\nPRODUCT_SECONDS_PER_CMAC = {coef[1]:.3g}\n"
          f"FFT_OVERHEAD_SECONDS = {coef[2]:.3g}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=4, default=[8, 16, 64, 64], metavar=("N", "C", "H", "W"))
    ap.add_argument("--out-channels", type=int, default=16)
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 7, 9, 11, 13, 15])
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="fastconv threads (default: all)")
    ap.add_argument("--calibrate", action="store_true", help="also fit the cost-model constants")
    args = ap.parse_args(argv)
    if args.threads:
        fastconv.set_num_threads(args.threads)
    status = crossover_table(args)
    if args.calibrate:
        calibrate(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
