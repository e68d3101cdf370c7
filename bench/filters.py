"""fastconv.filters.filter2d against the image filters of OpenCV, SciPy and PyTorch.

    python bench/filters.py [--threads 1 2] [--rounds 7] [--size 8192] [--quick]

Images: a photograph bundled with scikit-image (``skimage.data.astronaut()``, 512x512 RGB; no
download; left out when scikit-image is missing) and a synthetic ``size`` x ``size`` grayscale
image, each as float32 and as uint8. Cases: 3x3 sharpen, 5x5 Gaussian (sigma 1), 15x15 Gaussian
(sigma 2.5), Sobel (x), 31x31 box, and a bank of eight 3x3 filters in one call.

Peers (each left out when not installed; ``pip install fastconv[bench]`` installs them):
``cv2.filter2D`` / ``cv2.GaussianBlur`` / ``cv2.sepFilter2D`` / ``cv2.Sobel`` / ``cv2.blur``
(``cv2.setNumThreads(n)``), ``scipy.ndimage.correlate`` / ``gaussian_filter`` /
``uniform_filter`` (always single-threaded), ``torch.nn.functional.conv2d`` after ``F.pad``
(``torch.set_num_threads(n)``, on a tensor in its own NCHW layout made before timing). Every
library runs on the same number of threads; all use the mirror padding that does not repeat the
edge (fastconv's ``'reflect'``, OpenCV's BORDER_REFLECT_101, SciPy's ``'mirror'``, torch's
``'reflect'``).

Outputs: float32 for float32 images; for uint8 images uint8 (rounded, saturated) for the blurs
(OpenCV's uint8 blurs are the peers: they work in fixed point and may differ by 1) and float32
for the signed results (sharpen, Sobel, the bank). SciPy writes float32 throughout.

Each round times every call once, in turn (alternating rounds, so drifts of a shared machine hit
all alike; each round starts with the next library, so that the threads a library leaves spinning
after its call slow each other library alike; ``--pause`` sleeps before every call); the table gives the median ms, each peer's time over fastconv's (> 1: fastconv is
faster) and the largest absolute difference of the peer's output from fastconv's.
"""
import argparse
import gc
import statistics
import sys
import time

import numpy as np

import fastconv
from fastconv import filters as fl

try:
    import cv2
except ImportError:  # pragma: no cover - optional peer
    cv2 = None
try:
    import scipy.ndimage as ndi
except ImportError:  # pragma: no cover
    ndi = None
try:
    import torch
    import torch.nn.functional as tF
except ImportError:  # pragma: no cover
    torch = None

BANK_NAMES = ("sharpen", "sobel_x", "sobel_y", "laplacian", "emboss", "box_blur",
              "gaussian_blur", "identity")
BLURS = ("gauss5", "gauss15", "box31")
# Peers whose direct 2-D sum would take more multiply-adds than this are left out (see main).
HUGE_MACS = 2e9


def images(size, quick):
    """(name, HWC-or-HW array) pairs: the photograph and the synthetic image, uint8 and float32."""
    out = []
    try:
        from skimage import data
        photo = data.astronaut()
        out.append(("astronaut 512x512x3", photo))
    except ImportError:
        print("scikit-image not installed: the photograph is left out")
    rng = np.random.default_rng(0)
    n = 1024 if quick else size
    # smooth structure plus noise, so that blurs and edges see something like an image
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    synth = 127 + 60 * np.sin(12 * x) * np.cos(9 * y) + rng.normal(0, 20, (n, n))
    out.append((f"synthetic {n}x{n}", np.clip(synth, 0, 255).astype(np.uint8)))
    del y, x, synth
    result = []
    for name, img in out:
        result.append((name, img))
        result.append((name, img.astype(np.float32) / 255))
    return result


