"""Data for the demo: the embedded 8x8 digits, and a reader for MNIST-format IDX files.

The embedded set, ``fastconv/data/digits.npz`` (46 KB), holds the 1,797 8x8 handwritten digits of
the UCI "Optical Recognition of Handwritten Digits" data set (E. Alpaydin and C. Kaynak, 1998;
licence CC BY 4.0), exactly as scikit-learn bundles them (``sklearn/datasets/data/digits.csv.gz``):
pixel values 0..16 (each pixel counts the "on" pixels of a 4x4 block of a 32x32 bitmap), labels
0..9. It was converted once by ``tools/make_digits_npz.py``, which also drew the fixed stratified
split stored in the file (20 % of each class is the test set: 359 test, 1,438 train images).

Every loader returns ``(images, labels)``: ``images`` a uint8 array ``(N, H, W)``, ``labels`` an
int64 array ``(N,)``. Scale the images to floats with :func:`to_float`.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import sys
import zlib
from importlib import resources
from typing import TYPE_CHECKING, Any, Dict, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    from io import BufferedReader

    from numpy.typing import ArrayLike, NDArray

    StrPath = Union[str, "os.PathLike[str]"]
    BinaryFile = Union[gzip.GzipFile, BufferedReader]

DIGITS_MAX_VALUE = 16   # a UCI digit pixel counts the "on" pixels of a 4x4 block: 0..16
MNIST_MAX_VALUE = 255   # MNIST pixels are 8-bit grey levels

# The four standard MNIST file names; each may also be gzipped (name + ".gz").
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# An IDX header is big-endian 32-bit words: the magic number, then the size of each dimension.
_IDX_WORD = 4
# IDX type codes (third byte of the magic number) -> big-endian dtype.
_IDX_DTYPES: Dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _check_split(split: str) -> None:
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")


def load_digits(split: str = "train") -> Tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """The embedded 8x8 digits: ``(images, labels)`` of the fixed stratified split.

    Args:
        split: ``'train'`` (1,438 images), ``'test'`` (359) or ``'all'`` (1,797, file order).

    Returns:
        ``images``: uint8 ``(N, 8, 8)`` with values 0..16 (:data:`DIGITS_MAX_VALUE`);
        ``labels``: int64 ``(N,)`` with values 0..9.
    """
    _check_split(split)
    with resources.files("fastconv").joinpath("data/digits.npz").open("rb") as f:
        with np.load(f, allow_pickle=False) as npz:
            images, labels, test_index = npz["images"], npz["labels"], npz["test_index"]
    labels = labels.astype(np.int64)
    if split == "all":
        return images, labels
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_index] = True
    keep = is_test if split == "test" else ~is_test
    return images[keep], labels[keep]


# The largest IDX payload read_idx accepts by default: far above any data set of the format
# (EMNIST's largest file holds 0.55 GB), far below what a forged header can declare (2**32-1 per
# dimension).
IDX_MAX_BYTES = 2**32
_CHUNK = 1 << 20


def _open_maybe_gzipped(path: StrPath) -> Tuple[BinaryFile, bool]:
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return (gzip.open(path, "rb") if gzipped else open(path, "rb")), gzipped


def read_idx(path: StrPath, *, max_bytes: int = IDX_MAX_BYTES) -> NDArray[Any]:
    """Read one IDX file (the MNIST format), gzipped or not (detected from its first bytes).

    The header is read first and the data size it declares is checked before any data is read:
    a file (or a small gzip stream that would expand to gigabytes) is never read further than its
    header allows, so memory stays bounded by the declared size, itself at most ``max_bytes``.
    The data must fill the declared shape exactly: a shorter file and a file with anything after
    the data (another array, padding, a concatenated file) are both rejected, as is a gzip stream
    whose checksum does not match.

    Args:
        path: the file (str or path-like).
        max_bytes: keyword-only; the largest data size (bytes, header excluded) accepted.
            Default: :data:`IDX_MAX_BYTES` (4 GiB).

    Returns:
        An ndarray of the shape and type the header declares (uint8 for MNIST), native byte order.

    Raises:
        FileNotFoundError: no such file.
        IsADirectoryError: ``path`` is a directory.
        ValueError: (naming ``path``) not an IDX file (bad magic number or type code), a declared
            size above ``max_bytes``, truncated (fewer bytes than the header declares, including a
            cut gzip stream), trailing bytes after the data, or corrupt gzip data.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not an IDX file")
    try:
        f, gzipped = _open_maybe_gzipped(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file not found: {path}") from None
    with f:
        try:
            return _read_idx_stream(f, path, gzipped, max_bytes)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # cut or corrupt gzip stream
            raise ValueError(f"{path}: truncated or corrupt gzip data ({exc})") from None


def _read_idx_stream(f: BinaryFile, path: StrPath, gzipped: bool, max_bytes: int
                     ) -> NDArray[Any]:
    magic = f.read(_IDX_WORD)
    if len(magic) < _IDX_WORD:
        raise ValueError(
            f"{path}: truncated IDX file: {len(magic)} bytes, not even a {_IDX_WORD}-byte header"
        )
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: not an IDX file (magic number bytes {magic.hex(' ')}; expected "
            "00 00 <type code> <ndim>, e.g. 00 00 08 03 for MNIST images)"
        )
    dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
    header = _IDX_WORD * (1 + ndim)
    dims = f.read(_IDX_WORD * ndim)
    if len(dims) < _IDX_WORD * ndim:
        raise ValueError(
            f"{path}: truncated IDX file: header of {ndim} dimensions needs "
            f"{header} bytes, file has {_IDX_WORD + len(dims)}"
        )
    shape = struct.unpack(f">{ndim}I", dims)
    # Python ints: a product of dimensions up to 2**32-1 each cannot wrap around.
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes:
        raise ValueError(
            f"{path}: the IDX header declares shape {shape} of {dtype.newbyteorder('=')}, "
            f"{nbytes:,} bytes, more than max_bytes={max_bytes:,}; not an IDX file this reader "
            "accepts (pass a larger max_bytes to read it)"
        )
    size = None if gzipped else os.fstat(f.fileno()).st_size
    if size is not None and size < header + nbytes:
        raise ValueError(
            f"{path}: truncated IDX file: shape {shape} needs {header + nbytes} bytes, "
            f"file has {size}"
        )
    if size is not None and size > header + nbytes:
        raise ValueError(
            f"{path}: {size - header - nbytes} unexpected bytes after the data of "
            f"shape {shape} (not a valid IDX file)"
        )
    # np.empty does not touch its pages: a short gzip stream costs only what it really holds.
    data = np.empty(nbytes, dtype=np.uint8)
    view, got = memoryview(data), 0  # type: ignore[arg-type]  # (numpy's stub: no buffer)
    while got < nbytes:
        n = f.readinto(view[got : got + _CHUNK])
        if not n:
            raise ValueError(
                f"{path}: truncated IDX file: shape {shape} needs {header + nbytes} bytes"
                f"{' once decompressed' if gzipped else ''}, file has {header + got}"
            )
        got += n
    # One byte more: anything left is an error, and reaching the end checks the gzip CRC.
    if f.read(1):
        raise ValueError(
            f"{path}: unexpected bytes after the {header + nbytes} bytes of an IDX file of "
            f"shape {shape} (not a valid IDX file)"
        )
    native = data.view(dtype.newbyteorder("="))
    if dtype.itemsize > 1 and sys.byteorder == "little":
        native.byteswap(inplace=True)
    return native.reshape(shape)


def _find(directory: str, name: str) -> str:
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"MNIST file {name!r} (or {name + '.gz'!r}) not found in {directory!r}; the directory "
        f"must hold the four standard files: "
        f"{', '.join(n for p in MNIST_FILES.values() for n in p)}"
    )


