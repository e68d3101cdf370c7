# bfloat16 (src/fc_bf16.h): the path that multiplies it, and the conversions of whole arrays.
# Included by _kernels.pyx.

cdef extern from "fc_kernels.h" nogil:
    int FC_BF16_COUNT
    const fc_isa_info fc_bf16_paths[]
    int fc_set_bf16(int requested)
    int fc_bf16_level
    void fc_bf16_round_f32(const float *src, float *dst, fc_idx n)
    void fc_bf16_narrow(const float *src, unsigned short *dst, fc_idx n)
    void fc_bf16_widen(const unsigned short *src, float *dst, fc_idx n)

BF16_PATHS = tuple(fc_bf16_paths[i].name.decode() for i in range(FC_BF16_COUNT))
fc_set_bf16(BF16_PATHS.index(os.environ["FASTCONV_BF16"])
            if os.environ.get("FASTCONV_BF16") in BF16_PATHS else -1)


def set_bf16_path(name=None):
    """Select the path of bfloat16 products: 'portable', 'avx512_bf16', or None for the best
    available. A request above what the CPU (and the SIMD path in use, set_isa) supports is
    capped; returns the name of the path now in use. The FASTCONV_BF16 variable sets it at
    import."""
    if name is not None and name not in BF16_PATHS:
        raise ValueError(f"bf16 path must be one of {BF16_PATHS} or None, got {name!r}")
    return BF16_PATHS[fc_set_bf16(-1 if name is None else BF16_PATHS.index(name))]


def get_bf16_path():
    """The path of bfloat16 products in use (it follows set_isa too)."""
    return BF16_PATHS[fc_bf16_level]


def bf16_path_features(name):
    """The CPU features that bfloat16 path ``name`` needs, as GCC spells them (/proc/cpuinfo
    writes avx512bf16 as avx512_bf16)."""
    return tuple(fc_bf16_paths[BF16_PATHS.index(name)].features.decode().split())


# Elements per work item of the conversions: a few hundred KB, enough to outweigh waking a team.
cdef fc_idx _BF16_GRAIN = 1 << 16


cdef int _bf16_threads(fc_idx n) noexcept nogil:
    return fc_get_max_threads() if n >= 2 * _BF16_GRAIN else 1


def bf16_round(const float[::1] src, float[::1] dst):
    """dst = src rounded to the nearest bfloat16 (ties to even), as float32; dst may be src."""
    cdef fc_idx n = src.shape[0], i, lo, nblk = (n + _BF16_GRAIN - 1) // _BF16_GRAIN
    if n == 0:
        return
    with nogil:
        for i in prange(nblk, schedule="static",
                        num_threads=_bf16_threads(n)):
            lo = i * _BF16_GRAIN
            fc_bf16_round_f32(&src[lo], &dst[lo], min(_BF16_GRAIN, n - lo))


def bf16_narrow(const float[::1] src, unsigned short[::1] dst):
    """dst = the bits of src rounded to bfloat16 (ties to even)."""
    cdef fc_idx n = src.shape[0], i, lo, nblk = (n + _BF16_GRAIN - 1) // _BF16_GRAIN
    if n == 0:
        return
    with nogil:
        for i in prange(nblk, schedule="static",
                        num_threads=_bf16_threads(n)):
            lo = i * _BF16_GRAIN
            fc_bf16_narrow(&src[lo], &dst[lo], min(_BF16_GRAIN, n - lo))


def bf16_widen(const unsigned short[::1] src, float[::1] dst):
    """dst = the float32 values of the bfloat16 bits src (exact)."""
    cdef fc_idx n = src.shape[0], i, lo, nblk = (n + _BF16_GRAIN - 1) // _BF16_GRAIN
    if n == 0:
        return
    with nogil:
        for i in prange(nblk, schedule="static",
                        num_threads=_bf16_threads(n)):
            lo = i * _BF16_GRAIN
            fc_bf16_widen(&src[lo], &dst[lo], min(_BF16_GRAIN, n - lo))