def cases():
    """(name, fastconv kernel(s), dict of 1-D factors for the separable peers)."""
    g5 = fl.gaussian(1.0, 5)
    g15 = fl.gaussian(2.5, 15)
    box = np.ones((31, 31)) / 961
    g1 = lambda k: k[k.shape[0] // 2] / k[k.shape[0] // 2].sum()  # noqa: E731 - its 1-D factor
    return [
        ("sharpen3", fl.sharpen, None),
        ("gauss5", g5, dict(sigma=1.0, ksize=5, k1=g1(g5))),
        ("gauss15", g15, dict(sigma=2.5, ksize=15, k1=g1(g15))),
        ("sobel", fl.sobel_x, None),
        ("box31", box, dict(ksize=31, k1=np.ones(31) / 31)),
        ("bank8", np.stack([fl.get_kernel(n) for n in BANK_NAMES]), None),
    ]


def fastconv_call(img, name, k):
    out = None if (img.dtype == np.uint8 and name in BLURS) else "float"
    return lambda: fl.filter2d(img, k, "reflect", output_dtype=out)


def cv_calls(img, name, k, sep):
    """name -> callable, OpenCV's ways of computing the case."""
    if cv2 is None:
        return {}
    border = cv2.BORDER_REFLECT_101
    u8_blur = img.dtype == np.uint8 and name in BLURS
    depth = -1 if (img.dtype == np.float32 or u8_blur) else cv2.CV_32F
    calls = {}
    if name == "bank8":
        calls["cv2.filter2D x8"] = lambda: [cv2.filter2D(img, depth, kk, borderType=border)
                                            for kk in k]
        return calls
    calls["cv2.filter2D"] = lambda: cv2.filter2D(img, depth, k, borderType=border)
    if sep is not None:
        k1 = sep["k1"]
        calls["cv2.sepFilter2D"] = lambda: cv2.sepFilter2D(img, depth, k1, k1, borderType=border)
        if "sigma" in sep:
            ks, s = sep["ksize"], sep["sigma"]
            calls["cv2.GaussianBlur"] = lambda: cv2.GaussianBlur(img, (ks, ks), s, sigmaY=s,
                                                                 borderType=border)
        else:
            ks = sep["ksize"]
            calls["cv2.blur"] = lambda: cv2.blur(img, (ks, ks), borderType=border)
    if name == "sobel":
        calls["cv2.Sobel"] = lambda: cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3, borderType=border)
    return calls


def scipy_calls(img, name, k, sep):
    if ndi is None:
        return {}
    f32 = np.float32

    def corr(kk):
        kk = kk if img.ndim == 2 else kk[:, :, None]
        return ndi.correlate(img, kk, output=f32, mode="mirror")

    if name == "bank8":
        return {"scipy.correlate x8": lambda: [corr(kk) for kk in k]}
    calls = {"scipy.correlate": lambda: corr(k)}
    axes = (0, 1)
    if sep is not None and "sigma" in sep:
        s, r = sep["sigma"], sep["ksize"] // 2
        calls["scipy.gaussian_filter"] = lambda: ndi.gaussian_filter(
            img, s, output=f32, mode="mirror", radius=r, axes=axes)
    elif sep is not None:
        calls["scipy.uniform_filter"] = lambda: ndi.uniform_filter(
            img, sep["ksize"], output=f32, mode="mirror", axes=axes)
    return calls