def load_mnist(directory: StrPath, split: str = "train"
               ) -> Tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """MNIST (or any data set in its format, e.g. Fashion-MNIST) from the four IDX files.

    Args:
        directory: the folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each possibly ``.gz``.
        split: ``'train'``, ``'test'`` or ``'all'`` (train then test).

    Returns:
        ``images``: uint8 ``(N, H, W)`` (28x28 for MNIST) with values 0..255;
        ``labels``: int64 ``(N,)`` with values 0..9.

    Raises:
        FileNotFoundError: a missing file (or directory).
        ValueError: a truncated file, an image file that is not 3-D uint8, a label file that is
            not 1-D uint8 (e.g. the two swapped), label values outside 0..9, or image and label
            files of different lengths.
    """
    _check_split(split)
    if split == "all":
        parts = [load_mnist(directory, s) for s in ("train", "test")]
        if parts[0][0].shape[1:] != parts[1][0].shape[1:]:
            raise ValueError(
                f"{directory}: train images are {parts[0][0].shape[1:]} but test "
                f"images are {parts[1][0].shape[1:]}"
            )
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"MNIST directory not found: {directory!r}")
    image_path, label_path = (_find(directory, n) for n in MNIST_FILES[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{image_path}: expected an image file (3-D uint8, IDX magic 00 00 08 03), "
            f"got a {images.ndim}-D {images.dtype} array of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{label_path}: expected a label file (1-D uint8, IDX magic 00 00 08 01), "
            f"got a {labels.ndim}-D {labels.dtype} array of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise ValueError(
            f"{label_path}: label {int(labels[bad])} at position {bad} is not a digit 0..9"
        )
    return images, labels.astype(np.int64)


def to_float(images: ArrayLike, max_value: float, dtype: Union[type, str, np.dtype[Any]] = np.float32
             ) -> NDArray[np.floating[Any]]:
    """uint8 images ``(N, H, W)`` -> ``(N, 1, H, W)`` floats in [0, 1] (divided by
    ``max_value``)."""
    dtype = np.dtype(dtype)
    out = np.asarray(images).astype(dtype)
    out /= dtype.type(max_value)
    return out[:, None, :, :]
