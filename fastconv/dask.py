r"""fastconv on Dask arrays: image filters of any size, conv2d and pooling over a batch, and a
trained :mod:`fastconv.nn` model's predictions, computed chunk by chunk by fastconv's kernels.

Needs the dask extra: ``pip install "fastconv[dask]"`` (dask[array], distributed, zarr,
tifffile). ``import fastconv`` never imports Dask; this module does.

Every function builds a lazy Dask array (nothing is computed until ``.compute()``,
``.to_zarr()``, ``da.store`` ...). Any scheduler runs it: the default threaded one, a
``distributed`` cluster (worker processes or threads), or the synchronous one.

Data flow of :func:`filter2d`
-----------------------------
An ``(H, W)`` or ``(H, W, C)`` image chunked in any way is filtered chunk by chunk. For an
``R x S`` kernel the output pixel ``(i, j)`` lines up with kernel element ``((R - 1) // 2,
(S - 1) // 2)`` (as in :func:`fastconv.filters.filter2d`, even sizes included), so it reads
``(R - 1) // 2`` rows above and ``R - 1 - (R - 1) // 2`` below (columns likewise): every chunk
needs a *halo* of ``R // 2`` rows and ``S // 2`` columns (the deeper of the two sides) from each
neighbour it has. The graph has two tasks per chunk and no other stage:

1. *edges*: the chunk cuts the rows and columns its up to 8 neighbours read (its first and last
   ``R // 2`` rows, ``S // 2`` columns and the corners where they meet): small copies, and the
   only data a distributed scheduler moves between workers (never a whole chunk);
2. *filter*: the filter engine runs on the chunk where it lies, as an image of its own (no copy
   of it), which gives every output but the thin frames within the kernel's reach of a side
   with a neighbour; those are computed again from small images of the chunk's border pixels
   and the neighbours' edges (output windows of the engine: only those outputs) and written
   over. A chunk too small for the padding mode on its own is put together with its whole halo
   and filtered in the window of its own pixels.

**Border rule.** The padding mode applies at the border of the whole image only, never at a
chunk's: a side of a chunk that is on the image's border gets no halo there, and the filter
engine extends it by the padding mode itself, exactly as it extends the whole image in the
single-array call (``'zeros'``, ``'reflect'``, ``'replicate'``: everything such a side reads is
in the chunk and its inner halo). ``'circular'`` reads the opposite border: along an axis split
into several chunks, the chunks at the ends are each other's neighbours. An axis in one chunk
gets no halo (the engine extends it by the mode). The filter engine computes every output element
from the values it reads, in tap order, whatever the image around it and wherever the window
is, so the result is **bitwise** the single-array ``fastconv.filters.filter2d(image.compute(),
...)`` for every chunking, dtype, ``output_dtype`` and kernel, separable or not.

A halo deeper than a chunk (a chunk smaller than ``R // 2`` rows or ``S // 2`` columns, e.g. an
uneven last chunk) cannot be filled from the neighbours alone: the image is then rechunked so
that every chunk is at least the halo (a :class:`PerformanceWarning` says so and suggests a
chunking), and the result is rechunked back to the input's chunks.

Memory
------
A filter task holds the outputs of its chunk (one per kernel of a bank) and the small frame
images: about ``chunk x F`` elements besides the input chunk (``(chunk + halo) x (1 + F)`` for a
chunk put together with its halo), never the whole image (as long as the chunks themselves are
reasonable: 1-32 MB each is Dask's advice). Large buffers come from the kernels' recycling
allocator, so a worker's tasks reuse them instead of page-faulting new ones. For conv2d, pooling
and :func:`predict`, a task holds one batch chunk, its output, the layers' activations and the
weights.

Batches: conv2d, pooling, predict
---------------------------------
:func:`conv2d`, :func:`max_pool2d` and :func:`avg_pool2d` take an NCHW array chunked along the
batch axis N: each chunk is one call of the NumPy function (``fastconv.conv2d`` ...), whose
results do not depend on the batch, so the result is bitwise the single-array call. ``C``, ``H``
and ``W`` must each be one chunk (an array chunked along them is rechunked to whole images
first: a chunk then holds a slice of whole images). :func:`predict` runs a model's forward
(evaluation mode) chunk by chunk in the same way. The weights (or the model) enter the graph as
ONE key, on which every task depends: a distributed scheduler sends them to each worker once,
not with every task, and a worker's tasks share its copy.

Threads
-------
fastconv's kernels are multi-threaded (OpenMP) and a scheduler runs several tasks at once, so a
task limits the kernels of its own thread (OpenMP's per-thread limit; other threads and the
process-wide :func:`fastconv.set_num_threads` are left alone, and the limit is put back after the
task) to ::

    max(1, fastconv.get_num_threads() // tasks_at_once)

where ``fastconv.get_num_threads()`` is the process's budget (``OMP_NUM_THREADS``, the number of
cores, or :func:`fastconv.set_num_threads`'s value) and ``tasks_at_once`` is the number of tasks
the scheduler runs at once in this process: a ``distributed`` worker's thread count
(``threads_per_worker``), the threaded scheduler's pool size (``dask.config`` ``num_workers``, by
default the number of cores), 1 for the synchronous scheduler. So a 2-thread worker on a 2-core
budget runs each task's kernels on 1 thread, and the cores are never oversubscribed. A
``distributed`` nanny starts its worker processes with ``OMP_NUM_THREADS=1`` (Dask's default
``distributed.nanny.pre-spawn-environ``): their kernels then run on one thread each, and the
parallelism comes from the tasks. Results never depend on the thread count.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import sys
import threading
import warnings
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple,
                    TypeVar, Union)

import numpy as np

from . import filters as _filters
from . import functional as _functional
from ._core.threads import get_num_threads

if TYPE_CHECKING:
    from dask.delayed import Delayed
    from numpy.typing import ArrayLike, DTypeLike, NDArray

    from ._core.args import IntOrPair, Padding
    from .filters import KernelLike
    from .nn import Module

    _M = TypeVar("_M", bound=Module)

__all__ = ["filter2d", "correlate", "convolve", "conv2d", "max_pool2d", "avg_pool2d", "predict",
           "forward", "PerformanceWarning"]

_INSTALL = 'pip install "fastconv[dask]"'


try:
    import dask
    import dask.array as da
    from dask.array.core import PerformanceWarning
    from dask.delayed import delayed
except ImportError as exc:  # the extra is not installed
    raise ImportError(f"fastconv.dask needs Dask: {_INSTALL} (dask[array], distributed, zarr, "
                      f"tifffile); importing dask.array failed: {exc}") from exc


def _check_dask_array(x: object, name: str) -> da.Array:
    if not isinstance(x, da.Array):
        raise TypeError(f"{name} must be a dask array (dask.array.Array; e.g. "
                        f"dask.array.from_array(a, chunks=...)), got {type(x).__name__}")
    if any(np.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError(f"{name} has unknown chunk sizes (nan): call {name}.compute_chunk_sizes()"
                         " first")
    return x


def _shared(value: object, what: str) -> Delayed:
    """``value`` as one key of the graph (a Delayed) that every task depends on: a distributed
    scheduler ships it to each worker once, not once per task."""
    return delayed(value, name=f"fastconv-{what}-{dask.base.tokenize(value)}", pure=True,
                   traverse=False)


# ---------------------------------------------------------------------------------- threads
def _tasks_at_once() -> int:
    """How many tasks the scheduler running this one runs at once in this process."""
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker
            worker = get_worker()
        except (ImportError, ValueError):
            worker = None
        if worker is not None:
            state = getattr(worker, "state", None)
            # read by name: where a worker keeps its thread count depends on the version
            n: Any = getattr(state, "nthreads", None) or getattr(worker, "nthreads", 1)
            return max(1, int(n))
    if threading.current_thread() is threading.main_thread():
        return 1  # the synchronous scheduler (or a direct call)
    n = dask.config.get("num_workers", None)
    if not n:
        from dask.system import CPU_COUNT
        n = CPU_COUNT
    return max(1, int(n))


def task_threads() -> int:
    """The kernel threads a task uses here: ``max(1, get_num_threads() // tasks at once)`` (see
    the module's documentation)."""
    return max(1, get_num_threads() // _tasks_at_once())


@contextlib.contextmanager
def _task_thread_limit() -> Iterator[None]:
    """The calling thread's kernels limited to :func:`task_threads`, restored afterwards."""
    from . import _kernels
    previous = _kernels.thread_limit(task_threads())
    try:
        yield
    finally:
        _kernels.thread_limit(previous)


# --------------------------------------------------------------------------------- filter2d
def _native(dtype: DTypeLike) -> np.dtype[Any]:
    dtype = np.dtype(dtype)
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def _axis_chunks(chunks: Sequence[int], depth: int) -> Tuple[int, ...]:
    """The chunks of one axis with every chunk >= depth (neighbours merged), or one chunk."""
    if len(chunks) == 1 or min(chunks) >= depth:
        return tuple(chunks)
    if sum(chunks) < 2 * depth:
        return (sum(chunks),)
    out: List[int] = []
    run = 0
    for c in chunks:
        run += c
        if run >= depth:
            out.append(run)
            run = 0
    if run:
        out[-1] += run
    return tuple(out)


def filter2d(image: da.Array, kernel: KernelLike, padding_mode: str = "reflect",
             mode: str = "correlate", *, separable: Optional[bool] = None,
             output_dtype: Union[DTypeLike, str, None] = None) -> da.Array:
    r"""Filter a Dask image with a 2-D kernel or a bank of kernels: the single-array
    :func:`fastconv.filters.filter2d` chunk by chunk, each chunk with the halo the kernel needs,
    the padding mode at the border of the whole image only. Lazy: returns a Dask array.

    Args:
        image: a dask array ``(H, W)`` or ``(H, W, C)`` of uint8, uint16, float16, float32 or
            float64, of any size and chunking (a chunk smaller than the halo is merged with its
            neighbours, with a :class:`PerformanceWarning`; the channel axis may be chunked).
        kernel: as :func:`fastconv.filters.filter2d`: a 2-D array ``(R, S)``, a kernel name, or a
            bank: an ``(F, R, S)`` array or a sequence of names or 2-D arrays of one shape.
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``: how the whole
            image is extended beyond its border. Default: ``'reflect'``.
        mode: ``'correlate'`` or ``'convolve'``. Default: ``'correlate'``.
        separable: ``None``, ``True`` or ``False``, as :func:`fastconv.filters.filter2d`.
        output_dtype: as :func:`fastconv.filters.filter2d` (default: the image's dtype).

    Returns:
        a dask array of the image's shape and chunks (a bank: ``(F, H, W[, C])``, the new leading
        axis ``F`` one chunk), bitwise equal to
        ``fastconv.filters.filter2d(image.compute(), kernel, ...)``.

    Raises:
        TypeError if ``image`` is not a dask array; the errors of
        :func:`fastconv.filters.filter2d` for the other arguments (when the graph is built).
    """
    _check_dask_array(image, "image")
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    dtype = _native(image.dtype)
    if dtype.type not in _filters.IMAGE_DTYPES:
        raise TypeError("image must be a uint8, uint16, float16, float32 or float64 array, got "
                        f"dtype {image.dtype}")
    # every other argument checked now, once: the plan each task runs
    plan = _filters._filter_plan(dtype, kernel, padding_mode, mode, separable=separable,
                                 output_dtype=output_dtype)
    f, r, s = plan.kernels.shape
    lead = (f,) if plan.bank else ()
    if 0 in image.shape:
        return da.empty(lead + image.shape, dtype=plan.out_dtype,
                        chunks=(((f,),) if plan.bank else ()) + image.chunks)
    _filters._check_fits(image.shape, (r, s), padding_mode)
    depth = (r // 2, s // 2)  # the deeper side: max((R - 1) // 2, R - 1 - (R - 1) // 2)
    chunks = [_axis_chunks(image.chunks[a], depth[a]) for a in (0, 1)]
    x = image
    if tuple(chunks) != image.chunks[:2]:
        smallest = tuple(min(c) for c in image.chunks[:2])
        warnings.warn(
            f"fastconv.dask.filter2d: a {r}x{s} kernel needs a halo of {depth[0]} rows and "
            f"{depth[1]} columns, deeper than the smallest chunk {smallest}: the image is "
            f"rechunked to chunks of at least the halo for the filter and the result back to the "
            f"input's chunks. Chunks of at least {depth[0]}x{depth[1]} (the last ones included) "
            f"avoid this.", PerformanceWarning, stacklevel=2)
        x = image.rechunk(tuple(chunks) + image.chunks[2:])
    y = _filter_graph(x, plan, depth, periodic=padding_mode == "circular")
    if x.chunks != image.chunks:
        y = y.rechunk((((f,),) if plan.bank else ()) + image.chunks)
    return y


# A chunk's halo comes from its up to 8 neighbours, each of which is at offset (a, b) from it,
# a and b in {-1, 0, 1}: the neighbour above (a = -1) gives its last rows, the one below its first
# rows, one beside it (a = 0) all its rows; columns likewise.
_SIDES = tuple((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0))


def _neighbour(i: int, step: int, n: int, depth: int, periodic: bool) -> Optional[int]:
    """The index of the chunk ``step`` chunks from chunk ``i`` of an axis of ``n`` chunks, or None
    where there is none (no halo on that axis; the image's border, unless it wraps around)."""
    if step == 0:
        return i
    if depth == 0 or n == 1:
        return None
    j = i + step
    return j % n if periodic else (j if 0 <= j < n else None)


def _filter_graph(x: da.Array, plan: _filters._FilterPlan, depth: Tuple[int, int],
                  periodic: bool) -> da.Array:
    """The graph of :func:`filter2d` on ``x``, whose chunks are all at least ``depth``: per chunk,
    a small task that cuts the rows and columns its neighbours read (its *edges*), and the task
    that builds the chunk with its halo from its own data and its neighbours' edges and computes
    the outputs of its own pixels only (a window of the filter engine: no crop). A distributed
    scheduler moves only the edges between workers, never a whole chunk."""
    from dask.highlevelgraph import HighLevelGraph

    token = dask.base.tokenize(x.name, plan, depth, periodic)
    name, edges = f"fastconv-filter2d-{token}", f"fastconv-filter2d-edges-{token}"
    nb = x.numblocks
    depth = (depth[0] if nb[0] > 1 else 0, depth[1] if nb[1] > 1 else 0)  # 1 chunk: no halo
    plan_key = _shared(plan, "filter-plan")
    lead = (0,) if plan.bank else ()
    dsk: Dict[Any, Any] = {}
    for idx in np.ndindex(*nb):
        dsk[(edges,) + idx] = (functools.partial(_edges, depth=depth), (x.name,) + idx)
        sides, keys = [], []
        for a, b in _SIDES:
            i = _neighbour(idx[0], a, nb[0], depth[0], periodic)
            j = _neighbour(idx[1], b, nb[1], depth[1], periodic)
            if i is not None and j is not None:
                sides.append((a, b))
                keys.append((edges, i, j) + tuple(idx[2:]))
        task = functools.partial(_filter_chunk, depth=depth, sides=tuple(sides))
        dsk[(name,) + lead + idx] = (task, (x.name,) + idx, keys, plan_key.key)
    # (Any: dask's DaskCollection protocol types __dask_scheduler__ as a staticmethod, its own
    # collections as a function, so its stubs refuse its own arrays)
    deps: List[Any] = [x, plan_key]
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    chunks = (((len(plan.kernels),),) if plan.bank else ()) + x.chunks
    meta: NDArray[Any] = np.empty((0,) * len(chunks), plan.out_dtype)
    return da.Array(graph, name, chunks, meta=meta)


def _edges(block: NDArray[Any], depth: Tuple[int, int]) -> Dict[Tuple[int, int], NDArray[Any]]:
    """The parts of ``block`` its neighbours read, keyed by where the block is seen from the
    neighbour that reads it (as ``_SIDES``: (-1, 0), the block above it, gives its last rows).
    Copies: small to send, and they do not keep the block alive."""
    rows = {-1: slice(block.shape[0] - depth[0], None), 0: slice(None), 1: slice(0, depth[0])}
    cols = {-1: slice(block.shape[1] - depth[1], None), 0: slice(None), 1: slice(0, depth[1])}
    return {(a, b): np.array(block[rows[a], cols[b]]) for a, b in _SIDES
            if (a == 0 or depth[0]) and (b == 0 or depth[1])}


def _filter_chunk(center: NDArray[Any], edges: List[Dict[Tuple[int, int], NDArray[Any]]],
                  plan: _filters._FilterPlan, depth: Tuple[int, int],
                  sides: Tuple[Tuple[int, int], ...]) -> NDArray[Any]:
    """The outputs of ``center``'s pixels, given the ``edges`` of its neighbours on ``sides``.

    The chunk is filtered where it lies, as an image of its own: that gives every output right
    but those within the kernel's reach of a side with a neighbour (there the engine would read
    the padding mode instead of the neighbour's pixels). Those thin frames are then computed again
    from small images of the chunk's border pixels and the neighbours' edges, and written over.
    So the chunk itself is never copied (a filter this cheap is bound by memory traffic). A chunk
    too small for the padding mode on its own is put together with its whole halo instead."""
    pieces = dict(zip(sides, (e[side] for side, e in zip(sides, edges))))
    img = center.astype(_native(center.dtype), copy=False)
    with _task_thread_limit():
        if not sides:
            return _filters._apply_plan(plan, img)
        try:
            _filters._check_fits(img.shape, plan.kernels.shape[1:], plan.padding_mode)
        except ValueError:  # the chunk alone is too small for the padding mode
            h, w = img.shape[:2]
            ext, top, left = _assemble(img, pieces, depth, (0, h), (0, w))
            return _filters._apply_plan(plan, ext, (top, left, h, w))
        return _filter_in_place(img, pieces, plan, depth)


def _filter_in_place(img: NDArray[Any], pieces: Dict[Tuple[int, int], NDArray[Any]],
                     plan: _filters._FilterPlan, depth: Tuple[int, int]) -> NDArray[Any]:
    """:func:`_filter_chunk`'s way for a chunk that fits the padding mode on its own."""
    h, w = img.shape[:2]
    r, s = plan.kernels.shape[1:]
    up, down, left, right = (r - 1) // 2, r - 1 - (r - 1) // 2, (s - 1) // 2, s - 1 - (s - 1) // 2
    y = _filters._apply_plan(plan, img)
    # the frames (output rows [o0, o1), columns [p0, p1)) that read a neighbour's pixels
    frames = []
    top, bottom = (-1, 0) in pieces, (1, 0) in pieces
    if top:
        frames.append((0, min(up, h), 0, w))
    if bottom:
        frames.append((max(h - down, 0), h, 0, w))
    r0, r1 = (min(up, h) if top else 0), (max(h - down, 0) if bottom else h)
    if (0, -1) in pieces:
        frames.append((r0, r1, 0, min(left, w)))
    if (0, 1) in pieces:
        frames.append((r0, r1, max(w - right, 0), w))
    lead = (slice(None),) if plan.bank else ()
    for o0, o1, p0, p1 in frames:
        if o0 >= o1 or p0 >= p1:
            continue
        a, b = max(0, o0 - up), min(h, o1 + down)     # the chunk's rows and columns they read
        c, d = max(0, p0 - left), min(w, p1 + right)
        sub, above, before = _assemble(img, pieces, depth, (a, b), (c, d))
        y[lead + (slice(o0, o1), slice(p0, p1))] = _filters._apply_plan(
            plan, sub, (above + o0 - a, before + p0 - c, o1 - o0, p1 - p0))
    return y


def _assemble(img: NDArray[Any], pieces: Dict[Tuple[int, int], NDArray[Any]],
              depth: Tuple[int, int], rows: Tuple[int, int], cols: Tuple[int, int]
              ) -> Tuple[NDArray[Any], int, int]:
    """``(sub, top, left)``: rows [a, b) and columns [c, d) of the chunk ``img`` as one image,
    with the neighbours' edges (``pieces``, by side) around it where the range reaches the
    chunk's side and there is a neighbour; ``top`` and ``left`` halo rows and columns lead."""
    from . import _kernels
    (a, b), (c, d) = rows, cols
    h, w = img.shape[:2]
    top = depth[0] if a == 0 and (-1, 0) in pieces else 0
    bottom = depth[0] if b == h and (1, 0) in pieces else 0
    left = depth[1] if c == 0 and (0, -1) in pieces else 0
    right = depth[1] if d == w and (0, 1) in pieces else 0
    # from the kernels' recycling allocator: a big one reuses a freed buffer, no page faults
    sub = _kernels.empty((top + b - a + bottom, left + d - c + right) + img.shape[2:], img.dtype)
    dst_rows = {-1: slice(0, top), 0: slice(top, top + b - a), 1: slice(top + b - a, None)}
    dst_cols = {-1: slice(0, left), 0: slice(left, left + d - c), 1: slice(left + d - c, None)}
    src_rows = {-1: slice(None), 0: slice(a, b), 1: slice(None)}
    src_cols = {-1: slice(None), 0: slice(c, d), 1: slice(None)}
    extent = {(-1, 0): top, (1, 0): bottom, (0, -1): left, (0, 1): right}
    sub[dst_rows[0], dst_cols[0]] = img[a:b, c:d]
    for (sa, sb), piece in pieces.items():
        if (sa and not extent[(sa, 0)]) or (sb and not extent[(0, sb)]):
            continue  # the range does not reach that side
        sub[dst_rows[sa], dst_cols[sb]] = piece[src_rows[sa], src_cols[sb]]
    return sub, top, left


def correlate(image: da.Array, kernel: KernelLike, padding_mode: str = "reflect", *,
              separable: Optional[bool] = None,
              output_dtype: Union[DTypeLike, str, None] = None) -> da.Array:
    """:func:`filter2d` with ``mode='correlate'`` (``sum f(x+u, y+v) g(u, v)``)."""
    return filter2d(image, kernel, padding_mode, "correlate", separable=separable,
                    output_dtype=output_dtype)


def convolve(image: da.Array, kernel: KernelLike, padding_mode: str = "reflect", *,
             separable: Optional[bool] = None,
             output_dtype: Union[DTypeLike, str, None] = None) -> da.Array:
    """:func:`filter2d` with ``mode='convolve'`` (the kernel flipped by a half turn)."""
    return filter2d(image, kernel, padding_mode, "convolve", separable=separable,
                    output_dtype=output_dtype)


# --------------------------------------------------------------------------- batches (NCHW)
def _batch_array(x: da.Array, name: str, ndim: Optional[int] = 4) -> da.Array:
    """``x``, a dask array chunked along axis 0 only (the other axes rechunked to one chunk)."""
    _check_dask_array(x, name)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be a 4-D (N, C, H, W) dask array, got shape {x.shape}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch axis, got shape {x.shape}")
    if any(len(c) > 1 for c in x.chunks[1:]):
        x = x.rechunk((x.chunks[0],) + tuple(-1 for _ in x.shape[1:]))
    return x


def _batch_map(func: Callable[..., Any], x: da.Array, out: NDArray[Any], *args: Any, token: str,
               **kwargs: Any) -> da.Array:
    """``func(chunk, *args, **kwargs)`` on every batch chunk of ``x``; ``out`` is the output of
    the probe call (an empty batch, or one sample), giving the shape and dtype of a sample."""
    return da.map_blocks(
        func, x, *args, chunks=(x.chunks[0],) + tuple((n,) for n in out.shape[1:]),
        dtype=out.dtype, drop_axis=list(range(1, x.ndim)) or None,
        new_axis=list(range(1, out.ndim)) or None, meta=np.empty((0,) * out.ndim, out.dtype),
        token=token, **kwargs)


def _empty_batch(x: da.Array) -> NDArray[Any]:
    return np.zeros((0,) + x.shape[1:], _native(x.dtype))


def _call_in_task(chunk: NDArray[Any], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with _task_thread_limit():
        return fn(chunk, *args, **kwargs)


def conv2d(x: da.Array, weight: ArrayLike, bias: Optional[ArrayLike] = None,
           stride: IntOrPair = 1, padding: Padding = 0, dilation: IntOrPair = 1,
           groups: int = 1) -> da.Array:
    """:func:`fastconv.conv2d` over a batch chunked along N (lazy).

    Args:
        x: a dask array ``(N, C, H, W)`` of float32 or float64, chunked along N (``C``, ``H`` and
            ``W`` chunked are first rechunked to one chunk each, i.e. whole images).
        weight, bias, stride, padding, dilation, groups: as :func:`fastconv.conv2d` (NumPy
            arrays; the weight and bias enter the graph as one key each, shipped once per worker).

    Returns:
        a dask array ``(N, K, OH, OW)`` chunked as ``x`` along N, bitwise equal to
        ``fastconv.conv2d(x.compute(), weight, ...)``.
    """
    x = _batch_array(x, "x")
    weight = np.asarray(weight)
    bias = None if bias is None else np.asarray(bias)
    kwargs: Dict[str, Any] = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    out = _functional.conv2d(_empty_batch(x), weight, bias, **kwargs)  # checks every argument
    w = _shared(weight, "weight")
    b = None if bias is None else _shared(bias, "bias")
    return _batch_map(_call_in_task, x, out, _functional.conv2d, w, b, token="fastconv-conv2d",
                      **kwargs)


def max_pool2d(x: da.Array, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
               padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False
               ) -> da.Array:
    """:func:`fastconv.max_pool2d` over a batch chunked along N (lazy); ``x`` as in
    :func:`conv2d`, the other arguments as :func:`fastconv.max_pool2d`. Bitwise the
    single-array result."""
    x = _batch_array(x, "x")
    kwargs: Dict[str, Any] = dict(kernel_size=kernel_size, stride=stride, padding=padding,
                                  dilation=dilation, ceil_mode=ceil_mode)
    out = _functional.max_pool2d(_empty_batch(x), **kwargs)
    return _batch_map(_call_in_task, x, out, _functional.max_pool2d, token="fastconv-max_pool2d",
                      **kwargs)


def avg_pool2d(x: da.Array, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
               padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: Optional[int] = None) -> da.Array:
    """:func:`fastconv.avg_pool2d` over a batch chunked along N (lazy); ``x`` as in
    :func:`conv2d`, the other arguments as :func:`fastconv.avg_pool2d`. Bitwise the
    single-array result."""
    x = _batch_array(x, "x")
    kwargs: Dict[str, Any] = dict(kernel_size=kernel_size, stride=stride, padding=padding,
                                  ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                                  divisor_override=divisor_override)
    out = _functional.avg_pool2d(_empty_batch(x), **kwargs)
    return _batch_map(_call_in_task, x, out, _functional.avg_pool2d, token="fastconv-avg_pool2d",
                      **kwargs)


# ---------------------------------------------------------------------------------- models
def _inference_copy(model: _M) -> _M:
    """A copy of ``model`` in evaluation mode, without what its last forward cached (arrays held
    by underscore attributes: inputs, masks, indices), with its own copy of the weights."""
    memo: Dict[int, Any] = {}
    for m in model.modules():
        for key, value in vars(m).items():
            if key.startswith("_") and isinstance(value, np.ndarray):
                memo[id(value)] = None
    shipped = copy.deepcopy(model, memo)
    return shipped.eval()


def _per_task_model(model: _M) -> _M:
    """A copy of the structure of ``model`` sharing its parameter arrays: a task's forward caches
    its activations in its own copy (freed with it), so tasks running at once on one worker do
    not share state."""
    memo = {id(p.data): p.data for p in model.parameters()}
    return copy.deepcopy(model, memo)


def _predict_block(chunk: NDArray[Any], model: Module, batch_size: Optional[int]
                   ) -> NDArray[Any]:
    m = _per_task_model(model)
    step = batch_size or max(1, len(chunk))
    with _task_thread_limit():
        outs = [m(chunk[i:i + step]) for i in range(0, len(chunk), step)]
    return np.concatenate(outs) if len(outs) != 1 else np.ascontiguousarray(outs[0])


def predict(model: Module, x: da.Array, batch_size: Optional[int] = None) -> da.Array:
    """A trained :mod:`fastconv.nn` model's outputs over a batch chunked along N (lazy).

    The model runs in evaluation mode (``model.eval()``: dropout is the identity) on a copy made
    now: ``model`` itself is neither modified nor read again, so training it further does not
    change the result. The copy enters the graph as one key (shipped once per worker).

    Args:
        model: a :class:`fastconv.nn.Module` (e.g. ``fastconv demo``'s CNN, which takes
            ``(N, 1, H, W)`` digits).
        x: a dask array ``(N, ...)`` of the model's input (the demo's model: ``(N, C, H, W)``
            float32), chunked along N (other axes chunked are rechunked to one chunk).
        batch_size: images per forward call within a chunk (bounds the activations' memory), or
            None (default): a whole chunk per call.

    Returns:
        a dask array ``(N, ...)`` of the model's outputs (``(N, classes)`` logits for a
        classifier: ``.argmax(axis=1)`` gives the classes), chunked as ``x`` along N. Each row is
        the model's forward of the batch that held it: fastconv's layers give the same bits for
        any batch split; a :class:`fastconv.nn.Linear` layer's matrix product (NumPy's BLAS) may
        round differently for batches of other sizes.
    """
    from .nn import Module
    if not isinstance(model, Module):
        raise TypeError(f"model must be a fastconv.nn.Module, got {type(model).__name__}")
    x = _batch_array(x, "x", ndim=None)
    if batch_size is not None:
        from ._core.args import as_int
        batch_size = as_int(batch_size, "batch_size")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    shipped = _inference_copy(model)
    # the output of one sample (zeros): the shape and dtype of a row, and an early error
    out = _per_task_model(shipped)(np.zeros((1,) + x.shape[1:], _native(x.dtype)))
    if np.ndim(out) < 1 or len(out) != 1:
        raise ValueError(f"model maps a batch of 1 to an output of shape {np.shape(out)}: "
                         "predict needs one output row per input row")
    return _batch_map(_predict_block, x, np.asarray(out), _shared(shipped, "model"), batch_size,
                      token="fastconv-predict")


def forward(model: Module, x: da.Array, batch_size: Optional[int] = None) -> da.Array:
    """The same as :func:`predict`: the model's forward in evaluation mode over a batch chunked
    along N (no gradients are kept: a Dask graph has no backward)."""
    return predict(model, x, batch_size)
