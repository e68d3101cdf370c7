"""fastconv.dask: every function on a chunked Dask array gives bitwise the single-array result
(any chunking, chunks smaller than the halo, every padding mode and dtype), on the threaded
scheduler and on a real multi-process distributed cluster; weights and models are one key of the
graph; no task holds the whole image; Zarr and TIFF files are filtered end to end."""
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402
from fastconv import filters  # noqa: E402
from fastconv.cli.demo import build_model  # noqa: E402

from conv_helpers import TESTS_DIR, child_env  # noqa: E402
from strategies import (FILTER_PADDING_MODES, chunkings, filter_images,  # noqa: E402
                         filter_kernels, float_box_images)



def _same_bits(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.tobytes() == want.tobytes()


@st.composite
def filter_calls(draw, max_side=14):
    """``(image, chunks, kernel, kwargs)``: an image, a chunking of it, a kernel (2-D or a bank
    of 2, odd or even sizes, rank 1 or not) and filter2d's other arguments."""
    img = draw(filter_images(dtypes=(np.uint8, np.uint16, np.float16, np.float32, np.float64),
                             max_side=max_side))
    chunks = draw(chunkings(img.shape))
    k = draw(filter_kernels(max_side=6))
    if draw(st.booleans()):
        k = np.stack([k, k[::-1, ::-1] * 0.5])  # a bank of two (rank 1 if k is)
    kwargs = dict(padding_mode=draw(st.sampled_from(FILTER_PADDING_MODES)),
                  mode=draw(st.sampled_from(["correlate", "convolve"])),
                  separable=draw(st.sampled_from([None, False])),
                  output_dtype=draw(st.sampled_from([None, "float", np.uint8, np.float64])))
    return img, chunks, k, kwargs


def _check_filter(img, chunks, k, kwargs, compute):
    x = da.from_array(img, chunks=chunks)
    try:
        want = filters.filter2d(img, k, **kwargs)
    except ValueError:  # the kernel does not fit the image for this padding mode
        with pytest.raises(ValueError, match="does not fit"):
            fd.filter2d(x, k, **kwargs)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fd.PerformanceWarning)  # chunks smaller than the halo
        y = fd.filter2d(x, k, **kwargs)
    assert y.chunks == ((((k.shape[0],),) if k.ndim == 3 else ()) + x.chunks)
    _same_bits(compute(y), want)


@settings(max_examples=150)
@given(filter_calls())
def test_filter2d_is_bitwise_the_single_array_call(case):
    _check_filter(*case, compute=lambda y: y.compute(scheduler="threads"))


@settings(max_examples=30)
@given(img=filter_images(dtypes=(np.float32,), max_side=12), k=filter_kernels(rank1=True),
       mode=st.sampled_from(FILTER_PADDING_MODES), data=st.data())
def test_separable_filter_is_bitwise_the_single_array_call(img, k, mode, data):
    chunks = data.draw(chunkings(img.shape))
    _check_filter(img, chunks, k, dict(padding_mode=mode, separable=True),
                  compute=lambda y: y.compute(scheduler="sync"))


@settings(max_examples=40)
@given(img=float_box_images(max_side=12), mode=st.sampled_from(FILTER_PADDING_MODES),
       data=st.data())
def test_box_filter_of_float32_images_is_bitwise_the_single_array_call(img, mode, data):
    """Box filters of float32 images sum each chunk's windows in whichever way its pixels allow
    (filter2d's exact window sums): the chunks still agree with the whole image bit for bit."""
    kh, kw = data.draw(st.integers(1, 7)), data.draw(st.integers(1, 7))
    chunks = data.draw(chunkings(img.shape))
    _check_filter(img, chunks, np.full((kh, kw), 1 / (kh * kw)), dict(padding_mode=mode),
                  compute=lambda y: y.compute(scheduler="threads"))


