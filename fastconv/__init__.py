"""fastconv: fast, exact CNN kernels for NumPy -- conv2d and pooling, forward and backward.

Design, for a newcomer
======================

The package, layer by layer
---------------------------
Each layer imports only from itself and the layers before it in this list (tests/test_package.py
checks every import):

1. ``fastconv._core``: the kernel API's implementation. ``args`` (dtype, shapes, ints and pairs,
   with an error that names the argument) and ``geometry`` (per-axis reduction of huge strides
   and paddings, the trimming of kernel taps that read only padding, size limits) are shared by everything; ``conv_geometry`` and ``pool_geometry``
   hold each op's argument rules and output sizes, ``torch.nn.functional``'s (plain Python);
   ``epilogue`` the activation a convolution may apply in its output epilogue, and its gradient.
   ``conv`` validates a convolution and hands it to ``dispatch``, which picks a backend:
   ``direct`` (the compiled kernels) or ``fft`` (NumPy's FFT, on request); the backends import
   the shared rules, never each other. ``transpose`` (conv_transpose2d) has no kernel of its
   own: its forward is the direct backend's conv2d grad_input, its gradients conv2d's forward
   and grad_weight with the arrays' roles swapped (rules in ``conv_geometry``). ``pool`` and
   ``adaptive_pool`` run the pooling kernels; ``threads``, ``denormal`` and ``memory`` are the
   compiled module's run-time settings. The compiled module, ``fastconv._kernels`` (built from
   ``src/``), computes convolution and pooling and trusts its arguments; ``fastconv._testing``
   holds its test-only switches.
2. The public kernel API: ``fastconv.functional`` (re-exported here, loaded on first use)
   mirrors ``torch.nn.functional`` on NumPy arrays -- NCHW, cross-correlation, torch's argument
   rules and output sizes; ``fastconv.fft`` offers the FFT path and its cost model.
   ``fastconv.reference`` holds plain NumPy implementations of the same functions, the oracle
   of the property tests and the baseline of the benchmarks: it shares the rules of which
   arguments are accepted, but computes the output sizes and every number itself, and loads no
   compiled code.
3. Extras built on the kernels: ``fastconv.filters`` (classic image kernels: blur, sharpen,
   edges; padding modes), ``fastconv.stats`` (statistics of natural images),
   ``fastconv.datasets`` (digits and IDX files).
4. ``fastconv.nn``: layers (``module``, ``layers``, ``activations``, ``losses``), their
   initialisation and optimisers (``nn.optim``, also importable as ``fastconv.optim``), enough
   to train a small CNN; the layers validate with the functional API's rules.
5. ``fastconv.interop``: adapters for existing code, the PyTorch autograd functions and modules
   (import path ``fastconv.torch``) and CS231n-style layer functions (``fastconv.compat.cs231n``);
   ``fastconv.dask`` runs the filters, conv2d, pooling and a model's predictions chunk by chunk
   on Dask arrays (the ``dask`` extra; ``import fastconv`` never imports Dask).
6. ``fastconv.cli``: the ``fastconv`` command, one module per sub-command (``demo``, ``filter``,
   ``bench``, ``example``).

Data flow of a convolution (src/conv_tmpl.h)
--------------------------------------------
The forward pass is an *implicit GEMM*: out[k, p] = sum over taps t = (c, r, s) of
W[k, t] * x[c, row(p) + r, col(p) + s]. No im2col of the batch is ever formed:

1. per (image, group), the input is copied once into a zero-padded "wide" buffer (small images
   whose pixels leave vector lanes empty go a few to an item, side by side); a stride is
   split into stride x stride phase planes (stride 2: whole-vector shuffles, input rows read in
   order), so every tap of every output row reads a contiguous run of that buffer, at an offset
   that depends on the tap only (``off[t]``);
2. the weights are packed once per call into row blocks of MR output channels (a small last
   block is merged with the one before and the two split evenly);
3. output pixels are cut into panels of 16-64 values and the taps into equal blocks (a block of
   a packed panel is at most 32 KB: 256 float32 taps, 128 float64 on AVX-512; up to 1024 taps
   when every panel is read in place). A register-blocked
   micro-kernel (MR x up to 4 vectors of accumulators, broadcast weights, FMA) runs over a
   panel for every row block: reading the wide buffer in place when each vector of the panel
   lies in one output row (or rows follow each other without a gap, as for 1x1 kernels) or in
   two (two loads merged by a lane mask), otherwise an L1-resident [taps][panel] copy (an
   im2col of one panel). Results go straight
   into the output array, with the bias as the accumulators' start value, or through a scratch
   tile when vectors would run past the end of a plane; outputs of 8 MiB and more are written
   with non-temporal stores either way.

Small output planes (at most 14 x 14: the late layers of a CNN) with enough channels to fill
vectors take a second path instead (src/conv_cv_tmpl.h), the one oneDNN's direct kernels take:
output channels in the vector lanes (a block of 64 float32 channels on AVX-512), each output
pixel's input broadcast. On such a plane most pixels are border pixels whose kernel window
reads padding (31% of a 3x3 kernel's products on 4x4, 19% on 7x7), and a vector of pixels spans
several rows. Here the pixels are sorted into classes by the kernel rows and columns that stay
inside the input, and each class sums only its valid taps: the same chain of fused
multiply-adds, in the same sum blocks, as the GEMM, minus terms w * 0 that change nothing for a
finite w (a non-finite weight's NaN is put back where the GEMM would produce it). The input is
read in place, the weights packed per call as [tap][channel] rows. Which path runs a layer
changes no bit of its result.

Depthwise layers (one input and one output channel per group, as in MobileNet) take a third
path (src/conv_dwd_tmpl.h): to the GEMM each group is a matrix of one row, which fills one
accumulator row of a register block and pays the GEMM's setup per plane (a 7 x 7 plane is 49
outputs). Here an item is (image, block of channels); each channel's plane is padded into the
thread's buffer by whole-vector row copies, and its kernel runs over the plane's wide positions
in blocks of 8 vectors, each tap's weight broadcast: the GEMM's taps, order and sum blocks, so
again the same bits.

grad_input is the same GEMM on the padded grad_output with the kernel flipped and transposed,
once per stride phase of the input (a transposed convolution with no zero insertion); small
planes take the channel-vectorised path there too, a plan per stride phase, and depthwise
layers the depthwise path, every phase of a channel in one item. A weight
holding inf or NaN would meet the padding zeros there (0 * inf = NaN, where torch gives 0), so
for such a weight grad_input is summed tap by tap from 1x1 passes over the positions each tap
reaches (``_core.direct._grad_input_by_taps``).
grad_weight reduces over pixels in registers (taps x output channels of accumulators) reading
the same wide input buffer and grad_output transposed to [pixel][channel]. grad_bias is a plain
fixed-order sum.

Threads and determinism
-----------------------
Every pass is a list of independent work items run by an OpenMP ``prange`` (dynamic schedule) with
the GIL released: forward = (images, group, pixel block), grad_input = (images, group, phase,
pixel block), on the channel-vectorised path (images, group, channel block), on the depthwise
path (image, block of channels), grad_weight = (group, channel block, batch chunk), pooling =
planes; for an image
above the workspace cap (see Memory), forward and grad_input items are row bands of one image. An
item writes only its own outputs, always in the same order. Before them, a layer with large
weights (64K elements and more) packs them in preparation items, a block of rows each, in a
parallel region of their own (a copy: who packs changes nothing). The one cross-item reduction,
grad_weight over batch chunks, uses a chunking that depends on the shapes only, never on the
thread count, and adds the chunks in chunk order. Results are therefore bitwise identical for any
number of threads -- and on every SIMD path (below).
``set_num_threads``/``OMP_NUM_THREADS``/threadpoolctl set the thread count, capped at
``max_num_threads()`` (1024, or the number of processors if more, at most ``OMP_THREAD_LIMIT``):
libgomp crashes the process on very large teams (100000 threads overflow the caller's stack).

Each call has one ``fc_run`` (src/fc_common.h) shared by its threads. The first failure (out of
memory) stops every thread before its next item. When the caller is Python's main thread, it
checks for signals between its own items every 20 ms (taking the GIL only for that, so a shorter
call never takes it): Ctrl-C raises KeyboardInterrupt within about one work item, after the
call's buffers are freed; the partial output is dropped. ``set_flush_denormal(True)`` sets the
FTZ/DAZ bits in every kernel thread for the call and each thread puts its own back afterwards
(the bits are set to fastconv's setting even when off, so no thread's leftover mode can make a
result depend on the thread count): subnormal inputs and results then become zero, which
removes the CPU's slow path for them (conv2d was 180x slower on subnormal data).

Memory
------
Each thread keeps a few 64-byte-aligned workspaces (the wide buffer of one image, a scratch
tile, a transposed grad_output of one image) that are reused by later calls (and freed when the
thread exits), so a training loop does not page-fault on every call. No workspace grows with the
image: a pass whose buffer for one image would exceed 16 MiB works in bands of output rows
instead (each about 2 MiB, built and consumed in cache; the results are those of the whole-image
path, bit for bit except the depthwise grad_weight's rounding), and after a call no thread keeps
more than 48 MiB. Shared per-call buffers are the packed weights and, for grad_weight, one
partial gradient per batch chunk (at most 8): all are bounded by the size of the weights, never
by the batch or the image. Large outputs (8 MiB and up) come from a NumPy memory handler
(src/fc_alloc.h) that keeps up to 512 MiB of freed output blocks for reuse, so that the kernel
does not zero fresh pages for every call (``_kernels.set_output_cache_limit(0)`` turns it off);
its blocks are 64-byte aligned, which the forward's non-temporal stores need. Large shared
buffers (packed weights, partial gradients) are recycled through the same cache: a 512-channel
3x3 layer's packed weights are 9 MiB, which a fresh allocation page-faults in on every call.
grad_weight builds the buffers of as many images of its batch chunk as fit in 512 KiB before its
kernels pass over them: each block of running sums is then loaded and stored once per group of
images, which on small planes (2x2 to 8x8) costs more than the products of one image.
``fastconv.release_memory()`` frees every thread's workspaces (idle OpenMP workers' included; a
workspace in use by a call in another thread is freed at that thread's next use) and empties
the output cache, returning the bytes freed.

SIMD
----
The hot loops are written once with GCC vector extensions and compiled for AVX-512, AVX2+FMA
and a portable baseline with ``target`` attributes; the best path the CPU supports (every feature
its ``target`` lists: one table of the paths and their features, ``FC_ISA_LIST``, gives both the
``target`` attributes and the check ``fc_isa_supported``, for both engines) is picked at
import (``FASTCONV_ISA=generic|avx2|avx512`` or ``fastconv._kernels.set_isa`` force a lower one;
the tests run every path). No ``-march=native``: a wheel built anywhere runs on any x86-64.
GCC and clang both build it (tests/test_build.py compiles the engines with each compiler found);
without OpenMP (Apple's clang) the kernels run on one thread.

Every path gives the same bits, for every op, forward and backward, in float32 and float64 (the
compiled kernels; ``algorithm='fft'`` computes with NumPy's FFT instead):
a result computed on a laptop with AVX2 is the one computed on an AVX-512 server (or on a CPU
without either). Two rules make it so (tests/core/test_simd_paths.py holds every path to them):

* every multiply-add is an explicit fused multiply-add (src/fc_fma.h): the FMA instruction on
  the AVX paths, the C library's ``fma`` per lane on the portable one (the FMA instruction where
  the CPU has it, an exact software fma elsewhere: slower, same result); the extension is
  compiled with ``-ffp-contract=off``, so the compiler fuses nothing else;
* every sum has an order fixed by the shapes alone, never by the vector width: an output of the
  forward or grad_input sums its taps in order in blocks of 64 (one chain from 0 per block:
  short chains round less), the block sums added in order onto the bias; a grad_weight lane
  is one output channel, summed over the pixels in order in blocks of whole rows of at least 64
  pixels of an image (one chain from 0 per block), the block sums added in order; the
  depthwise grad_weight sums into 16 (float32) or 8 (float64) fixed partial sums -- one AVX-512
  vector, two AVX2 ones, four portable ones -- added by halving; grad_bias and the pooling sums are per element, in torch's
  order, except the global average pooling (a 1x1 adaptive output), which sums a plane into the
  same 16 or 8 fixed partial sums.

That matters beyond the last bit: a sum in which a product overflows gives +-inf or NaN
depending on its order (1e300 * 1e300 + 1e300 * -1e300 is +inf fused in tap order, NaN
unfused), and the order is the same on every CPU. NaNs are NaNs on every path; which of two NaN
operands an addition passes on (a NaN's sign and payload) is the compiler's choice.

bfloat16
--------
Opt-in (``precision='bf16'``, :func:`set_precision`, bfloat16 arrays): a float32 forward whose
inputs are rounded to bfloat16 runs on its own run-time table of paths (src/fc_bf16.h, next to
the SIMD paths and capped by them): ``amx`` (tiles, src/conv_amx_tmpl.h), ``avx512_bf16``
(``vdpbf16ps``, src/conv_bf16.h) and ``portable``. The two hardware paths are a GEMM of their
own over the same plan as the float32 forward: the weights packed in pairs of taps, each panel
of pixels converted to bfloat16 as it is packed (once per tap block, reused by every block of
output channels), the epilogue of the float32 kernels. The portable path rounds the wide buffer
and the packed weights in place and runs the float32 kernels. grad_input is the same GEMM
(with its own packed weights); grad_weight runs the float32 kernels on rounded copies. Results
have an error bound (that of a float32 sum of the exact products of the rounded inputs) and are
the same for any thread count, but the paths do not agree bit for bit.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, List

__version__ = "0.1.0"

# The kernel API is imported on first use (PEP 562), so that the pure-Python parts
# (fastconv.reference, fastconv.datasets, the command line's help) load without the compiled
# module.
__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
    "get_num_threads",
    "set_num_threads",
    "max_num_threads",
    "get_flush_denormal",
    "set_flush_denormal",
    "release_memory",
    "set_precision",
    "get_precision",
    "default_precision",
]


if TYPE_CHECKING:  # what __getattr__ loads, for the type checker
    from .functional import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward,
                             adaptive_max_pool2d, adaptive_max_pool2d_backward, avg_pool2d,
                             avg_pool2d_backward, conv2d, conv2d_backward, conv_transpose2d,
                             conv_transpose2d_backward, default_precision, get_flush_denormal,
                             get_num_threads, get_precision, max_num_threads, max_pool2d,
                             max_pool2d_backward, release_memory, set_flush_denormal,
                             set_num_threads, set_precision)


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import functional

        value = getattr(functional, name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
