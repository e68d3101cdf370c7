"""Pooling forward and backward passes timed separately on (64, 64, 32, 32) float32, 2 threads:
fastconv, torch (needed) and fastconv.reference in one run, medians.

    python3 bench/pooling_passes.py
"""
import numpy as np, time, torch, fastconv, fastconv.reference as ref
torch.set_num_threads(2); fastconv.set_num_threads(2)
x = np.random.default_rng(0).standard_normal((64,64,32,32)).astype(np.float32)
xt = torch.from_numpy(x)
def med(f, rep):
    for _ in range(2): f()
    ts=[]
    for _ in range(rep):
        a=time.perf_counter(); f(); ts.append(time.perf_counter()-a)
    return np.median(ts)*1e3
F = torch.nn.functional
for name, kw, op in [("max 2x2/s2", dict(kernel_size=2, stride=2), "max"), ("max 3x3/s2/p1", dict(kernel_size=3, stride=2, padding=1), "max"), ("avg 2x2/s2", dict(kernel_size=2, stride=2), "avg")]:
    if op == "max":
        y, idx = fastconv.max_pool2d(x, return_indices=True, **kw); g = np.ones_like(y)
        fc_f = lambda: fastconv.max_pool2d(x, **kw); fc_b = lambda: fastconv.max_pool2d_backward(g, idx, x.shape)
        rf_f = lambda: ref.max_pool2d(x, **kw); rf_b = lambda: ref.max_pool2d_backward(g, idx, x.shape)
        yt, it = F.max_pool2d(xt, return_indices=True, **kw); gt = torch.ones_like(yt)
        tf = lambda: F.max_pool2d(xt, **kw)
        tb = lambda: torch.ops.aten.max_pool2d_with_indices_backward(gt, xt, kw["kernel_size"], kw["stride"], kw.get("padding", 0), 1, False, it)
    else:
        y = fastconv.avg_pool2d(x, **kw); g = np.ones_like(y)
        fc_f = lambda: fastconv.avg_pool2d(x, **kw); fc_b = lambda: fastconv.avg_pool2d_backward(g, x.shape, **kw)
        rf_f = lambda: ref.avg_pool2d(x, **kw); rf_b = lambda: ref.avg_pool2d_backward(g, x.shape, **kw)
        gt = torch.ones(y.shape)
        tf = lambda: F.avg_pool2d(xt, **kw)
        tb = lambda: torch.ops.aten.avg_pool2d_backward(gt, xt, [kw["kernel_size"]]*2, [kw["stride"]]*2, [0,0], False, True, None)
    with torch.no_grad():
        r = [med(fc_f, 30), med(fc_b, 30), med(tf, 30), med(tb, 30), med(rf_f, 3), med(rf_b, 3)]
    print(f"{name:14s} fwd: fastconv {r[0]:.2f} ms, torch {r[2]:.2f}, reference {r[4]:.1f} | bwd: fastconv {r[1]:.2f}, torch {r[3]:.2f}, reference {r[5]:.1f}")