def torch_calls(img, name, k):
    if torch is None:
        return {}
    chw = img[None] if img.ndim == 2 else np.moveaxis(img, 2, 0)
    x = torch.from_numpy(np.ascontiguousarray(chw))[None]  # (1, C, H, W), made before timing
    c = x.shape[1]
    kk = k[None] if k.ndim == 2 else k
    f = kk.shape[0]
    w = torch.from_numpy(np.ascontiguousarray(
        np.broadcast_to(kk[None], (c,) + kk.shape).reshape(c * f, 1, *kk.shape[1:]),
        dtype=np.float32))
    r, s = kk.shape[1:]
    pad = ((s - 1) // 2, s - 1 - (s - 1) // 2, (r - 1) // 2, r - 1 - (r - 1) // 2)
    u8_blur = img.dtype == np.uint8 and name in BLURS

    def run():
        with torch.no_grad():
            xi = x.float() if x.dtype != torch.float32 else x
            y = tF.conv2d(tF.pad(xi, pad, mode="reflect"), w, groups=c)
            if u8_blur:
                y = y.round().clamp(0, 255).to(torch.uint8)
            return y
    return {"torch.conv2d": run}


def as_fastconv_layout(y, img, name, ref):
    """A peer's output in fastconv's layout (float64), for the difference."""
    if torch is not None and isinstance(y, torch.Tensor):
        y = y.numpy()[0]  # (C*F, H, W), channel c*F + f
        f = ref.shape[0] if name == "bank8" else 1
        c = 1 if img.ndim == 2 else img.shape[2]
        y = y.reshape(c, f, *y.shape[1:])
        y = np.moveaxis(y, 0, -1)  # (F, H, W, C)
        if img.ndim == 2:
            y = y[..., 0]
        if name != "bank8":
            y = y[0]
    elif isinstance(y, list):
        y = np.stack(y)
    return np.asarray(y, dtype=np.float64).reshape(ref.shape)


def median_ms(fn_by_name, rounds, pause=0.0):
    times = {n: [] for n in fn_by_name}
    outs = {}
    for n, fn in fn_by_name.items():  # warm up, keep the output for the check
        outs[n] = fn()
    names = list(fn_by_name)
    for r in range(rounds):
        # each round starts with the next library: the worker threads of the library timed
        # before spin for a few ms after its call (OpenMP's wait policy) and take cores from the
        # next one's team, so each library follows every other one in turn
        for n in names[r % len(names):] + names[:r % len(names)]:
            gc.collect()
            if pause:
                time.sleep(pause)
            t0 = time.perf_counter()
            fn_by_name[n]()
            times[n].append(time.perf_counter() - t0)
    return {n: 1e3 * statistics.median(t) for n, t in times.items()}, outs


def set_threads(n):
    fastconv.set_num_threads(n)
    if cv2 is not None:
        cv2.setNumThreads(n)
    if torch is not None:
        torch.set_num_threads(n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--pause", type=float, default=0.0,
                    help="seconds to sleep before each timed call (idle thread pools)")
    ap.add_argument("--quick", action="store_true", help="a 1024x1024 synthetic image, 3 rounds")
    args = ap.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    missing = [n for n, m in (("cv2", cv2), ("scipy", ndi), ("torch", torch)) if m is None]
    if missing:
        print("not installed, left out:", ", ".join(missing))
    from fastconv import _kernels
    print(f"fastconv {fastconv.__version__} ({_kernels.get_isa()}); medians of {rounds} "
          f"alternating rounds; ratio = peer ms / fastconv ms")
    header = f"{'image':22s} {'dtype':7s} {'case':9s} {'thr':>3s} {'fastconv':>9s}  peers"
    print(header)
    print("-" * len(header))
    worst = {}
    for iname, img in images(args.size, args.quick):
        for cname, k, sep in cases():
            for nt in args.threads:
                set_threads(nt)
                calls = {"fastconv": fastconv_call(img, cname, k)}
                calls.update(cv_calls(img, cname, k, sep))
                # the direct 2-D sums of SciPy and torch take minutes on the large image with the
                # large kernels: left out there (the separable peers are the ones to beat)
                huge = img.size * k.size > HUGE_MACS
                peers = scipy_calls(img, cname, k, sep)  # single-threaded always
                peers.update(torch_calls(img, cname, k))
                for n in [n for n in peers if huge and n in ("scipy.correlate", "torch.conv2d")]:
                    del peers[n]
                calls.update(peers)
                ms, outs = median_ms(calls, rounds, args.pause)
                ref = np.asarray(outs.pop("fastconv"), dtype=np.float64)
                cells = []
                for n, y in outs.items():
                    diff = np.abs(as_fastconv_layout(y, img, cname, ref) - ref).max()
                    ratio = ms[n] / ms["fastconv"]
                    cells.append(f"{n} {ms[n]:.2f} ({ratio:.2f}x, d={diff:.2g})")
                    key = (n.split(".")[0], nt)
                    worst[key] = min(worst.get(key, np.inf), ratio)
                del outs, ref
                print(f"{iname:22s} {str(img.dtype):7s} {cname:9s} {nt:3d} "
                      f"{ms['fastconv']:9.2f}  " + "; ".join(cells), flush=True)
    print("\nworst ratio per library and thread count (>= 1: fastconv at least as fast):")
    for (lib, nt), r in sorted(worst.items()):
        print(f"  {lib:8s} threads={nt}: {r:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
