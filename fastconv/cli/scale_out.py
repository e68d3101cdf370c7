"""Scale-out benchmark: fastconv.dask on a ``distributed`` cluster of 1 and 2 worker processes.

    python bench/scale_out.py [--size 16384] [--chunk 2048] [--rounds 5] [--quick]
    fastconv bench --dask [--quick]            (the same, with its defaults)

(a) Filtering a large image: a ``size`` x ``size`` float32 image (generated on the workers by
``dask.array.random``, seeded, and kept in their memory: nothing is shipped from this process),
chunked ``chunk`` x ``chunk``, filtered with a 9x9 Gaussian (sigma 2) and a 3x3 Sobel (x) by
``fastconv.dask.filter2d`` and by ``dask_image.ndfilters.correlate`` (SciPy inside), on the same
cluster and chunks, 'reflect' borders (SciPy's 'mirror'); and in this process, on one array, by
``fastconv.filters.filter2d`` (1 thread and every core) and ``scipy.ndimage.correlate``.
(b) Batch inference: the CNN of ``fastconv demo`` (untrained: the time does not depend on the
weights) over ``--images`` random 8x8 images by ``fastconv.dask.predict``.

Each cluster is a fresh ``distributed.LocalCluster`` of N worker processes (started by 'spawn')
with one thread each: their kernels run on one thread (Dask's nanny starts workers with
OMP_NUM_THREADS=1, and fastconv.dask gives a task ``max(1, that budget // tasks at once)``
threads). A timed run computes every output
chunk and keeps one element of it (the chunks are freed as they are made, no image comes back).
Reported: megapixels (or images) per second, the median of ``--rounds`` runs; the speed-up from 1
to 2 workers; and each worker's peak memory during a run above what it held before the run (its
share of the image), from its resident set size sampled every 5 ms, next to the size of one
chunk with its halo (a worker runs one task at a time here).

The machine must be otherwise idle for the numbers to mean anything (and have 2 cores or more
for the 2-worker cluster to be able to scale). ``pip install "fastconv[dask]" dask-image scipy``.
"""
import argparse
import logging
import os
import statistics
import sys
import threading
import time
from typing import Dict, List

import numpy as np

from .. import filters
from .._core.threads import get_num_threads, set_num_threads
from . import CommandError, guard

PROG = "fastconv bench --dask"

DEFAULT_SIZE = 16384
DEFAULT_CHUNK = 2048
DEFAULT_IMAGES = 1_000_000
DEFAULT_IMAGE_CHUNK = 50_000  # images per chunk of the inference batch (12.8 MB of input)
PREDICT_BATCH = 5_000         # images per forward call inside a chunk (bounds the activations)
DEFAULT_ROUNDS = 5
QUICK = dict(size=1024, chunk=256, images=20_000, image_chunk=5_000, rounds=1)
WORKERS = (1, 2)
SAMPLE_S = 0.005
MB = 2**20
SEED = 0


def kernels():
    """(name, 2-D float32 kernel) of the cases."""
    return [("gaussian 9x9", filters.gaussian(2.0, size=9).astype(np.float32)),
            ("sobel 3x3", np.asarray(filters.sobel_x, np.float32))]


# ------------------------------------------------------------------------------ worker memory
# Run on each worker by Client.run (dask_worker is the worker object): a thread samples the
# process's resident set size; a run's peak is read after it, relative to the size just before.
def _sampler_start(dask_worker):
    import psutil

    proc = psutil.Process()
    state = {"peak": proc.memory_info().rss}

    def sample():
        while True:
            rss = proc.memory_info().rss
            if rss > state["peak"]:
                state["peak"] = rss
            time.sleep(SAMPLE_S)

    threading.Thread(target=sample, daemon=True, name="fastconv-rss").start()
    dask_worker._fastconv_rss = state


def _sampler_reset(dask_worker):
    import psutil

    rss = psutil.Process().memory_info().rss
    dask_worker._fastconv_rss["peak"] = rss
    return rss


def _sampler_peak(dask_worker):
    return dask_worker._fastconv_rss["peak"]


def _first_element(block):
    """One element of a chunk (what a timed run keeps of it: the chunk itself is freed)."""
    return block[(slice(0, 1),) * block.ndim].copy()


def _corner(array):
    """``array`` reduced to one element per chunk (a graph that computes every chunk)."""
    return array.map_blocks(_first_element, chunks=tuple((1,) * len(c) for c in array.chunks),
                            dtype=array.dtype)


# ------------------------------------------------------------------------------ timing
def _timed_runs(client, runs, rounds):
    """``runs``: {name: zero-argument function building a graph}. Each round computes every
    graph once, the order rotating between rounds; returns {name: (median seconds, worker peak
    bytes above the size before the run, the largest over the rounds and workers)}."""
    names = list(runs)
    times: Dict[str, List[float]] = {n: [] for n in names}
    extra = {n: 0 for n in names}
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            graph = runs[name]()
            before = client.run(_sampler_reset)
            t0 = time.perf_counter()
            graph.compute()
            times[name].append(time.perf_counter() - t0)
            peaks = client.run(_sampler_peak)
            extra[name] = max([extra[name]] + [peaks[w] - before[w] for w in peaks])
    return {n: (statistics.median(times[n]), extra[n]) for n in names}


