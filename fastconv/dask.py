r"""fastconv on Dask arrays: image filters of any size, conv2d and pooling over a batch, and a
trained :mod:`fastconv.nn` model's predictions, computed chunk by chunk by fastconv's kernels.

Needs the dask extra: ``pip install "fastconv[dask]"`` (dask[array], distributed, zarr,
tifffile). ``import fastconv`` never imports Dask; this module does.

Every function builds a lazy Dask array (nothing is computed until ``.compute()``,
``.to_zarr()``, ``da.store`` ...). Any scheduler runs it: the default threaded one, a
``distributed`` cluster (worker processes or threads), or the synchronous one.

Data flow of :func:`filter2d`
-----------------------------
An ``(H, W)`` or ``(H, W, C)`` image chunked in any way is filtered chunk by chunk: each chunk is
handed to :func:`fastconv.filters.filter2d` with the *halo* the kernel needs around it (the rows
and columns its neighbours own), and only the chunk's own pixels are kept. For an ``R x S``
kernel the output pixel ``(i, j)`` lines up with kernel element ``((R - 1) // 2, (S - 1) // 2)``
(as in :func:`fastconv.filters.filter2d`, even sizes included), so it reads ``(R - 1) // 2`` rows
above and ``R - 1 - (R - 1) // 2`` below (columns likewise); every chunk gets a halo of
``R // 2`` rows and ``S // 2`` columns on each side it shares with a neighbour (the deeper of the
two sides). The channel axis needs no halo: a chunking along ``C`` is kept.

**Border rule.** The padding mode applies at the border of the whole image only, never at a
chunk's: a side of a chunk that is on the image's border gets no halo there, and the filter
engine extends it by the padding mode itself, exactly as it extends the whole image in the
single-array call (``'zeros'``, ``'reflect'``, ``'replicate'``: everything such a side reads is
in the chunk and its inner halo). ``'circular'`` reads the opposite border: along an axis split
into several chunks, the border chunks get a halo from the other end of the image (Dask's
``'periodic'`` boundary, which is exactly the wrap-around). (Dask's own boundary names do not
mean numpy's: Dask's ``'reflect'`` repeats the edge, numpy's and fastconv's do not; this module
does not use it.) The filter engine computes every output element from the values it reads,
in tap order, whatever the image around it, so the result is **bitwise** the single-array
``fastconv.filters.filter2d(image.compute(), ...)`` for every chunking, dtype, ``output_dtype``
and kernel, separable or not.

A halo deeper than a chunk (a chunk smaller than ``R // 2`` rows or ``S // 2`` columns, e.g. an
uneven last chunk) cannot be filled from the neighbours alone: the image is then rechunked so
that every chunk is at least the halo (a :class:`PerformanceWarning` says so and suggests a
chunking), and the result is rechunked back to the input's chunks.

Memory
------
A task holds one chunk with its halo, the filter's output on it (one per kernel of a bank) and
the cropped result: about ``(chunk + halo) x (2 + F)`` elements, never the whole image (as long
as the chunks themselves are reasonable: 1-32 MB each is Dask's advice). For conv2d, pooling and
:func:`predict`, a task holds one batch chunk, its output, the layers' activations and the
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
    # per axis of the image: (halo depth, halo on the image's border too, number of chunks)
    Layout = Tuple[Tuple[int, bool, int], ...]

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
    bank, ks = _filters._as_kernels(kernel)
    _filters.check_padding_mode(padding_mode)
    # every other argument checked now, by the single-array function on a 1-pixel image
    probe = _filters.filter2d(np.zeros((1, 1) + image.shape[2:], dtype), ks if bank else ks[0],
                              "zeros", mode, separable=separable, output_dtype=output_dtype)
    out_dtype = probe.dtype
    f, r, s = ks.shape
    lead = (f,) if bank else ()
    if 0 in image.shape:
        return da.empty(lead + image.shape, dtype=out_dtype,
                        chunks=(((f,),) if bank else ()) + image.chunks)
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
    # per axis: the halo depth (0: one chunk, nothing to share) and Dask's boundary
    depths, boundary = {}, {}
    for a in range(image.ndim):
        d = depth[a] if a < 2 and len(x.chunks[a]) > 1 else 0
        depths[a] = d
        boundary[a] = "periodic" if d and padding_mode == "circular" else "none"
    halo = da.overlap.overlap(x, depth=depths, boundary=boundary, allow_rechunk=False)
    layout = tuple((depths[a], boundary[a] != "none", len(x.chunks[a])) for a in range(2))
    kern = _shared(ks if bank else ks[0], "kernel")
    y = da.map_blocks(
        _filter_block, halo, kern, padding_mode, mode, separable, output_dtype, bank, layout,
        chunks=lead + x.chunks, dtype=out_dtype, new_axis=[0] if bank else None,
        meta=np.empty((0,) * (image.ndim + bank), out_dtype), token="fastconv-filter2d")
    if x.chunks != image.chunks:
        y = y.rechunk(((f,) if bank else ()) + image.chunks)
    return y


def _filter_block(block: NDArray[Any], kernel: NDArray[Any], padding_mode: str, mode: str,
                  separable: Optional[bool], output_dtype: Union[DTypeLike, str, None],
                  bank: bool, layout: Layout, block_id: Optional[Tuple[int, ...]] = None
                  ) -> NDArray[Any]:
    """One chunk with its halo filtered, the halo's outputs cropped off."""
    with _task_thread_limit():
        y = _filters.filter2d(block, kernel, padding_mode, mode, separable=separable,
                              output_dtype=output_dtype)
    crop = [slice(None)] * y.ndim
    assert block_id is not None  # map_blocks passes it (the parameter is named block_id)
    for a, (d, everywhere, nblocks) in enumerate(layout):
        i = block_id[a + bank]  # the output's block: a bank's leading axis F comes first
        lo = d if (everywhere or i > 0) else 0
        hi = d if (everywhere or i < nblocks - 1) else 0
        crop[a + bank] = slice(lo, y.shape[a + bank] - hi)
    return np.ascontiguousarray(y[tuple(crop)])  # a copy: the halo's outputs are freed


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
