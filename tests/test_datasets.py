"""fastconv.datasets: the embedded digits and its fixed split; the IDX (MNIST) reader on small
files written here: good, gzipped, truncated, mislabelled, missing."""

import gzip
import struct

import numpy as np
import pytest

from fastconv import datasets

from bomb_helpers import MB, peak_memory_growth, write_gzip


# -- the embedded digits -------------------------------------------------------------------------
def test_digits_shapes_values_and_split():
    xa, ya = datasets.load_digits("all")
    xtr, ytr = datasets.load_digits("train")
    xte, yte = datasets.load_digits()  # default 'train'
    assert np.array_equal(xtr, xte) and np.array_equal(ytr, yte)
    xte, yte = datasets.load_digits("test")
    assert xa.shape == (1797, 8, 8) and xa.dtype == np.uint8 and ya.dtype == np.int64
    assert xa.max() == 16 == datasets.DIGITS_MAX_VALUE and ya.min() == 0 and ya.max() == 9
    assert (len(ytr), len(yte)) == (1438, 359)
    counts = np.bincount(ya, minlength=10)
    np.testing.assert_array_equal(np.bincount(yte, minlength=10), np.round(counts * 0.2))

    # train + test is a partition of the set: every (image, label) row exactly once
    def rows(x, y):
        return sorted(map(bytes, np.concatenate([x.reshape(len(x), -1), y[:, None]], 1)))

    assert rows(np.concatenate([xtr, xte]), np.concatenate([ytr, yte])) == rows(xa, ya)
    # fixed: the same on every call, and the first test digits are known
    assert np.array_equal(datasets.load_digits("test")[1], yte)
    assert datasets.load_digits("all")[1][:10].tolist() == list(range(10))


def test_digits_bad_split():
    with pytest.raises(ValueError, match="split must be"):
        datasets.load_digits("validation")


def test_to_float():
    x = np.array([[[0, 8], [16, 4]]], dtype=np.uint8)
    f = datasets.to_float(x, 16)
    assert f.shape == (1, 1, 2, 2) and f.dtype == np.float32
    np.testing.assert_array_equal(f[0, 0], [[0, 0.5], [1, 0.25]])
    assert datasets.to_float(x, 16, np.float64).dtype == np.float64


# -- IDX files -----------------------------------------------------------------------------------
def idx_bytes(array, type_code=0x08):
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, data, gz=False):
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fake_mnist(directory, n_train=20, n_test=7, size=(6, 5), gz=False, seed=0):
    rng = np.random.default_rng(seed)
    sets = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n,) + size, dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        img_name, lab_name = datasets.MNIST_FILES[split]
        write(directory / img_name, idx_bytes(images), gz)
        write(directory / lab_name, idx_bytes(labels), gz)
        sets[split] = (images, labels)
    return sets


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_good_files(tmp_path, gz):
    sets = fake_mnist(tmp_path, gz=gz)
    for split in ("train", "test"):
        images, labels = datasets.load_mnist(tmp_path, split)
        assert images.dtype == np.uint8 and labels.dtype == np.int64
        assert np.array_equal(images, sets[split][0]) and np.array_equal(labels, sets[split][1])
    images, labels = datasets.load_mnist(str(tmp_path), "all")
    assert images.shape == (27, 6, 5) and len(labels) == 27