def test_wrap_across_chunks_reads_the_opposite_border():
    # the circular mode with a halo taken across chunks: a delta at the top-left corner spreads
    # to the three other corners (wrong-border results give zeros there)
    img = np.zeros((9, 10), np.float64)
    img[0, 0] = 1.0
    k = np.arange(1.0, 10.0).reshape(3, 3)
    y = fd.filter2d(da.from_array(img, chunks=(3, 4)), k, "circular").compute()
    _same_bits(y, filters.filter2d(img, k, "circular"))
    assert y[-1, -1] == k[2, 2] and y[-1, 0] == k[2, 1] and y[0, -1] == k[1, 2]


def test_chunks_smaller_than_the_halo_warn_and_keep_their_chunks():
    img = np.random.default_rng(1).random((20, 17, 2)).astype(np.float32)
    x = da.from_array(img, chunks=(2, (5, 5, 5, 2), 1))
    k = np.random.default_rng(2).standard_normal((9, 7))
    with pytest.warns(fd.PerformanceWarning, match="halo of 4 rows and 3 columns"):
        y = fd.filter2d(x, k, "reflect")
    assert y.chunks == x.chunks
    _same_bits(y.compute(), filters.filter2d(img, k, "reflect"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # chunks deep enough: no warning
        fd.filter2d(da.from_array(img, chunks=(4, (6, 6, 5), 1)), k, "reflect")


def test_correlate_and_convolve_are_filter2d_modes():
    img = np.random.default_rng(3).random((11, 13)).astype(np.float32)
    x = da.from_array(img, chunks=4)
    k = np.random.default_rng(4).standard_normal((4, 3))
    _same_bits(fd.correlate(x, k, "replicate").compute(),
               filters.filter2d(img, k, "replicate", "correlate"))
    _same_bits(fd.convolve(x, k, "replicate").compute(),
               filters.filter2d(img, k, "replicate", "convolve"))
    _same_bits(fd.convolve(x, ["sobel_x", "sobel_y"]).compute(),
               filters.filter2d(img, ["sobel_x", "sobel_y"], mode="convolve"))


def test_empty_image():
    y = fd.filter2d(da.zeros((0, 5), chunks=2, dtype=np.uint8), "box_blur", output_dtype="float")
    assert y.shape == (0, 5) and y.dtype == np.float32
    y = fd.filter2d(da.zeros((4, 0, 3), chunks=2, dtype=np.uint8), ["box_blur", "sharpen"])
    assert y.shape == (2, 4, 0, 3) and y.chunks[0] == (2,) and y.compute().shape == y.shape


# ---------------------------------------------------------------------------------- memory
def test_no_task_holds_the_whole_image():
    """Every task's result (the chunk reads, halos, filter outputs, the store) is a small part of
    the image: recorded by a scheduler callback over a 256x256 image in 32x32 chunks."""
    from dask.callbacks import Callback

    shape, chunks = (256, 256), (32, 32)
    x = da.fromfunction(lambda i, j: np.sin(0.1 * i + 0.07 * j), shape=shape, chunks=chunks,
                        dtype=np.float32)
    sizes = []
    record = Callback(posttask=lambda key, result, dsk, state, worker: sizes.append(
        getattr(result, "nbytes", 0)))
    whole = np.prod(shape) * 4
    for mode in FILTER_PADDING_MODES:
        target = np.empty(shape, np.float32)
        with record:
            da.store(fd.filter2d(x, "gaussian", mode), target, lock=False, scheduler="sync")
        assert max(sizes) > 0
        assert max(sizes) <= whole / 16, (mode, max(sizes), whole)
        sizes.clear()


def test_a_chunk_reads_only_its_neighbours_edges():
    """A filter task depends on its own input chunk, the edges its neighbours cut for it and the
    plan, nothing else: a distributed scheduler sends only the edges (here 4 rows or columns of
    a 32x32 chunk) between workers, never a neighbour's whole chunk, and there is no overlap stage
    (one edges task and one filter task per chunk)."""
    from dask.callbacks import Callback

    x = da.random.default_rng(3).random((128, 96), chunks=32).astype(np.float32)
    for mode in FILTER_PADDING_MODES:
        y = fd.filter2d(x, filters.gaussian(1.5, size=9), mode)
        graph = dict(y.__dask_graph__())
        inputs = {k for k in graph if isinstance(k, tuple) and k[0] == x.name}
        filt = [k for k in graph if isinstance(k, tuple) and k[0] == y.name]
        edges = [k for k in graph if isinstance(k, tuple) and "filter2d-edges" in k[0]]
        assert len(filt) == len(edges) == len(inputs) == 12
        wrap = mode == "circular"
        for k in filt:
            deps = dask.core.get_dependencies(graph, k)
            assert {d for d in deps if d in inputs} == {(x.name,) + k[1:]}
            neighbours = {d for d in deps if d in edges}
            i, j = k[1:]
            rows = 3 if wrap or 0 < i < 3 else 2
            cols = 3 if wrap or 0 < j < 2 else 2
            assert len(neighbours) == rows * cols - 1, (mode, k, sorted(neighbours))
            assert len(deps) == 1 + len(neighbours) + 1  # and the plan
        sizes = {}
        record = Callback(posttask=lambda key, result, dsk, state, worker: sizes.__setitem__(
            key, sum(a.nbytes for a in result.values()) if isinstance(result, dict) else 0))
        with record:
            y.compute(scheduler="sync")
        edge_sizes = [sizes[k] for k in edges]
        assert max(edge_sizes) <= 4 * (4 * 32 + 4 * 4) * 4  # 4 sides and 4 corners, float32
        assert min(edge_sizes) > 0


# ---------------------------------------------------------------------- batches and models
def _batch(rng, shape=(10, 3, 9, 8), dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("chunks", [(3, 3, 9, 8), (4, 1, 5, 3), (10, 3, 9, 8)])
def test_conv2d_and_pools_are_bitwise_the_single_array_calls(chunks):
    rng = np.random.default_rng(5)
    a = _batch(rng)
    x = da.from_array(a, chunks=chunks)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    dw = rng.standard_normal((6, 1, 3, 2)).astype(np.float32)  # depthwise, 2 per channel
    cases = [
        (fd.conv2d(x, w, b, stride=2, padding=1), fastconv.conv2d(a, w, b, stride=2, padding=1)),
        (fd.conv2d(x, dw, None, groups=3, dilation=(2, 1)),
         fastconv.conv2d(a, dw, None, groups=3, dilation=(2, 1))),
        (fd.max_pool2d(x, 3, 2, 1, ceil_mode=True),
         fastconv.max_pool2d(a, 3, 2, 1, ceil_mode=True)),
        (fd.avg_pool2d(x, 2, count_include_pad=False, padding=1),
         fastconv.avg_pool2d(a, 2, count_include_pad=False, padding=1)),
    ]
    for y, want in cases:
        assert y.chunks[0] == x.chunks[0]
        _same_bits(y.compute(), want)


def test_weights_are_one_key_of_the_graph():
    """The weight enters the graph once, as its own key on which every convolution task depends;
    no other task carries its bytes (each would be sent with every task)."""
    x = da.zeros((8, 32, 6, 6), chunks=(2, 32, 6, 6), dtype=np.float32)
    w = np.random.default_rng(6).standard_normal((64, 32, 3, 3)).astype(np.float32)
    y = fd.conv2d(x, w, np.ones(64, np.float32))
    graph = dict(y.__dask_graph__())
    weight_keys = [k for k in graph if str(k).startswith("fastconv-weight-")]
    assert len(weight_keys) == 1
    conv_keys = [k for k in graph if isinstance(k, tuple) and k[0].startswith("fastconv-conv2d")]
    assert len(conv_keys) == 4
    for k in conv_keys:
        assert weight_keys[0] in dask.core.get_dependencies(graph, k)
    for k, task in graph.items():
        if k not in weight_keys:
            assert len(pickle.dumps(task)) < w.nbytes / 8, k


def _digits(rng, n=23):
    return rng.random((n, 1, 8, 8)).astype(np.float32)


def test_predict_runs_the_model_in_eval_mode_per_batch():
    rng = np.random.default_rng(7)
    model = build_model((8, 8), rng=0)
    model.train()
    a = _digits(rng)
    y = fd.predict(model, da.from_array(a, chunks=(5, 1, 4, 8)), batch_size=2)
    assert model.training  # the user's model is left alone
    model.eval()
    # each row is the forward of its batch: chunks of 5 in forward calls of 2
    want = np.concatenate([model(a[i:i + 5][j:j + 2]) for i in range(0, len(a), 5)
                           for j in range(0, len(a[i:i + 5]), 2)])
    got = y.compute()
    assert y.chunks == ((5, 5, 5, 5, 3), (10,))
    _same_bits(got, want)
    np.testing.assert_allclose(got, model(a), rtol=1e-5, atol=1e-6)
    assert fd.forward(model, da.from_array(a, chunks=5)).compute().tobytes() == \
        np.concatenate([model(a[i:i + 5]) for i in range(0, len(a), 5)]).tobytes()


def test_predict_snapshots_the_model_as_one_key():
    rng = np.random.default_rng(8)
    model = build_model((8, 8), rng=0)
    a = _digits(rng)
    y = fd.predict(model, da.from_array(a, chunks=6))
    graph = dict(y.__dask_graph__())
    assert len([k for k in graph if str(k).startswith("fastconv-model-")]) == 1
    model.eval()
    before = np.concatenate([model(a[i:i + 6]) for i in range(0, len(a), 6)])
    for p in model.parameters():  # training on after the graph was built changes nothing
        p.data += 1
    _same_bits(y.compute(), before)


# ------------------------------------------------------------------------------------ files
def test_zarr_array_filtered_end_to_end(tmp_path):
    zarr = pytest.importorskip("zarr")
    img = np.random.default_rng(9).integers(0, 65536, (70, 90, 3)).astype(np.uint16)
    z = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=img.shape, chunks=(32, 25, 3),
                          dtype=img.dtype)
    z[:] = img
    x = da.from_zarr(str(tmp_path / "in.zarr"))
    fd.filter2d(x, "gaussian", "reflect", output_dtype=np.float32).to_zarr(
        str(tmp_path / "out.zarr"))
    got = np.asarray(zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[:])
    _same_bits(got, filters.filter2d(img, "gaussian", "reflect", output_dtype=np.float32))


def test_tiff_filtered_end_to_end(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("zarr")
    img = np.random.default_rng(10).integers(0, 256, (80, 64)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", img, tile=(32, 32))
    with tifffile.imread(tmp_path / "in.tif", aszarr=True) as store:
        x = da.from_zarr(store)
        assert len(x.chunks[0]) > 1
        got = fd.filter2d(x, "sharpen", "replicate").compute()
    _same_bits(got, filters.filter2d(img, "sharpen", "replicate"))


# ------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_the_argument():
    a = np.zeros((4, 4), np.float32)
    with pytest.raises(TypeError, match="image must be a dask array"):
        fd.filter2d(a, "box_blur")
    with pytest.raises(ValueError, match=r"image must be \(H, W\)"):
        fd.filter2d(da.zeros((2, 3, 4, 5), chunks=2), "box_blur")
    with pytest.raises(TypeError, match="image must be a uint8"):
        fd.filter2d(da.zeros((4, 4), chunks=2, dtype=np.int32), "box_blur")
    with pytest.raises(ValueError, match="padding_mode"):
        fd.filter2d(da.zeros((4, 4), chunks=2), "box_blur", "mirror")
    with pytest.raises(ValueError, match="separable=True"):
        fd.filter2d(da.zeros((4, 4), chunks=2), np.eye(3), separable=True)
    with pytest.raises(ValueError, match="output_dtype"):
        fd.filter2d(da.zeros((4, 4), chunks=2), "box_blur", output_dtype=np.int8)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        x = da.zeros((6, 4), chunks=2)
        fd.filter2d(x[x[:, 0] > 0], "box_blur")
    x4 = np.zeros((2, 3, 5, 5), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(TypeError, match="x must be a dask array"):
        fd.conv2d(x4, w)
    with pytest.raises(ValueError, match=r"x must be a 4-D \(N, C, H, W\)"):
        fd.conv2d(da.zeros((3, 5, 5), chunks=2, dtype=np.float32), w)
    with pytest.raises(ValueError, match="groups|channels"):
        fd.conv2d(da.from_array(x4, chunks=1), w[:, :2])
    with pytest.raises(TypeError, match="x must be a dask array"):
        fd.max_pool2d(x4, 2)
    with pytest.raises(ValueError, match="kernel_size"):
        fd.avg_pool2d(da.from_array(x4, chunks=1), 0)
    model = build_model((8, 8), rng=0)
    with pytest.raises(TypeError, match="model must be a fastconv.nn.Module"):
        fd.predict(lambda v: v, da.zeros((2, 1, 8, 8), chunks=1, dtype=np.float32))
    with pytest.raises(TypeError, match="x must be a dask array"):
        fd.predict(model, np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        fd.predict(model, da.zeros((2, 1, 8, 8), chunks=1, dtype=np.float32), batch_size=0)
    with pytest.raises(ValueError, match="Sequential layer 0"):
        fd.predict(model, da.zeros((2, 3, 8, 8), chunks=1, dtype=np.float32))


# ---------------------------------------------------------------------------------- threads
def _threads_seen(block):
    """``[budget, within, after]``: this thread's kernel threads before, within and after a
    task's limit."""
    budget = fastconv.get_num_threads()
    with fd._task_thread_limit():
        within = fastconv.get_num_threads()
    return np.array([budget, within, fastconv.get_num_threads()])


def _seen(scheduler):
    x = da.zeros(4, chunks=1)
    seen = x.map_blocks(_threads_seen, dtype=int, chunks=(3,)).compute(scheduler=scheduler)
    return seen.reshape(-1, 3)


def test_a_task_shares_the_cores_with_the_tasks_running_beside_it():
    with dask.config.set(num_workers=2):
        for budget, within, after in _seen("threads"):
            assert within == max(1, budget // 2) and after == budget
    for budget, within, after in _seen("sync"):  # one task at a time: the whole budget
        assert within == budget == after


def _child_prints(code):
    """What ``code`` prints in a fresh interpreter with this same fastconv (it must succeed)."""
    out = subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=TESTS_DIR,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_fastconv_does_not_import_dask():
    code = ("import sys, fastconv, fastconv.filters, fastconv.nn, fastconv.functional; "
            "print(any(m == 'dask' or m.startswith('dask.') for m in sys.modules))")
    assert _child_prints(code).strip() == "False"


def test_without_dask_the_import_error_says_what_to_install():
    code = ("import sys; sys.modules['dask'] = None\n"
            "try:\n    import fastconv.dask\nexcept ImportError as e:\n    print(e)")
    assert 'pip install "fastconv[dask]"' in _child_prints(code)


# ------------------------------------------------------------- a real multi-process cluster
@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
@settings(max_examples=6)
@given(filter_calls(max_side=12))
def test_filter2d_on_a_process_cluster_is_bitwise(client, case):
    _check_filter(*case, compute=lambda y: client.compute(y).result())


def test_batches_and_models_on_a_process_cluster(client):
    rng = np.random.default_rng(11)
    a = _batch(rng, (9, 3, 7, 7))
    x = da.from_array(a, chunks=(3, 3, 7, 7))
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    _same_bits(client.compute(fd.conv2d(x, w, padding=1)).result(),
               fastconv.conv2d(a, w, padding=1))
    _same_bits(client.compute(fd.max_pool2d(x, 2)).result(), fastconv.max_pool2d(a, 2))
    model = build_model((8, 8), rng=0)
    digits = _digits(rng, 12)
    got = client.compute(fd.predict(model, da.from_array(digits, chunks=4))).result()
    model.eval()
    _same_bits(got, np.concatenate([model(digits[i:i + 4]) for i in range(0, 12, 4)]))
    # each 1-thread worker (its nanny sets OMP_NUM_THREADS=1) runs its tasks on one thread
    seen = client.compute(da.zeros(4, chunks=1).map_blocks(_threads_seen, dtype=int,
                                                           chunks=(3,))).result()
    assert set(seen.reshape(-1, 3)[:, 1]) == {1}
