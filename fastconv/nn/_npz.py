"""Reading .npz files without trusting them."""
from __future__ import annotations

import math
import os
import zipfile
import zlib
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray


# -- reading .npz files without trusting them ---------------------------------------------------
# np.load reads a whole member before anyone can look at its shape, and a 1 MB archive can hold a
# member that expands to gigabytes; these read the .npy header first and the data only once the
# caller has accepted the shape and type the header declares.

_NPZ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError)


def _not_npz(path: str, exc: BaseException) -> ValueError:
    return ValueError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})")


class _Npz:
    """An open .npz archive (a zip of .npy files); use as a context manager."""

    path: str

    def __init__(self, file: Any) -> None:
        if hasattr(file, "read"):  # an open binary file, as np.load accepts
            self.path = str(getattr(file, "name", "<file object>"))
            path = file
        else:
            path = self.path = os.fspath(file)
        if isinstance(path, (str, bytes)) and os.path.isdir(path):
            raise IsADirectoryError(f"{self.path}: is a directory, not an .npz file")
        try:
            self.zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            hint = ""
            if isinstance(path, str) and os.path.isfile(path + ".npz"):  # as np.savez does
                hint = f" (but {path + '.npz'} exists: save() adds .npz to a name without it)"
            raise FileNotFoundError(f"no such file: {self.path}{hint}") from None
        except PermissionError:
            raise
        except (*_NPZ_ERRORS, OSError, ValueError) as exc:
            raise ValueError(
                f"{self.path} is not a fastconv weights file (an .npz archive of .npy arrays, as "
                f"Module.save and np.savez write): {type(exc).__name__}: {exc}"
            ) from None

    def __enter__(self) -> _Npz:
        return self

    def __exit__(self, *exc: object) -> None:
        self.zip.close()


def open_npz(file: Any) -> _Npz:
    """Open ``file`` (a path or an open binary file) as an .npz archive."""
    return _Npz(file)


def npz_keys(npz: _Npz) -> List[str]:
    """The array names of the archive, in file order (the member names without ``.npy``)."""
    return [
        info.filename[: -len(".npy")] if info.filename.endswith(".npy") else info.filename
        for info in npz.zip.infolist()
    ]


def _read_exactly(stream: Any, n: int) -> Optional[NDArray[np.uint8]]:
    """``n`` bytes of ``stream`` into a new uint8 array, or None if the stream ends first. The
    array's pages are touched only as data arrives."""
    out = np.empty(n, dtype=np.uint8)
    view, got = memoryview(out), 0  # type: ignore[arg-type]  # (numpy's stub: no buffer)
    while got < n:
        k = stream.readinto(view[got : got + (1 << 20)])
        if not k:
            return None
        got += k
    return out


def read_npz_array(npz: _Npz, path: str, key: str, *, shape: Optional[Sequence[int]] = None,
                   kinds: str = "fiu", max_bytes: Optional[int] = None, what: str = "an array"
                   ) -> NDArray[Any]:
    """Entry ``key`` of the open archive ``npz``, its header checked before its data is read.

    Args:
        npz: an archive opened by :func:`open_npz`.
        path: its name, for messages.
        key: the array name (the member is ``key + '.npy'``).
        shape: the shape the entry must have, or None for any shape.
        kinds: the accepted ``dtype.kind`` letters (``'f'`` float, ``'i'``/``'u'`` integers,
            ``'U'`` text); object and structured arrays are always refused.
        max_bytes: with ``shape=None``, the largest data size accepted.
        what: what the entry is, for messages (``'a parameter'``).

    Raises:
        ValueError naming ``path`` and ``key`` for anything but a matching, complete array.
    """
    where = f"{path}: entry {key!r}"
    try:
        info = npz.zip.getinfo(key + ".npy")
    except KeyError:
        raise ValueError(f"{where} is missing (no member {key + '.npy'!r})") from None
    try:
        with npz.zip.open(info) as stream:
            try:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    header = np.lib.format.read_array_header_1_0(stream)
                elif version == (2, 0):
                    header = np.lib.format.read_array_header_2_0(stream)
                else:
                    raise ValueError(f".npy format version {version} is not supported here")
            except ValueError as exc:
                raise ValueError(f"{where} is not a valid .npy array ({exc})") from None
            got_shape, fortran, dtype = header
            if dtype.hasobject or dtype.fields is not None or dtype.kind not in kinds:
                raise ValueError(f"{where} has dtype {dtype}, which is not {what}'s type")
            if shape is not None and tuple(got_shape) != tuple(shape):
                raise ValueError(
                    f"{where} has shape {tuple(got_shape)} but {what} of shape {tuple(shape)} "
                    "was expected"
                )
            nbytes = math.prod(got_shape) * dtype.itemsize
            if max_bytes is not None and nbytes > max_bytes:
                raise ValueError(
                    f"{where} declares {nbytes:,} bytes of data, more than the {max_bytes:,} bytes "
                    f"{what} may hold"
                )
            header_size = stream.tell()
            if info.file_size != header_size + nbytes:
                raise ValueError(
                    f"{where} is corrupt: its header declares {nbytes:,} bytes of data but the "
                    f"archive stores {info.file_size - header_size:,}"
                )
            data = _read_exactly(stream, nbytes)
            # Reading to the end of the member makes zipfile check its CRC.
            if data is None or stream.read(1):
                raise ValueError(f"{where} is truncated or corrupt")
    except (*_NPZ_ERRORS, OSError) as exc:
        raise ValueError(f"{where} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    shape = tuple(got_shape)
    if fortran:
        return data.view(dtype).reshape(shape[::-1]).T
    return data.view(dtype).reshape(shape)