def _timed_local(fn, rounds):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------ the cluster
def _cluster(n_workers):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           memory_limit=0, dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    client.run(_sampler_start)
    return cluster, client


def _filter_runs(args, client, n_workers, dask_image):
    """The image runs on one cluster: {(kernel, implementation): (seconds, extra bytes)}."""
    import dask.array as da
    from distributed import wait

    from .. import dask as fcd

    image = da.random.default_rng(SEED).random((args.size, args.size), dtype=np.float32,
                                                chunks=args.chunk)
    image = client.persist(image)
    wait(image)
    small = da.ones((64, 64), np.float32, chunks=32)  # warm-up: imports on the workers
    results = {}
    for kname, k in kernels():
        runs = {"fastconv.dask": lambda: _corner(fcd.filter2d(image, k, "reflect"))}
        _corner(fcd.filter2d(small, k, "reflect")).compute()
        if dask_image is not None:
            runs["dask_image (SciPy)"] = lambda: _corner(
                dask_image.correlate(image, k, mode="mirror"))
            _corner(dask_image.correlate(small, k, mode="mirror")).compute()
        for impl, value in _timed_runs(client, runs, args.rounds).items():
            results[(kname, impl)] = value
        print(f"  {n_workers} worker(s), {kname}: done", flush=True)
    return results


def _predict_runs(args, client):
    import dask.array as da
    from distributed import wait

    from .. import dask as fcd
    from .demo import build_model

    model = build_model((8, 8), rng=SEED)
    x = da.random.default_rng(SEED).random((args.images, 1, 8, 8), dtype=np.float32,
                                            chunks=(args.image_chunk, 1, 8, 8))
    x = client.persist(x)
    wait(x)
    _corner(fcd.predict(model, x[:10], batch_size=PREDICT_BATCH)).compute()  # warm-up
    runs = {"fastconv.dask.predict": lambda: _corner(fcd.predict(model, x,
                                                                 batch_size=PREDICT_BATCH))}
    return _timed_runs(client, runs, args.rounds)


def _on_clusters(args, dask_image):
    """{n_workers: (filter results, predict results)}, a fresh cluster for each count (so that
    nothing one count left in a worker's memory counts for another)."""
    out = {}
    for n in WORKERS:
        cluster, client = _cluster(n)
        try:
            filt = _filter_runs(args, client, n, dask_image) if not args.no_filters else {}
            pred = _predict_runs(args, client) if not args.no_predict else {}
        finally:
            client.close()
            cluster.close()
        out[n] = (filt, pred)
    return out


# ------------------------------------------------------------------------------ in this process
def _local_filter_runs(args, ndi):
    """{(kernel, implementation): seconds} on one array in this process."""
    rng = np.random.default_rng(SEED)
    image = rng.random((args.size, args.size), dtype=np.float32)
    out = {}
    cores = get_num_threads()
    before = cores
    try:
        for kname, k in kernels():
            for threads in sorted({1, cores}):
                set_num_threads(threads)
                filters.filter2d(image[:64, :64], k, "reflect")
                out[(kname, f"fastconv.filters, {threads} thread(s)")] = _timed_local(
                    lambda: filters.filter2d(image, k, "reflect"), args.rounds)
            if ndi is not None:
                out[(kname, "scipy.ndimage.correlate")] = _timed_local(
                    lambda: ndi.correlate(image, k, mode="mirror"), args.rounds)
    finally:
        set_num_threads(before)
    return out


def _local_predict(args):
    from .demo import build_model

    model = build_model((8, 8), rng=SEED).eval()
    x = np.random.default_rng(SEED).random((args.images, 1, 8, 8), dtype=np.float32)
    before = get_num_threads()
    set_num_threads(1)
    try:
        def run():
            for i in range(0, len(x), PREDICT_BATCH):
                model(x[i:i + PREDICT_BATCH])
        return _timed_local(run, args.rounds)
    finally:
        set_num_threads(before)


