"""``fastconv bench --bf16``: bfloat16 forward convolutions against float32 and torch, in one run.

For each selected convolution with a 3x3 or 1x1 kernel, the forward pass is timed (medians,
contenders alternating in blocks) as:

- ``fc f32``: fastconv in float32 (exact);
- ``fc bf16``: fastconv on the same float32 arrays with ``precision='bf16'``;
- ``fc bf16 arr``: fastconv on bfloat16 arrays (``ml_dtypes``), bfloat16 out;
- ``convert``: the bfloat16 arrays converted to float32, the float32 convolution, the result
  converted back (what a user without bfloat16 kernels would do);
- ``torch f32`` and ``torch bf16``: ``torch.nn.functional.conv2d`` on float32 and on bfloat16
  tensors (oneDNN's bfloat16 kernels where the CPU has them).

It ends with the targets for the bfloat16 path in use: on AMX, fastconv's bfloat16 at least 4x
its float32 on resnet-c64, deep and pointwise and no slower than torch's bfloat16; on
AVX512-BF16, at least 1.6x; elsewhere, the bfloat16 arrays no slower than converting them.
"""
import numpy as np

from .. import _kernels, functional

COLUMNS = ("fc f32", "fc bf16", "fc bf16 arr", "convert", "torch f32", "torch bf16")
TARGET_CASES = ("resnet-c64", "deep", "pointwise")
SPEEDUP = {"amx": 4.0, "avx512_bf16": 1.6}


def eligible(case):
    """The cases of the comparison: plain convolutions with 3x3 or 1x1 kernels."""
    return case.kind == "conv" and case.kernel in (1, 3)


def _fns(case, x, w, b, torch, bf16):
    kw = case.conv_kwargs()
    fns = {"fc f32": lambda: functional.conv2d(x, w, b, **kw),
           "fc bf16": lambda: functional.conv2d(x, w, b, **kw, precision="bf16")}
    if bf16 is not None:
        xb, wb, bb = x.astype(bf16), w.astype(bf16), b.astype(bf16)
        fns["fc bf16 arr"] = lambda: functional.conv2d(xb, wb, bb, **kw)
        fns["convert"] = lambda: functional.conv2d(
            xb.astype(np.float32), wb.astype(np.float32), bb.astype(np.float32),
            **kw).astype(bf16)
    if torch is not None:
        conv = torch.nn.functional.conv2d
        xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))
        xh, wh, bh = (t.to(torch.bfloat16) for t in (xt, wt, bt))

        def torch_f32():
            with torch.no_grad():
                return conv(xt, wt, bt, **kw)

        def torch_bf16():
            with torch.no_grad():
                return conv(xh, wh, bh, **kw)

        fns["torch f32"], fns["torch bf16"] = torch_f32, torch_bf16
    return fns


def _bfloat16():
    try:
        import ml_dtypes
    except ImportError:
        print("ml_dtypes is not installed: no bfloat16-array columns (pip install ml_dtypes)")
        return None
    return np.dtype(ml_dtypes.bfloat16)


def run(cases, torch, repeats, rng, time_in_blocks):
    """Time the eligible ``cases``; print the table and the targets; return the rows."""
    cases = [c for c in cases if eligible(c)]
    path = _kernels.get_bf16_path()
    print(f"bfloat16 path {path} (paths this build has: {', '.join(_kernels.BF16_PATHS)})")
    bf16 = _bfloat16()
    rows = []
    for case in cases:
        x = rng.standard_normal(case.shape).astype(np.float32)
        w = rng.standard_normal(case.weight_shape()).astype(np.float32)
        b = rng.standard_normal(case.k).astype(np.float32)
        ms = {k: v * 1e3 for k, v in time_in_blocks(_fns(case, x, w, b, torch, bf16),
                                                      repeats).items()}
        rows.append((case.name, ms))
        print(f"  {case.name}: " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()) + " ms",
              flush=True)
    print()
    print(format_table(rows))
    checks = targets(rows, path)
    if checks:
        print("\nThe bfloat16 targets:")
        for desc, measured, ok in checks:
            print(f"  [{'PASS' if ok else 'FAIL'}] {desc}: {measured}")
    return rows, checks


def format_table(rows):
    head = "case | " + " | ".join(f"{c} ms" for c in COLUMNS) + " | bf16 speed-up | vs torch bf16"
    lines = [head, " | ".join(["---"] * (len(COLUMNS) + 3))]
    for name, ms in rows:
        cells = [f"{ms[c]:.2f}" if c in ms else "-" for c in COLUMNS]
        speedup = ms["fc f32"] / ms["fc bf16"]
        vs_torch = f"{ms['fc bf16'] / ms['torch bf16']:.2f}" if "torch bf16" in ms else "-"
        lines.append(f"{name} | " + " | ".join(cells) + f" | {speedup:.2f}x | {vs_torch}")
    lines.append("bf16 speed-up = fc f32 / fc bf16; vs torch bf16 = fc bf16 / torch bf16 "
                 "(below 1: fastconv faster)")
    return "\n".join(lines)


def targets(rows, path):
    """(description, measured, passed) for the bfloat16 path ``path``."""
    checks = []
    by = dict(rows)
    if path in SPEEDUP:
        need = SPEEDUP[path]
        for name in TARGET_CASES:
            if name in by:
                s = by[name]["fc f32"] / by[name]["fc bf16"]
                checks.append((f"{name}: bf16 >= {need}x float32 ({path})", f"{s:.2f}x",
                               s >= need))
                if path == "amx" and "torch bf16" in by[name]:
                    r = by[name]["fc bf16"] / by[name]["torch bf16"]
                    checks.append((f"{name}: bf16 no slower than torch's", f"{r:.2f}", r <= 1))
    else:
        ratios = [ms["fc bf16 arr"] / ms["convert"] for _, ms in rows if "convert" in ms]
        if ratios:
            worst = max(ratios)
            checks.append(("bfloat16 arrays no slower than converting them to float32 and back",
                           f"worst {worst:.2f}", worst <= 1.0))
    return checks