def test_read_idx_other_types(tmp_path):
    a = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(a, 0x0B))
    out = datasets.read_idx(tmp_path / "a")
    assert np.array_equal(out, a) and out.dtype.isnative
    f = np.linspace(0, 1, 5)
    (tmp_path / "f").write_bytes(idx_bytes(f, 0x0E))
    assert np.array_equal(datasets.read_idx(tmp_path / "f"), f)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST directory not found"):
        datasets.load_mnist(tmp_path / "nope")
    fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    datasets.load_mnist(tmp_path, "train")
    with pytest.raises(
        FileNotFoundError,
        match=r"'t10k-labels-idx1-ubyte' \(or 't10k-labels-idx1-ubyte.gz'\) not found",
    ):
        datasets.load_mnist(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        datasets.read_idx(tmp_path / "missing")


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_files(tmp_path, gz):
    sets = fake_mnist(tmp_path, gz=False)
    data = idx_bytes(sets["train"][0])
    name = tmp_path / "train-images-idx3-ubyte"
    name.unlink()
    if gz:
        full = gzip.compress(data)
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(full[: len(full) // 2])
        match = "truncated or corrupt gzip"
    else:
        name.write_bytes(data[:-7])
        match = r"truncated IDX file: shape \(20, 6, 5\) needs 616 bytes, file has 609"
    with pytest.raises(ValueError, match=match):
        datasets.load_mnist(tmp_path, "train")


def test_truncated_header_and_trailing_bytes(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="truncated IDX file: 2 bytes"):
        datasets.read_idx(p)
    p.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="header of 3 dimensions needs 16 bytes"):
        datasets.read_idx(p)
    p.write_bytes(idx_bytes(np.zeros(4, np.uint8)) + b"xx")
    with pytest.raises(ValueError, match="2 unexpected bytes"):
        datasets.read_idx(p)
    p.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.read_idx(p)


def test_mislabelled_files(tmp_path):
    sets = fake_mnist(tmp_path)
    img, lab = (tmp_path / n for n in datasets.MNIST_FILES["train"])
    good_images, good_labels = img.read_bytes(), lab.read_bytes()
    # the two files swapped
    img.write_bytes(good_labels)
    lab.write_bytes(good_images)
    with pytest.raises(ValueError, match="expected an image file.*got a 1-D"):
        datasets.load_mnist(tmp_path, "train")
    img.write_bytes(good_images)
    with pytest.raises(ValueError, match="expected a label file.*got a 3-D"):
        datasets.load_mnist(tmp_path, "train")
    # a label that is not a digit
    labels = sets["train"][1].copy()
    labels[5] = 10
    lab.write_bytes(idx_bytes(labels))
    with pytest.raises(ValueError, match="label 10 at position 5 is not a digit"):
        datasets.load_mnist(tmp_path, "train")
    # labels of another file (different length)
    lab.write_bytes(idx_bytes(sets["test"][1]))
    with pytest.raises(ValueError, match="has 20 images but .* has 7 labels"):
        datasets.load_mnist(tmp_path, "train")
    # images stored as int32
    lab.write_bytes(good_labels)
    img.write_bytes(idx_bytes(sets["train"][0].astype(np.int32), 0x0C))
    with pytest.raises(ValueError, match="expected an image file.*int32"):
        datasets.load_mnist(tmp_path, "train")


# -- forged and corrupt IDX files: bounded memory, clear errors ---------------------------------
def idx_header(type_code, shape):
    return struct.pack(f">BBBB{len(shape)}I", 0, 0, type_code, len(shape), *shape)


def test_gzip_bomb_is_not_decompressed_past_the_declared_size(tmp_path):
    # 16 declared bytes followed by 64 MiB of zeros (a 64 KB gzip stream): rejected after
    # reading 25 bytes, not after expanding the whole stream.
    bomb = tmp_path / "bomb.gz"
    write_gzip(bomb, idx_header(0x08, (16,)), zero_mb=64)
    assert bomb.stat().st_size < MB
    growth, message = peak_memory_growth(
        "from fastconv import datasets", f"datasets.read_idx({str(bomb)!r})"
    )
    assert growth < 16 * MB, f"peak memory grew by {growth / MB:.0f} MiB"
    assert message.startswith("ValueError") and str(bomb) in message
    assert "unexpected bytes after the 24 bytes" in message


def test_declared_size_larger_than_the_stream(tmp_path):
    # the header declares 1 GiB; the stream holds 8 MiB: the reader fails on the short data,
    # having used memory for what the stream holds only.
    short = tmp_path / "short.gz"
    write_gzip(short, idx_header(0x08, (1024, 1024, 1024)), zero_mb=8)
    growth, message = peak_memory_growth(
        "from fastconv import datasets", f"datasets.read_idx({str(short)!r})"
    )
    assert message.startswith("ValueError") and str(short) in message
    assert "needs 1073741840 bytes once decompressed, file has 8388624" in message
    assert growth < 64 * MB, f"peak memory grew by {growth / MB:.0f} MiB"


@pytest.mark.parametrize("type_code,shape", [
    (0x08, (2**31, 2**31, 4)),  # 2**64 bytes: wrapped to 0 in int64
    (0x0E, (2**32 - 1,) * 3),  # 8 * (2**32-1)**3 bytes: wrapped to a wrong count
])
def test_huge_declared_sizes_are_refused_before_reading(tmp_path, type_code, shape):
    p = tmp_path / "huge"
    p.write_bytes(idx_header(type_code, shape) + bytes(64))
    nbytes = int(np.prod(shape, dtype=object)) * datasets._IDX_DTYPES[type_code].itemsize
    with pytest.raises(ValueError, match=f"{nbytes:,} bytes, more than max_bytes") as exc:
        datasets.read_idx(p)
    assert str(p) in str(exc.value)


def test_max_bytes(tmp_path):
    p = tmp_path / "a"
    a = np.arange(12, dtype=np.int16).reshape(3, 4)
    p.write_bytes(idx_bytes(a, 0x0B))
    assert np.array_equal(datasets.read_idx(p, max_bytes=24), a)
    with pytest.raises(ValueError, match="24 bytes, more than max_bytes=23"):
        datasets.read_idx(p, max_bytes=23)


def test_corrupt_gzip_and_directories_give_clear_errors(tmp_path):
    p = tmp_path / "corrupt.gz"
    # a valid gzip header, then a deflate block of the reserved (invalid) type 3
    p.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\xff" * 32)
    with pytest.raises(ValueError, match="truncated or corrupt gzip data") as exc:
        datasets.read_idx(p)
    assert str(p) in str(exc.value)
    # a good stream with a wrong checksum
    data = bytearray(gzip.compress(idx_bytes(np.arange(10, dtype=np.uint8))))
    data[-8] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupt gzip data"):
        datasets.read_idx(p)
    # gzip data after the declared bytes
    p.write_bytes(gzip.compress(idx_bytes(np.arange(10, dtype=np.uint8)) + b"x"))
    with pytest.raises(ValueError, match="unexpected bytes after the 18 bytes"):
        datasets.read_idx(p)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        datasets.read_idx(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                        (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)])
def test_every_type_round_trips(tmp_path, gz, dtype, code):
    a = (np.arange(-30, 30) * 3).astype(dtype).reshape(3, 4, 5)
    write(tmp_path / "a", idx_bytes(a, code), gz)
    out = datasets.read_idx(str(tmp_path / "a") + (".gz" if gz else ""))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.flags.writeable
    np.testing.assert_array_equal(out, a)
    write(tmp_path / "z", idx_bytes(np.zeros((0, 3), dtype), code), gz)
    assert datasets.read_idx(str(tmp_path / "z") + (".gz" if gz else "")).shape == (0, 3)