# ------------------------------------------------------------------------------ report
def _num(v):
    """A rate or size: whole numbers from 100 up, three significant digits below."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def filter_table(args, clustered, local):
    """The markdown table of the image runs."""
    mpx = args.size * args.size / 1e6
    halo_mb = {kname: (args.chunk + 2 * (k.shape[0] // 2)) ** 2 * 4 / MB for kname, k in kernels()}
    lines = ["filter | implementation | workers | MPx/s | 1 -> 2 workers | worker peak MB "
             "(above its share of the image) | chunk + halo MB",
             "--- | --- | --- | --- | --- | --- | ---"]
    for kname, _ in kernels():
        impls = dict.fromkeys(impl for (kn, impl) in clustered.get(1, {}) if kn == kname)
        for impl in impls:
            one = clustered[1][(kname, impl)][0]
            for n in WORKERS:
                sec, extra = clustered[n][(kname, impl)]
                speedup = f"{one / sec:.2f}x" if n != 1 else ""
                lines.append(f"{kname} | {impl} | {n} | {_num(mpx / sec)} | {speedup} | "
                             f"{_num(extra / MB)} | {_num(halo_mb[kname])}")
        for (kn, impl), sec in local.items():
            if kn == kname:
                lines.append(f"{kname} | {impl} | - (this process) | {_num(mpx / sec)} | | - | -")
    return "\n".join(lines)


def predict_table(args, clustered, local_sec):
    lines = ["implementation | workers | images/s | 1 -> 2 workers | worker peak MB (above its "
             "share of the input)", "--- | --- | --- | --- | ---"]
    one = clustered[1]["fastconv.dask.predict"][0]
    for n in WORKERS:
        sec, extra = clustered[n]["fastconv.dask.predict"]
        speedup = f"{one / sec:.2f}x" if n != 1 else ""
        lines.append(f"fastconv.dask.predict | {n} | {_num(args.images / sec)} | {speedup} | "
                     f"{_num(extra / MB)}")
    if local_sec is not None:
        lines.append(f"fastconv.nn model, 1 thread | - (this process) | "
                     f"{_num(args.images / local_sec)} | | -")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ CLI
def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser():
    p = argparse.ArgumentParser(prog="scale_out.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=_positive, default=None,
                   help=f"image side in pixels (default {DEFAULT_SIZE}; --quick {QUICK['size']})")
    p.add_argument("--chunk", type=_positive, default=None,
                   help=f"chunk side in pixels (default {DEFAULT_CHUNK}; --quick {QUICK['chunk']})")
    p.add_argument("--images", type=_positive, default=None,
                   help=f"8x8 images to classify (default {DEFAULT_IMAGES:,}; --quick "
                        f"{QUICK['images']:,})")
    p.add_argument("--image-chunk", type=_positive, default=None,
                   help=f"images per chunk (default {DEFAULT_IMAGE_CHUNK:,}; --quick "
                        f"{QUICK['image_chunk']:,})")
    p.add_argument("--rounds", type=_positive, default=None,
                   help=f"timed runs of each case, the median reported (default {DEFAULT_ROUNDS};"
                        f" --quick {QUICK['rounds']})")
    p.add_argument("--quick", action="store_true", help="small sizes: checks that it all runs")
    p.add_argument("--no-filters", action="store_true", help="skip the image filtering")
    p.add_argument("--no-predict", action="store_true", help="skip the batch inference")
    p.add_argument("--no-peers", action="store_true",
                   help="skip dask_image and SciPy (fastconv only)")
    return p


def _defaults(args):
    preset = QUICK if args.quick else dict(size=DEFAULT_SIZE, chunk=DEFAULT_CHUNK,
                                           images=DEFAULT_IMAGES, image_chunk=DEFAULT_IMAGE_CHUNK,
                                           rounds=DEFAULT_ROUNDS)
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _peers(args):
    """(dask_image.ndfilters, scipy.ndimage), each None when missing or not wanted."""
    if args.no_peers or args.no_filters:
        return None, None
    try:
        import dask_image.ndfilters as dask_image
    except ImportError:
        print("dask-image is not installed: its rows are left out")
        dask_image = None
    try:
        import scipy.ndimage as ndi
    except ImportError:
        print("SciPy is not installed: its row is left out")
        ndi = None
    return dask_image, ndi


def run(args):
    """Run the benchmark with parsed ``args``; prints the tables, returns 0."""
    args = _defaults(args)
    try:
        import distributed  # noqa: F401
        import psutil  # noqa: F401

        from .. import dask  # noqa: F401
    except ImportError as exc:
        raise CommandError(f"the scale-out benchmark needs fastconv.dask and distributed "
                           f'(pip install "fastconv[dask]"): {exc}') from None
    dask_image, ndi = _peers(args)
    print(f"{os.cpu_count()} logical CPUs; image {args.size}x{args.size} float32 in "
          f"{args.chunk}x{args.chunk} chunks; {args.images:,} 8x8 images in chunks of "
          f"{args.image_chunk:,}; median of {args.rounds} run(s)", flush=True)
    clustered = _on_clusters(args, dask_image)
    if not args.no_filters:
        local = _local_filter_runs(args, ndi)
        print("\n" + filter_table(args, {n: f for n, (f, _) in clustered.items()}, local))
    if not args.no_predict:
        local_sec = _local_predict(args)
        print("\n" + predict_table(args, {n: p for n, (_, p) in clustered.items()}, local_sec))
    return 0


def main(argv=None):
    """The exit status follows :func:`fastconv.cli.guard`."""
    parser = build_parser()
    return guard(PROG, lambda: run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
